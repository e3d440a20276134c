"""Audit history: who changed what, with personal data recorded as changed but never stored."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

from auditlog.models import LogEntry
from django.core.management import call_command
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.scheduler import scheduler

from loans.models import Customer
from tests.base import CastTestCase, admin_form_data
from tests.factories import customer_create, loan_create

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class AuditTestCase(CastTestCase):
    def admin_change(self, user, obj, **changes) -> HttpResponse:
        """Open the admin change page as ``user`` and post it back with ``changes``."""
        url = reverse(f"admin:loans_{obj._meta.model_name}_change", args=[obj.pk])
        self.client.force_login(user)
        data = admin_form_data(self.client.get(url))
        data.update(changes)
        response = self.client.post(url, data)
        self.assertRedirects(
            response,
            reverse(f"admin:loans_{obj._meta.model_name}_changelist"),
            fetch_redirect_response=False,
        )
        return response


class PersonalDataRedactionTests(AuditTestCase):
    before = {
        "name": "María Fernanda López",
        "email": "maria.lopez@correo.example",
        "national_id": "05121990-3",
        "phone": "+503 7012 3456",
        "birth_date": "1990-05-12",
    }
    after = {
        "name": "Fernanda Ruiz Castro",
        "email": "mf.ruiz@otro.example",
        "national_id": "05121990-4",
        "phone": "+503 7999 0000",
        "birth_date": "1990-06-21",
    }

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.customer = customer_create(**{**cls.before, "birth_date": date(1990, 5, 12)})

    def test_a_stewards_edit_of_personal_data_is_logged_as_changed_with_values_redacted(self):
        self.admin_change(self.steward, self.customer, **self.after)

        self.assertEqual(Customer.objects.get(pk=self.customer.pk).email, self.after["email"])
        entry = LogEntry.objects.get_for_object(self.customer).get(action=LogEntry.Action.UPDATE)
        self.assertEqual(entry.actor, self.steward)
        self.assertEqual(
            {field: entry.changes_dict[field] for field in self.after},
            {field: ["[redacted]", "[redacted]"] for field in self.after},
        )

    def test_no_personal_value_reaches_any_audit_entry_of_the_customer(self):
        self.admin_change(self.steward, self.customer, **self.after)

        entries = list(LogEntry.objects.get_for_object(self.customer))
        self.assertEqual(sorted(e.get_action_display() for e in entries), ["create", "update"])
        stored = "\n".join(
            f"{json.dumps(e.changes)} {e.changes_text} {e.object_repr} {json.dumps(e.serialized_data)}"
            for e in entries
        )
        for value in [*self.before.values(), *self.after.values()]:
            with self.subTest(value=value):
                self.assertNotIn(value, stored)

    def test_the_customers_admin_history_shows_the_change_without_the_values(self):
        self.admin_change(self.steward, self.customer, **self.after)

        page = self.client.get(reverse("admin:loans_customer_change", args=[self.customer.pk]))
        # The steward may see the current values in the form; the history must hold none.
        history = page.content.decode().split('class="form-row field-field_history"')[1]
        history = history.split("</table>")[0]
        self.assertIn("email: [redacted] → [redacted]", history)
        self.assertIn(f"<td>{self.steward.username}</td><td>update</td>", history)
        for value in [*self.before.values(), *self.after.values()]:
            with self.subTest(value=value):
                self.assertNotIn(value, history)


class LoanHistoryTests(AuditTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.loan = loan_create(loan_status="Current")

    def test_a_loan_edited_in_the_admin_shows_who_changed_what_on_its_page(self):
        self.admin_change(self.steward, self.loan, loan_status="Restructured")

        self.client.force_login(self.admin)
        page = self.client.get(reverse("admin:loans_loan_change", args=[self.loan.pk]))
        self.assertContains(page, "loan_status: Current → Restructured")
        self.assertContains(page, f"<td>{self.steward.username}</td>", html=True)

    def test_a_loan_whose_history_holds_braces_still_opens_in_the_admin(self):
        self.admin_change(self.steward, self.loan, loan_status="{pending}")

        page = self.client.get(reverse("admin:loans_loan_change", args=[self.loan.pk]))
        self.assertContains(page, "loan_status: Current → {pending}")


class AuditPageTests(AuditTestCase):
    formula = '=HYPERLINK("http://x.io","go")'  # fits loan_status (32)

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.loan = loan_create(loan_status="Current")

    def export_rows(self) -> list[dict[str, str]]:
        self.client.force_login(self.auditor)
        response = self.client.get("/audit/export.csv")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response["Content-Disposition"], 'attachment; filename="audit-history.csv"'
        )
        text = b"".join(response.streaming_content).decode()
        return list(csv.DictReader(io.StringIO(text)))

    def test_the_audit_page_lists_who_changed_which_loan(self):
        self.admin_change(self.steward, self.loan, loan_status="Restructured")

        self.client.force_login(self.auditor)
        page = self.client.get("/audit/", {"model": "loans.loan"})
        self.assertContains(page, f"loans.loan · {self.loan.loan_id}")
        self.assertContains(page, f"<td>{self.steward.username}</td>", html=True)
        self.assertContains(page, "<li><b>loan_status</b>: Current → Restructured</li>", html=True)
        self.assertEqual(
            [e.object_repr for e in page.context["page"]], [self.loan.loan_id, self.loan.loan_id]
        )

    def test_the_audit_page_filters_by_actor(self):
        self.admin_change(self.steward, self.loan, loan_status="Restructured")

        self.client.force_login(self.auditor)
        page = self.client.get("/audit/", {"actor": self.steward.username})
        self.assertEqual(
            [(e.get_action_display(), e.object_repr) for e in page.context["page"]],
            [("update", self.loan.loan_id)],
        )

    def test_the_export_keeps_a_formula_typed_into_a_loan_inert_and_intact(self):
        self.admin_change(self.steward, self.loan, loan_status=self.formula)

        rows = self.export_rows()
        update = next(r for r in rows if r["action"] == "update")
        self.assertEqual(update["actor"], self.steward.username)
        # The changes travel as one JSON cell, which no spreadsheet runs as a formula ...
        self.assertEqual(json.loads(update["changes"]), {"loan_status": ["Current", self.formula]})
        # ... and no cell of the file starts like one.
        live = [cell for row in rows for cell in row.values() if cell.startswith(FORMULA_TRIGGERS)]
        self.assertEqual(live, [])

    def test_the_export_neutralizes_a_formula_that_arrived_as_a_loan_id(self):
        loan = loan_create(loan_id=self.formula)

        rows = self.export_rows()
        created = next(
            r for r in rows if r["object_id"] == str(loan.pk) and r["model"] == "loans.loan"
        )
        self.assertEqual(created["object"], "'" + self.formula)


class PersonalDataMaskingTests(AuditTestCase):
    email = "maria.lopez@correo.example"
    national_id = "05121990-3"

    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        cls.customer = customer_create(
            email=cls.email, national_id=cls.national_id, name="María López"
        )
        cls.url = reverse("admin:loans_customer_change", args=[cls.customer.pk])

    def test_an_uploader_sees_the_customer_with_personal_data_masked(self):
        self.assertFalse(self.uploader.has_perm("loans.view_pii"))
        self.client.force_login(self.uploader)
        page = self.client.get(self.url)
        self.assertEqual(page.status_code, 200)
        self.assertContains(page, self.customer.customer_id)
        self.assertContains(page, "••••••••")
        for value in (self.email, self.national_id, "María López"):
            with self.subTest(value=value):
                self.assertNotContains(page, value)

    def test_a_steward_sees_the_customers_real_personal_data(self):
        self.client.force_login(self.steward)
        page = self.client.get(self.url)
        self.assertContains(page, f'value="{self.email}"')
        self.assertContains(page, f'value="{self.national_id}"')


class ScheduleAuditTests(CastTestCase):
    def test_the_schedulers_own_saves_leave_no_entry_and_an_edit_does(self):
        call_command("setup_schedules", stdout=io.StringIO())
        Schedule.objects.exclude(name="pipelines_watch").delete()
        Schedule.objects.update(next_run=timezone.now() - timedelta(minutes=1))
        entries = LogEntry.objects.get_for_model(Schedule)
        before = entries.count()
        scheduler(get_broker())  # django-q's scheduler, as the cluster runs it (sync in tests)
        schedule = Schedule.objects.get()
        self.assertGreater(schedule.next_run, timezone.now())  # it ran and moved on
        self.assertIsNotNone(schedule.task)
        self.assertEqual(entries.count(), before)
        # What runs and when is still recorded when someone changes it.
        schedule.cron = "*/30 * * * *"
        schedule.save()
        self.assertEqual(entries.count(), before + 1)
        self.assertEqual(list(entries.latest("timestamp").changes_dict), ["cron"])
