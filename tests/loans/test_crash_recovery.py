"""Issue 18, item 6: a load whose process died is marked failed with the reason the next time the
book lock is taken, a cluster worker starts or pipelines_watch runs; its staging tables are
dropped; the upload can be sent again from the admin."""

from __future__ import annotations

import psycopg
from django.db import connection
from django.urls import reverse
from django_q.signals import post_spawn

from integrations.tasks import pipelines_watch_task
from loans.lineage import ALIVE_KEYS, CHECK_QUEUED, DEAD_REASON, STAGING_SCHEMA
from loans.models import Batch, Upload
from loans.services import tape_import
from tests.base import CastTestCase
from tests.factories import batch_create, upload_create
from tests.loans.tape_files import tape_valid, tape_write


def other_process_connection() -> psycopg.Connection:
    """A second session on the test database: the 'other process' holding a live load's lock."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


class CrashRecoveryTests(CastTestCase):
    def debris(self):
        dead = batch_create(status=Batch.Status.RUNNING, original_name="loans.csv")
        upload = upload_create(
            created_by=self.steward,
            status=Upload.Status.RUNNING,
            progress=0.33,
            progress_label="merging loans.csv",
        )
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE UNLOGGED TABLE "{STAGING_SCHEMA}"."_dead0001_loans" (x int)')
        return dead, upload

    def assert_cleaned(self, dead: Batch, upload: Upload) -> None:
        dead.refresh_from_db()
        upload.refresh_from_db()
        self.assertEqual(dead.status, Batch.Status.FAILED)
        self.assertEqual(dead.errors[0]["reason"], DEAD_REASON)
        self.assertEqual(upload.status, Upload.Status.FAILED)
        self.assertIn("stopped (killed or crashed)", upload.progress_label)
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [f"{STAGING_SCHEMA}._dead0001_loans"])
            self.assertIsNone(cursor.fetchone()[0])

    def test_pipelines_watch_cleans_up_after_a_dead_load_but_not_a_live_one(self):
        dead, upload = self.debris()
        alive = batch_create(status=Batch.Status.RUNNING)
        other = other_process_connection()
        self.addCleanup(other.close)
        other.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", [ALIVE_KEYS["batch"], alive.pk])
        pipelines_watch_task()
        self.assert_cleaned(dead, upload)
        alive.refresh_from_db()
        self.assertEqual(alive.status, Batch.Status.RUNNING)  # its process holds the lock
        other.close()  # the process dies (kill -9 closes its connection the same way)
        pipelines_watch_task()
        alive.refresh_from_db()
        self.assertEqual(alive.status, Batch.Status.FAILED)

    def test_a_cluster_worker_starting_cleans_up(self):
        dead, upload = self.debris()
        post_spawn.send(sender="django_q", proc_name="Process-1")
        self.assert_cleaned(dead, upload)

    def test_the_next_import_taking_the_book_lock_cleans_up(self):
        dead, upload = self.debris()
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            tape_import(path=tape_write(Path(tmp) / "tape", **tape_valid(3)), source="cascade")
        self.assert_cleaned(dead, upload)
        self.assertEqual(Batch.objects.filter(status=Batch.Status.LOADED).count(), 4)

    def test_the_failed_upload_can_be_sent_to_load_again_from_the_admin(self):
        _, upload = self.debris()
        pipelines_watch_task()
        self.client.force_login(self.steward)
        page = self.client.get(reverse("admin:loans_upload_change", args=[upload.pk]))
        self.assertContains(page, "Preview and load again")
        with self.captureOnCommitCallbacks() as queued:
            self.client.post(reverse("admin:loans_upload_preview", args=[upload.pk]))
        upload.refresh_from_db()
        self.assertEqual(upload.status, Upload.Status.QUEUED)
        self.assertEqual(len(queued), 1)  # the load task, sent to the cluster on commit

    def test_a_check_whose_process_died_goes_back_to_a_draft_that_is_checked_again(self):
        def checking(label: str) -> Upload:
            return upload_create(
                created_by=self.steward,
                status=Upload.Status.CHECKING,
                progress=0.5 if label != CHECK_QUEUED else 0,
                progress_label=label,
            )

        started, queued = checking("reading loans.csv"), checking(CHECK_QUEUED)
        pipelines_watch_task()
        started.refresh_from_db()
        queued.refresh_from_db()
        self.assertEqual(started.status, Upload.Status.DRAFT)
        self.assertIn("check interrupted", started.progress_label)
        self.assertIsNone(started.preview)
        self.assertEqual(queued.status, Upload.Status.CHECKING)  # not started: the cluster's
        # Its page queues the check again, and the page follows it.
        self.client.force_login(self.steward)
        with self.captureOnCommitCallbacks() as sent:
            page = self.client.get(reverse("admin:loans_upload_preview", args=[started.pk]))
        self.assertContains(page, 'id="checking"')
        started.refresh_from_db()
        self.assertEqual(
            (started.status, started.progress_label), (Upload.Status.CHECKING, CHECK_QUEUED)
        )
        self.assertTrue(sent)  # the check's task, sent to the cluster on commit
