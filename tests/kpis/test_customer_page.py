"""The customer page (issue 17, item 6) and the loan page's fixes (item 7): a borrower's loans,
exposure at each snapshot and change history, personal data masked without clearance; rates
as percentages, empty labels left out, links to the customer and to the raw files."""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from pathlib import Path

from django.db import connection
from django.test import override_settings
from django.urls import reverse

from kpis.engine import snapshot_compute
from loans.models import Batch, Customer, Loan
from loans.services import tape_import
from tests.base import CastTestCase
from tests.loans.tape_files import tape_valid, tape_write


class CustomerPageTests(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.media = tempfile.mkdtemp(prefix="abaco-media-")
        work = Path(tempfile.mkdtemp(prefix="abaco-tapes-"))
        with override_settings(MEDIA_ROOT=cls.media):
            tape = tape_valid(4)
            for row in tape["loans"]:
                row.update(loan_grade="", lender="", facility="")
            tape_import(path=tape_write(work, **tape), source="cascade", by=cls.uploader)
        shutil.rmtree(work, True)
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")
        cls.customer = Customer.objects.get(customer_id="C00001")
        cls.customer.name = "Ana Pérez"
        cls.customer.national_id = "01234567-8"
        cls.customer.save()
        snapshot_compute(as_of=date(2024, 1, 31), job="test")
        cls.url = reverse("kpis:customer", args=[cls.customer.pk])

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        shutil.rmtree(cls.media, True)

    def test_a_steward_sees_the_customers_loans_exposure_and_personal_data(self):
        self.client.force_login(self.steward)

        page = self.client.get(self.url)

        self.assertContains(page, "Ana Pérez")
        self.assertContains(page, "01234567-8")
        for loan in Loan.objects.filter(customer=self.customer):
            self.assertContains(page, reverse("kpis:loan", args=[loan.pk]))
        exposure = page.context["h"].exposure
        self.assertEqual([row.as_of for row in exposure], [date(2024, 1, 31)])
        self.assertEqual(exposure[0].loans, 2)

    def test_personal_data_is_masked_for_roles_not_cleared(self):
        for who in ("manager", "uploader"):
            with self.subTest(who=who):
                self.client.force_login(getattr(self, who))
                page = self.client.get(self.url)
                self.assertEqual(page.status_code, 200)
                self.assertNotContains(page, "Ana Pérez")
                self.assertNotContains(page, "01234567-8")
                self.assertContains(page, "••••••••")
                self.assertContains(page, "Personal data is masked")

    def test_auditors_read_it_and_users_without_a_role_are_refused(self):
        self.client.force_login(self.auditor)  # read-only, like the loan page (docs/design.md)
        self.assertEqual(self.client.get(self.url).status_code, 200)
        self.client.force_login(self.outsider)
        self.assertEqual(self.client.get(self.url).status_code, 403)

    def test_the_loan_page_shows_rates_as_percentages_omits_empty_labels_and_links_out(self):
        loan = Loan.objects.get(loan_id="L00001")
        batch = Batch.objects.get(kind=Batch.Kind.LOANS)
        self.client.force_login(self.uploader)

        page = self.client.get(reverse("kpis:loan", args=[loan.pk]))

        self.assertContains(page, "<dd>24.00% a year</dd>", html=True)
        self.assertContains(page, "50.00% paid")
        self.assertNotContains(page, "<dt>Grade</dt>", html=True)
        self.assertNotContains(page, "Grade / lender / facility")
        self.assertContains(page, reverse("kpis:customer", args=[self.customer.pk]))
        self.assertContains(page, reverse("loans:batch_raw_file", args=[batch.pk]))

    def test_the_top_borrowers_link_to_their_customer_pages(self):
        self.client.force_login(self.manager)

        page = self.client.get(reverse("kpis:concentration"))

        self.assertContains(page, reverse("kpis:customer", args=[self.customer.pk]))
