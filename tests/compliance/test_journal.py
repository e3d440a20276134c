"""The auditors' side: the access log, the tamper-evident journal, attribution, classification,
retention and legal hold."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

from django.contrib.auth.models import User
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.db.utils import ProgrammingError
from django.urls import reverse

from compliance import fields
from compliance.access import security_event_record
from compliance.models import FieldClassification, JournalEntry, LegalHold
from compliance.retention import ChainBroken, legal_hold_place, retention_run
from loans.models import Customer
from loans.services import batch_changes_review
from tests.base import CastTestCase
from tests.factories import batch_create, customer_create, loan_create
from tests.kpis.books import dashboard_book


class JournalTestCase(CastTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Entries committed before this test (a flush between transactional tests re-creates the
        # role groups, and their creation is journaled) are set aside for this test's transaction.
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE compliance_journalentry DISABLE TRIGGER ALL")
            cursor.execute("DELETE FROM compliance_journalentry")
            cursor.execute("ALTER TABLE compliance_journalentry ENABLE TRIGGER ALL")


def jsonl(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in text.splitlines()]


class AccessLogTests(JournalTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.book = dashboard_book()
        cls.book.compute()

    def test_a_dashboard_opened_without_a_date_logs_the_snapshot_it_showed(self):
        self.client.force_login(self.manager)
        with self.captureOnCommitCallbacks(execute=True):
            page = self.client.get(reverse("kpis:overview"))
            self.client.get(reverse("kpis:risk"), {"as_of": "not a date"})
        shown = page.context["s"]
        entries = JournalEntry.objects.filter(kind="access", actor=self.manager.username)
        self.assertEqual(
            [(e.action, json.loads(e.body)["extra"]) for e in entries.order_by("id")],
            [("view dashboard", {"as_of": shown.as_of.isoformat(), "basis": "restated"})] * 2,
        )

    def test_a_page_revalidated_with_a_304_is_a_read_too(self):
        self.client.force_login(self.manager)
        with self.captureOnCommitCallbacks(execute=True):
            etag = self.client.get(reverse("kpis:overview"))["ETag"]
            again = self.client.get(reverse("kpis:overview"), headers={"if-none-match": etag})
        self.assertEqual(again.status_code, 304)
        self.assertEqual(
            JournalEntry.objects.filter(kind="access", actor=self.manager.username).count(), 2
        )

    def test_an_uploads_preview_and_rejected_rows_are_reads_of_the_book(self):
        from django.core.files.base import ContentFile

        from loans.models import Upload
        from tests.factories import upload_create

        upload = upload_create(
            created_by=self.steward, status=Upload.Status.FAILED, preview={"files": []}
        )
        upload.rejects.save("rejects.csv", ContentFile(b"file,row\nloans.csv,2\n"))
        self.client.force_login(self.steward)
        with self.captureOnCommitCallbacks(execute=True):
            for name in ("admin:loans_upload_preview", "admin:loans_upload_rejects"):
                response = self.client.get(reverse(name, args=[upload.pk]))
                self.assertEqual(response.status_code, 200, name)
                if response.streaming:
                    b"".join(response.streaming_content)
        self.assertEqual(
            list(
                JournalEntry.objects.filter(kind="access", actor=self.steward.username)
                .order_by("id")
                .values_list("action", "object")
            ),
            [
                ("view upload preview", f"loans.upload:{upload.pk}"),
                ("download rejected rows", f"loans.upload:{upload.pk}"),
            ],
        )

    def test_a_managers_loan_view_and_csv_export_are_in_the_auditors_export(self):
        loan = self.book.loans["L1"] if hasattr(self.book, "loans") else None
        from loans.models import Loan

        loan = loan or Loan.objects.order_by("pk").first()
        self.client.force_login(self.manager)
        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(self.client.get(reverse("kpis:loan", args=[loan.pk])).status_code, 200)
            response = self.client.get(reverse("kpis:loans"), {"format": "csv"})
            exported = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

        self.client.force_login(self.auditor)
        with self.captureOnCommitCallbacks(execute=True):
            entries = jsonl(self.client.get("/audit/export", {"kind": "access", "format": "jsonl"}))
        mine = [e for e in entries if e["user"] == self.manager.username]
        self.assertEqual(
            [(e["action"], e["object"], e["rows"]) for e in mine],
            [("view", f"loans.loan:{loan.pk}", None), ("export", "", len(exported) - 1)],
        )
        export = mine[1]
        self.assertEqual(export["filters"], {"format": "csv"})
        self.assertEqual(export["extra"]["format"], "csv")
        self.assertEqual(export["extra"]["columns"], exported[0])
        self.assertEqual(export["roles"], ["Manager"])
        self.assertEqual(export["path"], reverse("kpis:loans"))
        self.assertTrue(export["request_id"])
        self.assertEqual(export["zone"], "Europe/Madrid")
        self.assertTrue(export["at"].endswith(("+01:00", "+02:00")))


class SignInTests(JournalTestCase):
    def test_a_failed_sign_in_is_logged_with_the_name_tried_and_no_password(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(
                reverse("login"),
                {"username": self.manager.username, "password": "wrong-password-123"},
                REMOTE_ADDR="203.0.113.9",
            )
        entry = JournalEntry.objects.get(kind=JournalEntry.Kind.SIGN_IN)
        self.assertEqual((entry.action, entry.actor), ("sign in failed", self.manager.username))
        self.assertEqual(json.loads(entry.body)["ip"], "203.0.113.9")
        self.assertNotIn("wrong-password-123", entry.body)

    def test_sign_in_and_sign_out_are_logged(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(
                reverse("login"), {"username": self.auditor.username, "password": self.password}
            )
            self.client.post(reverse("logout"))
        self.assertEqual(
            list(JournalEntry.objects.order_by("id").values_list("action", "actor_id")),
            [("sign in", self.auditor.pk), ("sign out", self.auditor.pk)],
        )

    def test_a_lockout_reported_by_the_security_layer_is_logged(self):
        with self.captureOnCommitCallbacks(execute=True):
            security_event_record(action="lockout", username="mallory", extra={"failures": 5})
        entry = JournalEntry.objects.get()
        self.assertEqual((entry.kind, entry.action, entry.actor), ("sign_in", "lockout", "mallory"))

    def test_behind_one_trusted_proxy_the_client_is_the_address_it_saw(self):
        # The proxy is 127.0.0.1 (TRUSTED_PROXIES' default); 1.2.3.4 was written by the client.
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(
                reverse("login"),
                {"username": "nobody", "password": "x"},
                REMOTE_ADDR="127.0.0.1",
                HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7",
            )
        self.assertEqual(json.loads(JournalEntry.objects.get().body)["ip"], "198.51.100.7")


class AuditorReadsTests(JournalTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.loan = loan_create(loan_status="Current")
        cls.batch = batch_create(created_by=cls.steward, original_name="loans.csv")

    def test_an_auditor_opens_the_loan_page_and_the_read_is_logged(self):
        self.client.force_login(self.auditor)
        with self.captureOnCommitCallbacks(execute=True):
            page = self.client.get(reverse("kpis:loan", args=[self.loan.pk]))
        self.assertEqual(page.status_code, 200)
        entry = JournalEntry.objects.get(kind="access")
        self.assertEqual(
            (entry.actor, entry.object), (self.auditor.username, f"loans.loan:{self.loan.pk}")
        )

    def test_an_auditor_cannot_edit_a_loan(self):
        self.client.force_login(self.auditor)
        url = reverse("admin:loans_loan_change", args=[self.loan.pk])
        response = self.client.post(url, {"loan_status": "Restructured"})
        self.assertNotEqual(response.status_code, 200)
        self.assertEqual(type(self.loan).objects.get(pk=self.loan.pk).loan_status, "Current")

    def test_an_auditor_opens_a_batch_page_read_only_and_the_read_is_logged(self):
        self.client.force_login(self.auditor)
        with self.captureOnCommitCallbacks(execute=True):
            page = self.client.get(reverse("compliance:batch", args=[self.batch.pk]))
        self.assertContains(page, self.batch.sha256)
        self.assertContains(page, self.steward.username)
        self.assertEqual(page.content.decode().count("<form"), 1)  # only the sign-out button
        self.assertEqual(
            JournalEntry.objects.get(kind="access").object, f"loans.batch:{self.batch.pk}"
        )
        self.assertEqual(
            self.client.post(reverse("compliance:batch", args=[self.batch.pk])).status_code, 405
        )

    def test_a_manager_gets_no_workbench(self):
        self.client.force_login(self.manager)
        self.assertEqual(self.client.get(reverse("compliance:journal")).status_code, 403)
        self.assertEqual(
            self.client.get(reverse("compliance:batch", args=[self.batch.pk])).status_code, 403
        )


class JournalChainTests(JournalTestCase):
    def fill(self, n: int = 3) -> list[JournalEntry]:
        with self.captureOnCommitCallbacks(execute=True):
            for i in range(n):
                security_event_record(action="sign in failed", username=f"user{i}")
        return list(JournalEntry.objects.order_by("id"))

    def test_the_chain_holds_and_the_command_says_so(self):
        entries = self.fill()
        self.assertEqual(entries[1].prev_hash, entries[0].hash)
        out = io.StringIO()
        call_command("verify_audit_chain", stdout=out)
        self.assertIn("chain holds: 3 entries", out.getvalue())

    def test_the_database_refuses_update_delete_and_truncate(self):
        self.fill(1)
        for sql in (
            "UPDATE compliance_journalentry SET actor = 'x'",
            "DELETE FROM compliance_journalentry",
            # (the suite's own connections may truncate it for their flush; not this one)
            "SET LOCAL abaco.journal_flush = 'off'; TRUNCATE compliance_journalentry",
        ):
            with (
                self.subTest(sql=sql),
                self.assertRaisesMessage(ProgrammingError, "pgtrigger: Cannot"),
                transaction.atomic(),
            ):
                connection.cursor().execute(sql)
        self.assertEqual(JournalEntry.objects.count(), 1)

    def test_a_row_edited_with_the_trigger_disabled_fails_verification_naming_it(self):
        entries = self.fill()
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE compliance_journalentry DISABLE TRIGGER ALL")
            cursor.execute(
                "UPDATE compliance_journalentry SET body = replace(body, 'user1', 'user9'), "
                "actor = 'user9' WHERE id = %s",
                [entries[1].pk],
            )
            cursor.execute("ALTER TABLE compliance_journalentry ENABLE TRIGGER ALL")
        with self.assertRaisesMessage(CommandError, f"journal entry {entries[1].pk}:"):
            call_command("verify_audit_chain", stdout=io.StringIO())

    def test_a_rewritten_chain_is_caught_against_the_exported_day_hash(self):
        import tempfile
        from pathlib import Path

        from compliance.journal import canonical, chain_hash
        from compliance.retention import journal_day_export

        entries = self.fill(2)
        folder = Path(tempfile.mkdtemp())
        journal_day_export(day=date.today(), folder=folder)
        # A superuser rewrites the last entry and recomputes its hash: the chain alone holds ...
        body = json.loads(entries[1].body) | {"actor": "someone-else"}
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE compliance_journalentry DISABLE TRIGGER ALL")
            cursor.execute(
                "UPDATE compliance_journalentry SET body = %s, actor = %s, hash = %s WHERE id = %s",
                [
                    canonical(body),
                    "someone-else",
                    chain_hash(entries[0].hash, canonical(body)),
                    entries[1].pk,
                ],
            )
            cursor.execute("ALTER TABLE compliance_journalentry ENABLE TRIGGER ALL")
        call_command("verify_audit_chain", stdout=io.StringIO())
        # ... but not against what was exported.
        with self.assertRaisesMessage(CommandError, "the chain was rewritten"):
            call_command("verify_audit_chain", "--exports", str(folder), stdout=io.StringIO())

    def test_the_journal_exports_as_jsonl_with_its_hashes(self):
        entries = self.fill(2)
        out = io.StringIO()
        call_command("audit_export", "--kind", "journal", "--format", "jsonl", stdout=out)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual([r["hash"] for r in records], [e.hash for e in entries])
        for key in ("at", "user", "action", "object", "path", "filters", "rows"):
            self.assertIn(key, records[0])


class AttributionTests(JournalTestCase):
    def test_a_user_in_the_history_cannot_be_deleted_and_is_deactivated_instead(self):
        customer = customer_create()
        self.client.force_login(self.steward)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.get(reverse("admin:loans_customer_change", args=[customer.pk]))
        try:
            with transaction.atomic():
                self.steward.delete()
        except ProtectedError as refused:
            self.assertIn("deactivate the user", str(refused))
        else:
            self.fail("the steward was deleted")
        self.client.force_login(self.admin)
        response = self.client.post(
            reverse("admin:auth_user_changelist"),
            {"action": "deactivate", "_selected_action": [self.steward.pk]},
        )
        self.assertEqual(response.status_code, 302)
        self.assertFalse(User.objects.get(pk=self.steward.pk).is_active)
        self.assertEqual(
            self.client.post(reverse("admin:auth_user_delete", args=[self.steward.pk])).status_code,
            403,
        )

    def test_a_renamed_user_keeps_the_old_name_on_old_entries(self):
        self.client.force_login(self.manager)
        loan = loan_create()
        with self.captureOnCommitCallbacks(execute=True):
            self.client.get(reverse("kpis:loan", args=[loan.pk]))
        self.manager.username = "mia.renamed"
        self.manager.save()
        entry = JournalEntry.objects.get(kind="access")
        self.assertEqual((entry.actor, entry.actor_id), ("mia.manager", self.manager.pk))

    def test_a_tape_diff_review_is_journaled_with_who_and_why(self):
        from loans.models import BatchChange

        batch = batch_create()
        BatchChange.objects.create(batch=batch, kind="loans", key="L1", review="pending", fields={})
        with self.captureOnCommitCallbacks(execute=True):
            batch_changes_review(
                changes=batch.changes.all(), accept=False, reason="disputed", by=self.steward
            )
        entry = JournalEntry.objects.get(kind="review")
        self.assertEqual(
            (entry.action, entry.actor, entry.object, entry.rows),
            ("reject", self.steward.username, f"loans.batch:{batch.pk}", 1),
        )


class ClassificationTests(JournalTestCase):
    def test_every_field_is_seeded_and_a_new_field_without_classification_fails_the_check(self):
        self.assertTrue(
            FieldClassification.objects.filter(
                model="loans.Customer", field="email", masking="mask"
            ).exists()
        )
        self.assertEqual([m.id for m in checks.run_checks() if m.id == "compliance.E001"], [])
        removed = fields.DEFAULTS["loans.Loan"].pop("loan_status")
        try:
            errors = [m for m in checks.run_checks() if m.id == "compliance.E001"]
        finally:
            fields.DEFAULTS["loans.Loan"]["loan_status"] = removed
        self.assertEqual(
            [e.msg for e in errors], ["loans.Loan.loan_status has no data classification"]
        )

    def test_a_steward_restricts_a_field_and_uploaders_see_it_masked_and_the_change_is_journaled(
        self,
    ):
        customer = customer_create(gender="F", geography_city="San Salvador")
        row = FieldClassification.objects.get(model="loans.Customer", field="geography_city")
        self.client.force_login(self.steward)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                reverse("admin:compliance_fieldclassification_change", args=[row.pk]),
                {"level": "restricted", "personal": "on", "masking": "mask", "retention_days": ""},
            )
        self.assertEqual(response.status_code, 302)
        self.client.force_login(self.uploader)
        page = self.client.get(reverse("admin:loans_customer_change", args=[customer.pk]))
        self.assertContains(page, "field-geography_city_masked")
        # Nowhere on the page, not even in the history written before the field was restricted.
        self.assertNotContains(page, "San Salvador")
        entry = JournalEntry.objects.get(kind="setting")
        self.assertEqual(
            (entry.actor, entry.object),
            (self.steward.username, f"compliance.fieldclassification:{row.pk}"),
        )


class RetentionTests(JournalTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        FieldClassification.objects.filter(model="loans.Customer", field="email").update(
            retention_days=365
        )
        old = date.today() - timedelta(days=800)
        cls.gone = customer_create(email="gone@x.example")
        loan_create(customer=cls.gone, disburse_date=old - timedelta(days=30), maturity_date=old)
        cls.held = customer_create(email="held@x.example")
        cls.held_loan = loan_create(
            customer=cls.held, disburse_date=old - timedelta(days=30), maturity_date=old
        )
        cls.recent = customer_create(email="recent@x.example")
        loan_create(customer=cls.recent, maturity_date=date.today())

    def test_a_dry_run_reports_and_changes_nothing_and_a_hold_protects_its_customer(self):
        legal_hold_place(
            object=f"loans.loan:{self.held_loan.pk}", reason="litigation", by=self.admin
        )
        with self.captureOnCommitCallbacks(execute=True):
            (line,) = retention_run(dry_run=True, by=self.admin)
        self.assertEqual((line.field, line.due, line.held, line.anonymised), ("email", 2, 1, 0))
        self.assertEqual(Customer.objects.get(pk=self.gone.pk).email, "gone@x.example")
        entry = JournalEntry.objects.get(action="retention dry run")
        self.assertEqual(json.loads(entry.body)["extra"]["report"][0]["due"], 2)

        with self.captureOnCommitCallbacks(execute=True):
            (line,) = retention_run(dry_run=False, by=self.admin)
        self.assertEqual(line.anonymised, 1)
        emails = dict(Customer.objects.values_list("pk", "email"))
        self.assertEqual(
            (emails[self.gone.pk], emails[self.held.pk], emails[self.recent.pk]),
            ("", "held@x.example", "recent@x.example"),
        )
        self.assertEqual(JournalEntry.objects.get(action="retention run").rows, 1)

    def test_a_released_hold_no_longer_protects(self):
        hold = legal_hold_place(object=f"loans.customer:{self.held.pk}", reason="x", by=self.admin)
        hold.released_at = hold.created_at
        hold.save()
        (line,) = retention_run(dry_run=False)
        self.assertEqual(line.anonymised, 2)
        self.assertEqual(LegalHold.objects.filter(released_at__isnull=True).count(), 0)

    def test_a_hold_names_a_customer_or_loan(self):
        from django.core.exceptions import ValidationError

        with self.assertRaises(ValidationError):
            legal_hold_place(object="loans.batch:1", reason="x", by=self.admin)


class WorkbenchTests(JournalTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.loan = loan_create()

    def read_loan(self, user) -> None:
        self.client.force_login(user)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.get(reverse("kpis:loan", args=[self.loan.pk]))

    def test_the_access_log_tab_lists_who_read_which_loan_with_the_zone_named(self):
        self.read_loan(self.manager)
        self.client.force_login(self.auditor)
        page = self.client.get(reverse("compliance:journal"), {"kind": "access"})
        self.assertContains(page, "Times are Europe/Madrid.")
        self.assertEqual(
            [(e.actor, e.object) for e in page.context["page"]],
            [(self.manager.username, f"loans.loan:{self.loan.pk}")],
        )

    def test_the_access_log_filters_by_user_object_and_date(self):
        self.read_loan(self.manager)
        self.read_loan(self.admin)
        self.client.force_login(self.auditor)
        url = reverse("compliance:journal")
        by_user = self.client.get(url, {"kind": "access", "user": self.admin.username})
        self.assertEqual([e.actor for e in by_user.context["page"]], [self.admin.username])
        by_object = self.client.get(url, {"object": f"loans.loan:{self.loan.pk}"})
        self.assertEqual(len(by_object.context["page"]), 2)
        tomorrow = (date.today() + timedelta(days=2)).isoformat()
        self.assertEqual(len(self.client.get(url, {"since": tomorrow}).context["page"]), 0)

    def test_an_audit_export_is_itself_logged_with_its_row_count(self):
        self.read_loan(self.manager)
        self.client.force_login(self.auditor)
        with self.captureOnCommitCallbacks(execute=True):
            rows = jsonl(self.client.get("/audit/export", {"kind": "access", "format": "jsonl"}))
        self.assertEqual(len(rows), 1)
        logged = JournalEntry.objects.get(actor=self.auditor.username)
        self.assertEqual((logged.action, logged.rows), ("export audit access", 1))

    def test_the_journal_pages_export_links_follow_its_filters(self):
        import html
        import re

        self.read_loan(self.manager)
        self.read_loan(self.admin)
        self.client.force_login(self.auditor)
        for filters in (
            {"kind": "", "user": self.manager.username},  # "All" kinds, as the form sends it
            {"kind": "access", "user": self.manager.username},
            {"kind": "access", "user": self.manager.username, "page": "1"},
        ):
            page = self.client.get(reverse("compliance:journal"), filters).content.decode()
            links = re.findall(r'href="(/audit/export\?[^"]+)"', page)
            self.assertTrue(links, filters)
            for link in links:
                response = self.client.get(html.unescape(link))
                self.assertEqual(response.status_code, 200, link)
                if "format=jsonl" in link:
                    rows = jsonl(response)
                    self.assertTrue(rows, link)
                    self.assertEqual({r["user"] for r in rows}, {self.manager.username}, link)

    def test_the_raw_file_of_a_batch_downloads_and_the_download_is_logged(self):
        import tempfile

        from django.core.files.base import ContentFile

        with tempfile.TemporaryDirectory() as media, self.settings(MEDIA_ROOT=media):
            batch = batch_create(original_name="loans.csv")
            batch.file.save("loans.csv", ContentFile(b"loan_id\nL1\n"))
            self.client.force_login(self.auditor)
            with self.captureOnCommitCallbacks(execute=True):
                response = self.client.get(reverse("loans:batch_raw_file", args=[batch.pk]))
                self.assertEqual(b"".join(response.streaming_content), b"loan_id\nL1\n")
        entry = JournalEntry.objects.get(kind="access")
        self.assertEqual(
            (entry.action, entry.object), ("download raw file", f"loans.batch:{batch.pk}")
        )

    def test_the_command_exports_csv_for_a_date_range(self):
        self.read_loan(self.manager)
        out = io.StringIO()
        today = date.today().isoformat()
        call_command(
            "audit_export", "--kind", "access", "--format", "csv", "--since", today, stdout=out
        )
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        self.assertEqual(
            [(r["user"], r["object"]) for r in rows],
            [(self.manager.username, f"loans.loan:{self.loan.pk}")],
        )
        out = io.StringIO()
        yesterday = (date.today() - timedelta(days=2)).isoformat()
        call_command(
            "audit_export", "--kind", "access", "--format", "csv", "--until", yesterday, stdout=out
        )
        self.assertEqual(out.getvalue().splitlines()[1:], [])

    def test_a_broken_chain_alerts_from_the_daily_job(self):
        from django.core import mail

        from integrations.tasks import audit_daily_task

        self.read_loan(self.manager)
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE compliance_journalentry DISABLE TRIGGER ALL")
            cursor.execute("UPDATE compliance_journalentry SET rows = 5")
            cursor.execute("ALTER TABLE compliance_journalentry ENABLE TRIGGER ALL")
        with self.settings(ADMINS=[("Ops", "ops@abaco.example")]), self.assertRaises(ChainBroken):
            audit_daily_task()
        self.assertEqual(len(mail.outbox), 1)
        self.assertIn("audit_daily failed", mail.outbox[0].subject)
        self.assertIn("columns differ", mail.outbox[0].body)

    def test_the_daily_job_writes_yesterdays_journal_with_its_last_hash(self):
        import tempfile
        from pathlib import Path

        import time_machine

        from compliance.retention import audit_daily

        with time_machine.travel("2026-03-02 10:00 +01:00"):
            self.read_loan(self.manager)
        with tempfile.TemporaryDirectory() as folder, self.settings(AUDIT_EXPORT_DIR=Path(folder)):
            audit_daily(today=date(2026, 3, 3))
            lines = (Path(folder) / "journal-2026-03-02.jsonl").read_text().splitlines()
        entry = JournalEntry.objects.get()
        self.assertEqual(json.loads(lines[0])["hash"], entry.hash)
        self.assertEqual(
            json.loads(lines[-1]),
            {"day": "2026-03-02", "day_last_id": entry.pk, "day_last_hash": entry.hash},
        )


class RoleChangeTests(JournalTestCase):
    def test_a_role_given_to_a_user_shows_in_the_workbench_and_the_journal(self):
        from auditlog.context import set_actor
        from django.contrib.auth.models import Group

        with self.captureOnCommitCallbacks(execute=True), set_actor(self.admin):
            self.manager.groups.add(Group.objects.get(name="Auditor"))
        self.client.force_login(self.auditor)
        page = self.client.get(reverse("compliance:audit"), {"category": "roles"})
        self.assertContains(page, "<li><b>groups</b>: add: Auditor</li>", html=True)
        entry = JournalEntry.objects.get(kind="role")
        self.assertEqual(
            (entry.actor, entry.object), (self.admin.username, f"auth.user:{self.manager.pk}")
        )
