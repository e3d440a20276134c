"""The admin upload flow end to end: upload a ZIP, preview it, confirm, the task cluster loads it
(django-q2's real async_task path, in sync mode), progress, rejected rows; who may do what; and
the tape-diff page where a steward reviews what a newer tape changed."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django_q.models import Task

from abaco.roles import Role
from loans.models import Batch, BatchChange, ColumnMap, Loan, Upload
from loans.services import tape_import
from tests.base import CastTestCase, user_create
from tests.loans.tape_files import Tape, tape_valid, tape_write, tape_zip_bytes

ADD_URL = "/admin/loans/upload/add/"


class UploadAdminTestCase(CastTestCase):
    # Progress is written through the "progress" alias, which mirrors default in tests.
    databases = {"default", "progress"}

    def setUp(self) -> None:
        media = tempfile.mkdtemp(prefix="abaco-media-")
        self.work = Path(tempfile.mkdtemp(prefix="abaco-tapes-"))
        self.addCleanup(shutil.rmtree, media, True)
        self.addCleanup(shutil.rmtree, self.work, True)
        media_root = override_settings(MEDIA_ROOT=media)
        media_root.enable()
        self.addCleanup(media_root.disable)

    def zip_file(self, tape: Tape, name: str = "tape.zip", **kwargs) -> SimpleUploadedFile:
        folder = tape_write(self.work / name.replace(".", "-"), **tape, **kwargs)
        return SimpleUploadedFile(name, tape_zip_bytes(folder), content_type="application/zip")

    def upload(self, user: User, tape: Tape, *, source: str = "cascade", quarantine=False, **kw):
        """Post the add form as ``user``; returns the response and the new upload."""
        self.client.force_login(user)
        data = {"kind": "tape", "source": source, "file": self.zip_file(tape, **kw)}
        if quarantine:
            data["quarantine"] = "on"
        # The check (a dry run) is queued on commit and runs in the cluster (sync in tests).
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(ADD_URL, data)
        return response, Upload.objects.order_by("-pk").first()

    def confirm(self, upload: Upload):
        """Press "Confirm and load": the task is queued on commit and runs in sync mode."""
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("admin:loans_upload_preview", args=[upload.pk]))
        upload.refresh_from_db()
        return response


class UploadFlowTests(UploadAdminTestCase):
    def test_a_steward_uploads_a_zip_and_sees_the_mapping_and_first_rows_ready_to_load(self):
        response, upload = self.upload(self.steward, tape_valid(3))

        preview_url = reverse("admin:loans_upload_preview", args=[upload.pk])
        self.assertRedirects(response, preview_url)
        self.assertEqual(
            (upload.created_by, upload.status, upload.source),
            (self.steward, Upload.Status.DRAFT, "cascade"),
        )
        page = self.client.get(preview_url)
        self.assertContains(page, "No errors: ready to load.")
        self.assertContains(page, "tape.zip:loans.csv: column mapping")
        self.assertContains(
            page, "<tr><td>disburse_principal</td><td>disburse_principal</td></tr>", html=True
        )
        self.assertContains(page, "tape.zip:loans.csv: first rows as parsed")
        self.assertContains(page, "<td>L00003</td>", html=True)
        self.assertContains(page, "<td>1003.00</td>", html=True)
        self.assertContains(page, 'value="Confirm and load"')
        # A preview is a dry run: nothing is loaded and no batch is opened.
        self.assertFalse(Loan.objects.exists())
        self.assertFalse(Batch.objects.exists())

    def test_the_preview_shows_how_a_sources_spanish_headers_map_to_tape_columns(self):
        ColumnMap.objects.create(
            source="lender-sv",
            headers={"id_prestamo": "loan_id", "monto_desembolso": "disburse_principal"},
            file_names={"prestamos": "loans"},
        )
        tape = tape_valid(2)
        header = [
            "id_prestamo",
            "customer_id",
            "disburse_date",
            "monto_desembolso",
            "company",
            "comentario",
        ]
        loans = [
            {
                "id_prestamo": row["loan_id"],
                "monto_desembolso": row["disburse_principal"],
                "comentario": "ok",
                **row,
            }
            for row in tape["loans"]
        ]

        _, upload = self.upload(
            self.steward,
            {"customers": tape["customers"], "loans": loans},
            source="lender-sv",
            headers={"loans": header},
            names={"loans": "prestamos.csv"},
        )

        page = self.client.get(reverse("admin:loans_upload_preview", args=[upload.pk]))
        self.assertContains(page, "tape.zip:prestamos.csv: column mapping")
        self.assertContains(page, "<tr><td>id_prestamo</td><td>loan_id</td></tr>", html=True)
        self.assertContains(
            page, "<tr><td>monto_desembolso</td><td>disburse_principal</td></tr>", html=True
        )
        self.assertContains(page, "<tr><td>comentario</td><td>(ignored)</td></tr>", html=True)
        self.assertContains(page, "No errors: ready to load.")

    def test_the_check_runs_in_the_cluster_and_the_page_follows_it(self):
        self.client.force_login(self.uploader)
        data = {"kind": "tape", "source": "cascade", "file": self.zip_file(tape_valid(3))}
        with self.captureOnCommitCallbacks(execute=False) as queued:
            response = self.client.post(ADD_URL, data)
        upload = Upload.objects.get()
        # The request only stored the file: the dry run waits for the task cluster.
        self.assertEqual((upload.status, upload.preview), (Upload.Status.CHECKING, None))
        waiting = self.client.get(response["Location"])
        self.assertContains(waiting, 'id="checking"')
        self.assertNotContains(waiting, "Confirm and load")
        for callback in queued:
            callback()
        upload.refresh_from_db()
        self.assertEqual(upload.status, Upload.Status.DRAFT)
        loans = next(
            f for f in upload.preview["files"] if f["tape_file"]["name"].endswith("loans.csv")
        )
        self.assertEqual((loans["rows_read"], loans["rejected"]), (3, 0))
        checked = self.client.get(response["Location"])
        self.assertContains(checked, "No errors: ready to load.")
        self.assertContains(checked, 'value="Confirm and load"')

    def test_a_bad_files_preview_lists_its_problems_and_offers_no_confirm_button(self):
        tape = tape_valid(3)
        tape["loans"][1]["currency"] = "XXX"

        _, upload = self.upload(self.steward, tape)

        page = self.client.get(reverse("admin:loans_upload_preview", args=[upload.pk]))
        self.assertContains(page, "1 problem found")
        self.assertContains(page, "nothing will load as it is")
        self.assertContains(
            page,
            '<tr class="error"><td>error</td><td>tape.zip:loans.csv</td><td class="num">3</td>'
            "<td>currency</td><td>XXX</td><td>unknown currency (not an ISO 4217 code)</td></tr>",
            html=True,
        )
        self.assertNotContains(page, "Confirm and load")
        self.assertNotContains(page, "No errors: ready to load.")

    def test_confirming_loads_the_tape_through_the_task_cluster_and_reports_progress(self):
        _, upload = self.upload(self.steward, tape_valid(3))

        response = self.confirm(upload)

        self.assertRedirects(response, reverse("admin:loans_upload_change", args=[upload.pk]))
        self.assertEqual(
            (upload.status, upload.progress, upload.progress_label),
            (Upload.Status.LOADED, 1.0, "done"),
        )
        task = Task.objects.get(name=f"upload-{upload.pk}")
        self.assertEqual(
            (task.func, task.args, task.success, task.result),
            ("loans.tasks.upload_load_task", (upload.pk,), True, "loaded"),
        )
        self.assertEqual(
            sorted(upload.batches.values_list("original_name", "status")),
            [
                ("tape.zip:customers.csv", "loaded"),
                ("tape.zip:loans.csv", "loaded"),
                ("tape.zip:schedules.csv", "loaded"),
                ("tape.zip:transactions.csv", "loaded"),
            ],
        )
        self.assertEqual(set(Batch.objects.values_list("created_by", flat=True)), {self.steward.pk})
        self.assertEqual(
            list(Loan.objects.values_list("loan_id", "disburse_principal")),
            [
                ("L00001", Decimal("1001.00")),
                ("L00002", Decimal("1002.00")),
                ("L00003", Decimal("1003.00")),
            ],
        )
        progress = self.client.get(reverse("admin:loans_upload_progress", args=[upload.pk]))
        self.assertEqual(
            progress.json(),
            {
                "status": "loaded",
                "status_label": "Loaded",
                "progress": 1.0,
                "label": "done",
                "done": True,
            },
        )
        page = self.client.get(reverse("admin:loans_upload_change", args=[upload.pk]))
        self.assertContains(page, "tape.zip:loans.csv")
        self.assertContains(page, "<h2>Summary</h2>", html=True)
        self.assertNotContains(page, "Download rejected rows")

    def test_confirming_twice_does_not_queue_the_load_again(self):
        _, upload = self.upload(self.steward, tape_valid(2))
        self.confirm(upload)

        self.confirm(upload)

        self.assertEqual(Task.objects.filter(name=f"upload-{upload.pk}").count(), 1)
        self.assertEqual(Batch.objects.count(), 4)

    def test_a_rejected_upload_loads_nothing_and_lists_its_reasons(self):
        tape = tape_valid(3)
        tape["loans"][1]["disburse_principal"] = "-5"
        _, upload = self.upload(self.steward, tape)

        self.confirm(upload)

        self.assertEqual((upload.status, upload.progress_label), (Upload.Status.FAILED, "rejected"))
        self.assertEqual(
            upload.problems,
            [
                {
                    "file": "tape.zip:loans.csv",
                    "row": 3,
                    "column": "disburse_principal",
                    "value": "-5",
                    "reason": "must not be negative",
                    "severity": "error",
                }
            ],
        )
        self.assertFalse(Loan.objects.exists())
        self.assertEqual(set(Batch.objects.values_list("status", flat=True)), {"failed"})
        progress = self.client.get(reverse("admin:loans_upload_progress", args=[upload.pk]))
        self.assertEqual(progress.json()["status_label"], "Rejected: nothing loaded")

    def test_a_quarantined_upload_offers_its_rejected_rows_with_formulas_escaped(self):
        tape = tape_valid(3)
        tape["transactions"][5]["loan_id"] = '=HYPERLINK("http://x")'  # L00003's payment

        _, upload = self.upload(self.steward, tape, quarantine=True)
        preview = self.client.get(reverse("admin:loans_upload_preview", args=[upload.pk]))
        self.assertContains(preview, "The rows with problems will be quarantined.")
        self.assertContains(preview, 'value="Confirm and load"')
        self.confirm(upload)

        self.assertEqual(upload.status, Upload.Status.LOADED)
        self.assertEqual(Loan.objects.get(loan_id="L00003").transactions.count(), 1)
        page = self.client.get(reverse("admin:loans_upload_change", args=[upload.pk]))
        rejects_url = reverse("admin:loans_upload_rejects", args=[upload.pk])
        self.assertContains(page, f'href="{rejects_url}"')
        download = self.client.get(rejects_url)
        self.assertEqual(
            download["Content-Disposition"],
            f'attachment; filename="upload-{upload.pk}-rejected-rows.csv"',
        )
        rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
        self.assertEqual(
            rows,
            [
                ["file", "row", "column", "value", "reason"],
                [
                    "tape.zip:transactions.csv",
                    "7",
                    "loan_id",
                    '\'=HYPERLINK("http://x")',
                    "loan is neither in this tape nor in the database",
                ],
            ],
        )

    def test_an_upload_without_rejected_rows_has_no_download(self):
        _, upload = self.upload(self.steward, tape_valid(2))
        self.confirm(upload)

        response = self.client.get(reverse("admin:loans_upload_rejects", args=[upload.pk]))

        self.assertEqual(response.status_code, 404)


class UploadPermissionTests(UploadAdminTestCase):
    def test_uploaders_stewards_and_admins_can_open_the_upload_page(self):
        for user in (self.uploader, self.steward, self.admin):
            with self.subTest(user=user.username):
                self.client.force_login(user)
                self.assertEqual(self.client.get(ADD_URL).status_code, 200)

    def test_people_who_do_not_work_in_the_admin_are_sent_to_its_login(self):
        for user in (self.manager, self.auditor, self.outsider):
            with self.subTest(user=user.username):
                self.client.force_login(user)
                self.assertRedirects(
                    self.client.get(ADD_URL),
                    f"/admin/login/?next={ADD_URL}",
                    fetch_redirect_response=False,
                )

    def test_staff_without_an_upload_role_are_refused(self):
        clerk = User.objects.create_user(username="cleo.clerk", is_staff=True)
        self.client.force_login(clerk)

        self.assertEqual(self.client.get(ADD_URL).status_code, 403)
        self.assertEqual(
            self.client.post(ADD_URL, {"kind": "tape", "source": "cascade"}).status_code, 403
        )
        self.assertFalse(Upload.objects.exists())

    def test_an_uploader_does_not_see_another_uploaders_upload(self):
        _, upload = self.upload(self.uploader, tape_valid(2))
        other = user_create(username="ulla.uploader", role=Role.UPLOADER)
        self.client.force_login(other)

        for name in ("preview", "progress", "rejects"):
            with self.subTest(page=name):
                url = reverse(f"admin:loans_upload_{name}", args=[upload.pk])
                self.assertEqual(self.client.get(url).status_code, 404)
        self.assertNotContains(
            self.client.get(reverse("admin:loans_upload_changelist")),
            reverse("admin:loans_upload_change", args=[upload.pk]),
        )
        self.assertEqual(
            self.client.post(reverse("admin:loans_upload_preview", args=[upload.pk])).status_code,
            404,
        )
        upload.refresh_from_db()
        self.assertEqual(upload.status, Upload.Status.DRAFT)

    def test_a_steward_sees_an_uploaders_upload(self):
        _, upload = self.upload(self.uploader, tape_valid(2))
        self.client.force_login(self.steward)

        response = self.client.get(reverse("admin:loans_upload_progress", args=[upload.pk]))

        self.assertEqual(response.json()["status"], "draft")


class TapeDiffTests(UploadAdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        tape = tape_valid(3)
        tape_import(
            path=tape_write(self.work / "first", **tape), source="cascade", by=self.uploader
        )
        # Each import commits on its own in production, dropping its staging tables.
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")
        tape["loans"][1]["disburse_principal"] = "1500.00"
        tape["loans"][0]["outstanding_balance"] = "10.00"
        result = tape_import(
            path=tape_write(self.work / "second", **tape), source="cascade", by=self.uploader
        )
        self.batch = next(b for b in result.batches if b.kind == Batch.Kind.LOANS)
        self.flagged = BatchChange.objects.get(batch=self.batch, key="L00002")
        self.diff_url = reverse("admin:loans_batch_diff", args=[self.batch.pk])

    def test_the_tape_diff_shows_flagged_changes_and_current_facts_apart(self):
        self.client.force_login(self.steward)

        page = self.client.get(self.diff_url)

        self.assertContains(page, "1 change(s) flagged for review, 1 still waiting")
        self.assertContains(page, "disburse_principal: 1002.00 → 1500.00")
        self.assertContains(
            page, f'<input type="checkbox" name="changes" value="{self.flagged.pk}">'
        )
        self.assertContains(page, "Other updates (current facts")
        self.assertContains(page, "outstanding_balance: 500.50 → 10.00")
        self.assertContains(page, "Record decision for the checked rows")

    def test_a_steward_accepts_a_flagged_change_with_a_reason(self):
        self.client.force_login(self.steward)

        response = self.client.post(
            self.diff_url,
            {"changes": [self.flagged.pk], "decision": "accept", "reason": "Lender restated it"},
        )

        self.assertRedirects(response, self.diff_url)
        self.flagged.refresh_from_db()
        self.assertEqual(
            (self.flagged.review, self.flagged.review_reason, self.flagged.reviewed_by),
            ("accepted", "Lender restated it", self.steward),
        )
        self.assertContains(self.client.get(self.diff_url), "Accepted: Lender restated it")

    def test_a_decision_without_a_reason_is_not_recorded(self):
        self.client.force_login(self.steward)

        response = self.client.post(
            self.diff_url, {"changes": [self.flagged.pk], "decision": "reject", "reason": ""}
        )

        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "This field is required.")
        self.flagged.refresh_from_db()
        self.assertEqual(self.flagged.review, BatchChange.Review.PENDING)

    def test_an_uploader_can_read_the_tape_diff_but_not_record_a_decision(self):
        self.client.force_login(self.uploader)

        page = self.client.get(self.diff_url)
        refused = self.client.post(
            self.diff_url,
            {"changes": [self.flagged.pk], "decision": "accept", "reason": "looks fine"},
        )

        self.assertContains(page, "disburse_principal: 1002.00 → 1500.00")
        self.assertNotContains(page, "Record decision for the checked rows")
        self.assertEqual(refused.status_code, 403)
        self.flagged.refresh_from_db()
        self.assertEqual(self.flagged.review, BatchChange.Review.PENDING)

    def test_a_manager_cannot_open_the_tape_diff(self):
        self.client.force_login(self.manager)

        response = self.client.get(self.diff_url)

        self.assertRedirects(
            response, f"/admin/login/?next={self.diff_url}", fetch_redirect_response=False
        )
