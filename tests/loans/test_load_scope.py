"""What a load flags and who sees what it did (issue 17, items 4, 6 and 7): the kind from the
uploaded name, vanished rows judged per source and only for a full export, the review of a
whole filtered set, the batch page's counts, raw files behind a role check, and admin search
for ids with spaces."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from loans.models import Batch, BatchChange, Loan, Upload
from loans.services import tape_import
from tests.loans.tape_files import HEADERS, tape_csv, tape_valid, tape_write
from tests.loans.test_upload_admin import ADD_URL, UploadAdminTestCase


def discard_temp() -> None:
    # Each import commits on its own in production, dropping its staging tables.
    with connection.cursor() as cursor:
        cursor.execute("DISCARD TEMP")


class LoadScopeTestCase(UploadAdminTestCase):
    def load(self, tape, *, source="cascade", full_export=True, folder="tape"):
        result = tape_import(
            path=tape_write(self.work / folder, **tape),
            source=source,
            by=self.uploader,
            full_export=full_export,
        )
        discard_temp()
        return result

    def upload_file(self, user, name: str, content: bytes, *, source="cascade", full=False):
        self.client.force_login(user)
        data = {"kind": "tape", "source": source, "file": SimpleUploadedFile(name, content)}
        if full:
            data["full_export"] = "on"
        with self.captureOnCommitCallbacks(execute=True):  # the check, run in the cluster
            self.client.post(ADD_URL, data)
        return Upload.objects.order_by("-pk").first()


class UploadedNameTests(LoadScopeTestCase):
    def test_the_same_file_name_uploaded_twice_on_one_day_loads_both_times(self):
        tape = tape_valid(4)
        self.load(tape)
        loaded = []
        for principal_due in ("450.00", "400.00"):
            tape["loans"][0]["outstanding_balance"] = principal_due
            csv_bytes = tape_csv(tape["loans"], header=HEADERS["loans"]).encode()
            upload = self.upload_file(self.steward, "loans.csv", csv_bytes)
            preview = self.client.get(reverse("admin:loans_upload_preview", args=[upload.pk]))
            self.assertNotContains(preview, "no tape files found")
            self.assertContains(preview, "Confirm and load")
            self.confirm(upload)
            discard_temp()
            loaded.append(upload)

        first, second = loaded
        self.assertNotEqual(first.file.name, second.file.name)  # storage renamed the second
        self.assertEqual(second.original_name, "loans.csv")
        self.assertEqual((first.status, second.status), (Upload.Status.LOADED,) * 2)
        self.assertEqual(second.batches.get().original_name, "loans.csv")
        self.assertEqual(str(Loan.objects.get(loan_id="L00001").outstanding_balance), "400.00")


class VanishedScopeTests(LoadScopeTestCase):
    def test_a_partial_upload_from_a_second_source_flags_nothing(self):
        self.load(tape_valid(6))
        other = tape_valid(1)
        other["customers"][0]["customer_id"] = "OTHER-C1"
        other["loans"][0].update(loan_id="OTHER-L1", customer_id="OTHER-C1")
        for row in other["schedules"] + other["transactions"]:
            row["loan_id"] = "OTHER-L1"

        result = self.load(other, source="lender-gt", full_export=False, folder="other")

        self.assertEqual(Loan.objects.count(), 7)
        self.assertFalse(BatchChange.objects.filter(change=BatchChange.Change.VANISHED).exists())
        self.assertFalse(BatchChange.objects.filter(review=BatchChange.Review.PENDING).exists())
        self.assertFalse(next(b for b in result.batches if b.kind == "loans").full_export)

    def test_a_full_export_of_a_second_source_leaves_the_first_sources_loans_alone(self):
        self.load(tape_valid(6))
        other = tape_valid(1)
        other["customers"][0]["customer_id"] = "OTHER-C1"
        other["loans"][0].update(loan_id="OTHER-L1", customer_id="OTHER-C1")
        for row in other["schedules"] + other["transactions"]:
            row["loan_id"] = "OTHER-L1"

        self.load(other, source="lender-gt", full_export=True, folder="other")

        self.assertFalse(BatchChange.objects.filter(change=BatchChange.Change.VANISHED).exists())

    def test_a_full_export_of_the_same_source_flags_the_loans_it_no_longer_carries(self):
        tape = tape_valid(6)
        self.load(tape)
        shorter = tape_valid(6)
        dropped = shorter["loans"].pop()["loan_id"]
        shorter["schedules"] = [r for r in shorter["schedules"] if r["loan_id"] != dropped]
        shorter["transactions"] = [r for r in shorter["transactions"] if r["loan_id"] != dropped]

        self.load(shorter, folder="shorter")

        vanished = BatchChange.objects.filter(change=BatchChange.Change.VANISHED, kind="loans")
        self.assertEqual(list(vanished.values_list("key", flat=True)), [dropped])

    def test_a_partial_file_of_the_same_source_flags_nothing(self):
        self.load(tape_valid(6))
        one = tape_valid(6)
        one["loans"] = one["loans"][:1]
        one["transactions"] = [r for r in one["transactions"] if r["loan_id"] == "L00001"][:1]
        del one["schedules"], one["customers"]

        self.load(one, full_export=False, folder="one")

        self.assertFalse(BatchChange.objects.filter(change=BatchChange.Change.VANISHED).exists())


class BulkReviewTests(LoadScopeTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.load(tape_valid(30))
        changed = tape_valid(30)
        for row in changed["loans"]:
            row["disburse_principal"] = str(row["disburse_principal"] + 1)
        for row in changed["schedules"]:
            if row["loan_id"] == "L00001":
                row["principal"] = str(row["principal"])
        self.load(changed, folder="changed")
        self.review_url = reverse("admin:loans_batch_review")

    def test_the_review_page_counts_filters_and_pages_through_every_flagged_row(self):
        self.client.force_login(self.steward)
        with self.settings():
            from loans import admin_diff

            per_page, admin_diff.PER_PAGE = admin_diff.PER_PAGE, 20
            self.addCleanup(setattr, admin_diff, "PER_PAGE", per_page)
            first = self.client.get(self.review_url, {"kind": "loans", "source": "cascade"})
            second = self.client.get(
                self.review_url, {"kind": "loans", "source": "cascade", "page": 2}
            )
            none = self.client.get(self.review_url, {"kind": "customers"})

        self.assertContains(first, "30 row(s) match this filter, 30 waiting for a decision.")
        self.assertContains(first, "Page 1 of 2.")
        self.assertEqual(len(first.context["page"].object_list), 20)
        self.assertEqual(len(second.context["page"].object_list), 10)
        self.assertContains(none, "0 row(s) match this filter")

    def test_a_steward_accepts_a_whole_filtered_set_with_one_reason_and_each_row_is_journaled(
        self,
    ):
        self.client.force_login(self.steward)

        response = self.client.post(
            f"{self.review_url}?kind=loans&source=cascade",
            {"scope": "all", "decision": "accept", "reason": "Lender re-based principal"},
        )

        self.assertEqual(response.status_code, 302)
        flagged = BatchChange.objects.filter(kind="loans").exclude(review="")
        self.assertEqual(flagged.count(), 30)
        self.assertEqual(
            set(flagged.values_list("review", "review_reason", "reviewed_by")),
            {("accepted", "Lender re-based principal", self.steward.pk)},
        )
        self.assertFalse(flagged.filter(reviewed_at__isnull=True).exists())

    def test_an_uploader_cannot_decide_a_filtered_set(self):
        self.client.force_login(self.uploader)

        response = self.client.post(
            self.review_url, {"scope": "all", "decision": "accept", "reason": "fine"}
        )

        self.assertEqual(response.status_code, 403)
        self.assertEqual(BatchChange.objects.filter(review="pending").count(), 30)


class BatchPageTests(LoadScopeTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.load(tape_valid(4))
        bigger = tape_valid(5)
        bigger["loans"][0]["outstanding_balance"] = "100.00"  # was 500.50
        result = self.load(bigger, folder="bigger")
        self.batch = next(b for b in result.batches if b.kind == Batch.Kind.LOANS)

    def test_the_batch_page_shows_rows_in_and_outstanding_added_or_changed(self):
        self.client.force_login(self.steward)

        page = self.client.get(reverse("admin:loans_batch_change", args=[self.batch.pk]))

        self.assertContains(page, "5 read: 1 new, 3 updated, 1 unchanged, 0 rejected")
        self.assertContains(page, "1 new loans: 1,005.00 disbursed, 502.50 outstanding added")
        self.assertContains(page, "1 loans changed their outstanding by -400.50")
        self.assertContains(page, reverse("loans:batch_raw_file", args=[self.batch.pk]))

    def test_the_raw_file_streams_to_who_may_read_it_and_is_refused_to_others(self):
        url = reverse("loans:batch_raw_file", args=[self.batch.pk])
        expected = {"steward": 200, "uploader": 200, "auditor": 200, "admin": 200}
        expected |= {"manager": 403, "outsider": 403}
        for who, status in expected.items():
            with self.subTest(who=who):
                self.client.force_login(getattr(self, who))
                response = self.client.get(url)
                self.assertEqual(response.status_code, status)
                if status == 200:
                    body = b"".join(response.streaming_content)
                    self.assertTrue(body.startswith(b"loan_id,"))
                    self.assertIn('filename="loans.csv"', response["Content-Disposition"])

    def test_an_uploader_cannot_fetch_another_uploaders_raw_file(self):
        self.batch.created_by = self.steward
        self.batch.save(update_fields=["created_by"])
        self.client.force_login(self.uploader)

        response = self.client.get(reverse("loans:batch_raw_file", args=[self.batch.pk]))

        self.assertEqual(response.status_code, 404)

    def test_media_is_not_served_directly(self):
        self.client.force_login(self.admin)

        response = self.client.get(f"/media/{self.batch.file.name}")

        self.assertEqual(response.status_code, 404)


class AdminSearchTests(LoadScopeTestCase):
    def test_admin_search_finds_a_loan_id_that_contains_spaces(self):
        tape = tape_valid(2)
        tape["loans"][0]["loan_id"] = "ABF - DSB0007-001"
        for row in tape["schedules"] + tape["transactions"]:
            if row["loan_id"] == "L00001":
                row["loan_id"] = "ABF - DSB0007-001"
        self.load(tape)
        self.client.force_login(self.steward)

        loans = self.client.get("/admin/loans/loan/", {"q": "ABF - DSB0007-001"})
        cash = self.client.get("/admin/loans/transaction/", {"q": "ABF - DSB0007-001"})

        self.assertEqual(
            [x.loan_id for x in loans.context["cl"].result_list], ["ABF - DSB0007-001"]
        )
        self.assertTrue(cash.context["cl"].result_list)
