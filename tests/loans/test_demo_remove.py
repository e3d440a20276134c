"""Demo data kept apart (issue 17, item 3): the demo tape is its own source and entities, and
``demo_data --remove`` (or the admin action) takes out exactly its rows, batches and raw files,
recomputes the snapshots it touched, and leaves every real row as it was."""

from __future__ import annotations

import io
import shutil
import tempfile
from datetime import date
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.forms.models import model_to_dict
from django.test import override_settings

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from loans.demo import DEMO_PREFIX
from loans.models import Batch, BatchChange, Customer, Installment, Loan, Transaction
from loans.services import tape_import
from tests.base import CastTestCase
from tests.loans.tape_files import tape_valid, tape_write

SNAPSHOT = date(2025, 11, 30)


def book_rows(**where) -> dict[str, list[dict]]:
    """Every column of every row of the four book tables, in key order (what "unchanged" means)."""
    return {
        "customers": [model_to_dict(c) | {"updated_at": c.updated_at} for c in Customer.objects.filter(**where).order_by("customer_id")],
        "loans": [model_to_dict(x) | {"updated_at": x.updated_at} for x in Loan.objects.filter(**where).order_by("loan_id")],
        "installments": list(Installment.objects.filter(**{f"loan__{k}": v for k, v in where.items()}).order_by("pk").values()),
        "transactions": list(Transaction.objects.filter(**{f"loan__{k}": v for k, v in where.items()}).order_by("pk").values()),
    }  # fmt: skip


class DemoRemovalTestCase(CastTestCase):
    def setUp(self) -> None:
        media = tempfile.mkdtemp(prefix="abaco-media-")
        self.work = Path(tempfile.mkdtemp(prefix="abaco-tapes-"))
        self.addCleanup(shutil.rmtree, media, True)
        self.addCleanup(shutil.rmtree, self.work, True)
        media_root = override_settings(MEDIA_ROOT=media)
        media_root.enable()
        self.addCleanup(media_root.disable)
        call_command("demo_data", "--loans", "120", "--customers", "20", stdout=io.StringIO())
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")  # each import commits on its own in production
        # The real tape: a full export of its own source, loaded after the demo.
        tape_import(path=tape_write(self.work / "real", **tape_valid(6)), source="cascade")
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")
        snapshot_compute(as_of=SNAPSHOT, job="test")


class DemoKeptApartTests(DemoRemovalTestCase):
    def test_demo_rows_are_their_own_source_and_entities_and_a_real_upload_flags_none(self):
        demo = Loan.objects.filter(loan_id__startswith=DEMO_PREFIX)
        self.assertEqual(demo.count(), 120)
        self.assertEqual(set(demo.values_list("company", flat=True)), {"DEMO-ABF", "DEMO-ABT"})
        self.assertEqual(set(demo.values_list("batch__source", flat=True)), {"demo"})
        self.assertTrue(Customer.objects.filter(customer_id__startswith="DEMO-CLI").exists())
        # The full Cascade export says nothing about the demo source's loans.
        self.assertFalse(BatchChange.objects.filter(change=BatchChange.Change.VANISHED).exists())

    def test_the_dashboards_say_plainly_that_demo_data_is_mixed_in_and_how_to_remove_it(self):
        self.client.force_login(self.manager)

        page = self.client.get("/dashboard/")

        self.assertContains(page, "Demo data is mixed in with real data.")
        self.assertContains(page, "manage.py demo_data --remove")


class DemoRemoveCommandTests(DemoRemovalTestCase):
    databases = {"default", "progress"}  # the kpi_restate run reports its progress there

    def test_a_dry_run_counts_what_would_go_and_changes_nothing(self):
        before = book_rows()
        out = io.StringIO()

        call_command("demo_data", "--remove", "--dry-run", stdout=out)

        self.assertIn("Would remove 120 loans, 20 customers", out.getvalue())
        self.assertEqual(book_rows(), before)
        self.assertTrue(Batch.objects.filter(source="demo").exists())

    def test_it_removes_every_demo_row_batch_and_raw_file_and_leaves_real_rows_as_they_were(self):
        real_before = book_rows(batch__source="cascade")
        demo_files = list(Batch.objects.filter(source="demo").values_list("file", flat=True))
        self.assertTrue(demo_files and all(default_storage.exists(f) for f in demo_files))
        real_files = list(Batch.objects.filter(source="cascade").values_list("file", flat=True))
        reported = SnapshotRun.objects.get(as_of=SNAPSHOT)
        out = io.StringIO()

        with self.captureOnCommitCallbacks(execute=True):
            call_command("demo_data", "--remove", stdout=out)

        self.assertFalse(Loan.objects.filter(loan_id__startswith=DEMO_PREFIX).exists())
        self.assertFalse(Customer.objects.filter(customer_id__startswith=DEMO_PREFIX).exists())
        self.assertFalse(Installment.objects.filter(loan__loan_id__startswith=DEMO_PREFIX).exists())
        self.assertEqual(Transaction.objects.exclude(loan__in=Loan.objects.all()).count(), 0)
        self.assertFalse(Batch.objects.filter(source="demo").exists())
        self.assertFalse(any(default_storage.exists(f) for f in demo_files))
        self.assertTrue(all(default_storage.exists(f) for f in real_files))
        self.assertEqual(book_rows(), real_before)
        self.assertEqual(Loan.objects.count(), 6)
        # The snapshot it touched is recomputed without the demo loans: restated, the
        # as-reported run kept beside it.
        restated = SnapshotRun.objects.get(as_of=SNAPSHOT, basis=SnapshotRun.Basis.RESTATED)
        self.assertTrue(SnapshotRun.objects.filter(pk=reported.pk).exists())
        self.assertEqual(
            restated.loan_states.count(), restated.loan_states.filter(company="Abaco SV").count()
        )
        self.assertTrue(restated.loan_states.exists())
        self.assertFalse(restated.loan_states.filter(company__startswith=DEMO_PREFIX).exists())
        self.assertIn("Removed 120 loans", out.getvalue())
        self.assertIn("recomputation done", out.getvalue())

    def test_a_second_removal_finds_nothing(self):
        call_command("demo_data", "--remove", stdout=io.StringIO())
        out = io.StringIO()

        call_command("demo_data", "--remove", stdout=out)

        self.assertIn("No demo data in this book", out.getvalue())
        self.assertEqual(Loan.objects.count(), 6)


class DemoCustomerWithRealLoansTests(DemoRemovalTestCase):
    def test_a_demo_customer_who_took_a_real_loan_is_kept_with_it(self):
        real = tape_valid(1)
        del real["customers"]
        real["loans"][0].update(loan_id="REAL-1", customer_id="DEMO-CLI000001")
        for row in real["schedules"] + real["transactions"]:
            row["loan_id"] = "REAL-1"
        tape_import(path=tape_write(self.work / "one", **real), source="cascade", full_export=False)
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")
        out = io.StringIO()

        call_command("demo_data", "--remove", stdout=out)

        kept = Customer.objects.get(customer_id="DEMO-CLI000001")
        self.assertEqual(list(kept.loans.values_list("loan_id", flat=True)), ["REAL-1"])
        self.assertEqual(Customer.objects.filter(customer_id__startswith=DEMO_PREFIX).count(), 1)
        self.assertIn("1 customers first written by the demo tape hold real loans", out.getvalue())


class DemoRemoveAdminActionTests(DemoRemovalTestCase):
    def post_action(self, user, **extra):
        self.client.force_login(user)
        batch = Batch.objects.filter(source="demo").first()
        data = {"action": "remove_demo_data", "_selected_action": [batch.pk], **extra}
        return self.client.post("/admin/loans/batch/", data)

    def test_an_admin_confirms_then_removes_the_demo_data(self):
        confirm = self.post_action(self.admin)
        self.assertContains(confirm, "120 loans, 20 customers")
        self.assertTrue(Loan.objects.filter(loan_id__startswith=DEMO_PREFIX).exists())

        with self.captureOnCommitCallbacks(execute=True):
            done = self.post_action(self.admin, confirm="yes")

        self.assertEqual(done.status_code, 302)
        self.assertFalse(Loan.objects.filter(loan_id__startswith=DEMO_PREFIX).exists())
        self.assertEqual(Loan.objects.count(), 6)

    def test_the_action_needs_no_row_checked(self):
        # It acts on the book: chosen with nothing checked, it still asks, then removes.
        self.client.force_login(self.admin)
        confirm = self.client.post("/admin/loans/batch/", {"action": "remove_demo_data"})
        self.assertContains(confirm, "120 loans, 20 customers")
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(
                "/admin/loans/batch/", {"action": "remove_demo_data", "confirm": "yes"}
            )
        self.assertFalse(Loan.objects.filter(loan_id__startswith=DEMO_PREFIX).exists())

    def test_a_steward_is_not_offered_the_action(self):
        response = self.post_action(self.steward, confirm="yes")

        self.assertNotContains(response, "Remove all demo data", status_code=response.status_code)
        self.assertEqual(Loan.objects.filter(loan_id__startswith=DEMO_PREFIX).count(), 120)
