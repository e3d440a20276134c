"""Uploads over the API follow the admin's rules: a dry run first, all or nothing unless
quarantined, the load queued to the task cluster (django-q2's real path, in sync mode), status
and rejected rows by URL, and the same Idempotency-Key answering with the first upload."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from datetime import date
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from loans.models import Batch, Loan, Upload
from tests.api.base import ApiTestCase
from tests.loans.tape_files import Tape, tape_valid, tape_write, tape_zip_bytes

UPLOADS = "/api/v1/uploads/"


class UploadApiTests(ApiTestCase):
    databases = {"default", "progress"}

    def setUp(self) -> None:
        media = tempfile.mkdtemp(prefix="abaco-media-")
        self.work = Path(tempfile.mkdtemp(prefix="abaco-tapes-"))
        self.addCleanup(shutil.rmtree, media, True)
        self.addCleanup(shutil.rmtree, self.work, True)
        media_root = override_settings(MEDIA_ROOT=media)
        media_root.enable()
        self.addCleanup(media_root.disable)
        self.auth = self.bearer(self.token(self.steward, ["write:uploads", "read:book"]))

    def zip_file(self, tape: Tape, name: str = "tape.zip") -> SimpleUploadedFile:
        folder = tape_write(self.work / name.replace(".", "-"), **tape)
        return SimpleUploadedFile(name, tape_zip_bytes(folder), content_type="application/zip")

    def post(self, tape: Tape, *, headers=None, **fields):
        data = {"file": self.zip_file(tape), **fields}
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(UPLOADS, data, headers={**self.auth, **(headers or {})})

    def test_a_valid_tape_answers_202_with_its_url_and_loads(self):
        response = self.post(tape_valid(4))
        self.assertEqual(response.status_code, 202, response.content[:500])
        body = response.json()
        upload = Upload.objects.get()
        self.assertEqual(response["Location"], f"/api/v1/uploads/{upload.pk}/")
        self.assertEqual(body["upload"]["url"], response["Location"])
        self.assertEqual(
            [(f["file"].split(":")[-1], f["rows_read"]) for f in body["preview"]["files"]],
            [("customers.csv", 2), ("loans.csv", 4), ("schedules.csv", 8), ("transactions.csv", 8)],
        )
        # The task ran on commit (sync cluster): the upload is loaded, the loans are in.
        status = self.client.get(response["Location"], headers=self.auth).json()
        self.assertEqual((status["status"], status["progress"]), ("loaded", 1.0))
        self.assertEqual(Loan.objects.count(), 4)
        self.assertEqual(upload.created_by, self.steward)

    def test_full_export_and_data_through_reach_the_loaded_batches_as_from_the_admin(self):
        response = self.post(tape_valid(2), full_export="true", data_through="2025-03-31")
        self.assertEqual(response.status_code, 202, response.content[:500])
        upload = Upload.objects.get()
        self.assertEqual(
            (upload.full_export, upload.data_through, upload.original_name),
            (True, date(2025, 3, 31), "tape.zip"),
        )
        status = self.client.get(response["Location"], headers=self.auth).json()
        self.assertEqual(
            (status["status"], status["full_export"], status["data_through"]),
            ("loaded", True, "2025-03-31"),
        )
        loans = upload.batches.get(kind=Batch.Kind.LOANS)
        self.assertEqual((loans.full_export, loans.data_through), (True, date(2025, 3, 31)))

    def test_without_them_a_partial_file_dates_itself_from_its_rows(self):
        response = self.post(tape_valid(2), data_through="")
        self.assertEqual(response.status_code, 202, response.content[:500])
        upload = Upload.objects.get()
        self.assertEqual((upload.full_export, upload.data_through), (False, None))
        self.assertFalse(upload.batches.get(kind=Batch.Kind.LOANS).full_export)

    def test_a_data_through_that_is_not_a_date_is_refused(self):
        response = self.post(tape_valid(2), data_through="March")
        self.assertEqual(response.status_code, 400)
        self.assertIn("data_through", self.problem(response)["errors"])
        self.assertFalse(Upload.objects.exists())

    def test_a_misspelt_option_is_refused_and_nothing_is_stored(self):
        response = self.post(tape_valid(2), quarantaine="true")
        self.assertEqual(response.status_code, 400)
        self.assertIn("quarantaine", response.json()["errors"])
        self.assertFalse(Upload.objects.exists())

    def test_the_same_idempotency_key_answers_with_the_first_upload(self):
        first = self.post(tape_valid(2), headers={"Idempotency-Key": "abc-1"})
        again = self.post(tape_valid(2), headers={"Idempotency-Key": "abc-1"})
        self.assertEqual((first.status_code, again.status_code), (202, 202))
        self.assertEqual(again.json()["upload"]["id"], first.json()["upload"]["id"])
        self.assertEqual(again["Idempotent-Replayed"], "true")
        self.assertEqual(Upload.objects.count(), 1)

    def test_a_tape_with_an_error_loads_nothing_and_answers_422_naming_row_and_column(self):
        tape = tape_valid(3)
        tape["loans"][1]["currency"] = "XXX"
        response = self.post(tape)
        self.assertEqual(response.status_code, 422)
        body = self.problem(response)
        self.assertIn("fix the file or choose quarantine", body["detail"])
        self.assertTrue(
            any("loans.csv, row 3, column currency" in e for e in body["errors"]["file"])
        )
        self.assertEqual(Upload.objects.get().status, Upload.Status.DRAFT)
        self.assertFalse(Loan.objects.exists())

    def test_quarantine_loads_the_valid_rows_and_serves_the_rejects_as_csv(self):
        tape = tape_valid(3)
        tape["loans"][1]["currency"] = "XXX"
        response = self.post(tape, quarantine="true")
        self.assertEqual(response.status_code, 202)
        status = self.client.get(response["Location"], headers=self.auth).json()
        self.assertEqual(status["status"], "loaded")
        self.assertEqual(Loan.objects.count(), 2)
        rejects = self.client.get(status["rejects_url"], headers=self.auth)
        rows = list(csv.DictReader(io.StringIO(b"".join(rejects.streaming_content).decode())))
        self.assertEqual(
            [(r["file"].split(":")[-1], r["row"], r["column"]) for r in rows][:1],
            [("loans.csv", "3", "currency")],
        )

    def test_a_dry_run_keeps_a_draft_that_its_load_url_sends_to_load(self):
        response = self.post(tape_valid(2), dry_run="true")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["upload"]["status"], "draft")
        self.assertFalse(Loan.objects.exists())
        load_url = response["Location"] + "load/"
        with self.captureOnCommitCallbacks(execute=True):
            loaded = self.client.post(load_url, headers=self.auth)
        self.assertEqual(loaded.status_code, 202)
        self.assertEqual(Loan.objects.count(), 2)
        again = self.client.post(load_url, headers=self.auth)
        self.assertEqual(again.status_code, 409)
        self.problem(again)

    @override_settings(API_UPLOAD_MAX_BYTES=100)
    def test_a_file_over_the_size_limit_answers_413(self):
        response = self.post(tape_valid(2))
        self.assertEqual(response.status_code, 413)
        self.assertIn("this endpoint takes 100", self.problem(response)["detail"])
        self.assertFalse(Upload.objects.exists())

    def test_an_uploader_sees_only_their_own_uploads(self):
        self.post(tape_valid(2))
        mine = self.api_get(UPLOADS, user=self.uploader).json()["results"]
        self.assertEqual(mine, [])
        everyone = self.api_get(UPLOADS, user=self.steward).json()["results"]
        self.assertEqual(len(everyone), 1)
