"""Issue 18, item 1: no admin changelist answers a question about a personal field to a user who
is not cleared for personal data (the 1-or-0-results oracle), and bad lookup values get a 400."""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.test import RequestFactory

from compliance.admin_lookups import changelist_refusal, personal_field
from compliance.classification import RESTRICTED_FIELDS
from loans.models import Customer
from tests.base import CastTestCase
from tests.factories import customer_create


def personal_paths(model: type[models.Model], depth: int = 2, prefix: str = "") -> list[str]:
    """Every lookup path from ``model`` to a restricted field, following foreign keys."""
    paths = []
    for field in model._meta.get_fields():
        if not getattr(field, "concrete", False):
            continue
        if field.name in RESTRICTED_FIELDS.get(model._meta.label, ()):
            paths.append(f"{prefix}{field.name}")
        elif field.many_to_one and depth > 0 and field.related_model is not None:
            paths += personal_paths(field.related_model, depth - 1, f"{prefix}{field.name}__")
    return paths


class PersonalLookupTests(CastTestCase):
    def test_every_admin_refuses_every_personal_lookup_to_every_role_without_clearance(self):
        cast = [self.uploader, self.steward, self.manager, self.auditor, self.admin, self.outsider]
        checked = 0
        for model in admin.site._registry:
            opts = model._meta
            url = f"/admin/{opts.app_label}/{opts.model_name}/"
            for path in personal_paths(model):
                for user in cast:
                    self.client.force_login(user)
                    plain = self.client.get(url).status_code
                    response = self.client.get(url, {f"{path}__isnull": "False"})
                    answer = response.status_code
                    refused = "needs clearance for personal data" in response.content.decode()
                    with self.subTest(model=opts.label, lookup=path, user=user.username):
                        if plain != 200:
                            self.assertEqual(answer, plain)  # no page, no oracle
                        elif user.has_perm("loans.view_pii"):
                            # Cleared: never our refusal (Django may still refuse a lookup
                            # across relations that no list filter declares).
                            self.assertFalse(refused)
                        else:
                            self.assertEqual(answer, 400)
                            self.assertTrue(refused)
                            checked += 1
        # Customers, loans, installments, transactions, batches, uploads, … for the uploader,
        # the manager and the auditor at least.
        self.assertGreater(checked, 20)

    def test_the_national_id_oracle_of_the_issue_is_closed(self):
        customer_create(customer_id="CLI000072", national_id="N-123")
        self.client.force_login(self.uploader)
        response = self.client.get(
            "/admin/loans/customer/", {"customer_id": "CLI000072", "national_id__startswith": "N"}
        )
        self.assertEqual(response.status_code, 400)
        self.assertContains(
            response,
            "loans.Customer.national_id needs clearance for personal data",
            status_code=400,
        )
        for lookup in ("name__startswith", "birth_date__year", "email__icontains"):
            response = self.client.get("/admin/loans/customer/", {lookup: "1"})
            self.assertEqual(response.status_code, 400, lookup)
        self.client.force_login(self.steward)  # cleared: the filter works
        response = self.client.get("/admin/loans/customer/", {"national_id__startswith": "N"})
        self.assertContains(response, "CLI000072")

    def test_a_related_path_to_a_personal_field_is_refused_too(self):
        self.client.force_login(self.uploader)
        for url, lookup in (
            ("/admin/loans/loan/", "customer__national_id__startswith"),
            ("/admin/loans/installment/", "loan__customer__email__startswith"),
            ("/admin/loans/batch/", "created_by__email__startswith"),
        ):
            self.assertEqual(self.client.get(url, {lookup: "a"}).status_code, 400, lookup)

    def test_sorting_and_searching_on_a_personal_column_are_refused_without_clearance(self):
        class CustomerWithNames(admin.ModelAdmin):
            list_display = ["customer_id", "name"]
            search_fields = ["=customer_id", "email"]
            actions = None  # no checkbox column: ?o= counts from customer_id

        model_admin = CustomerWithNames(Customer, admin.site)
        request = RequestFactory().get("/admin/loans/customer/", {"o": "-1"})
        request.user = self.uploader
        self.assertIn("Sorting on loans.Customer.name", changelist_refusal(model_admin, request))
        request = RequestFactory().get("/admin/loans/customer/", {"o": "0"})
        request.user = self.uploader
        self.assertEqual(changelist_refusal(model_admin, request), "")
        request = RequestFactory().get("/admin/loans/customer/", {"q": "ana"})
        request.user = self.uploader
        self.assertIn("loans.Customer.email", changelist_refusal(model_admin, request))
        request.user = self.steward
        self.assertEqual(changelist_refusal(model_admin, request), "")

    def test_a_path_through_relations_names_the_field_it_reaches(self):
        self.assertEqual(
            personal_field(Customer, "national_id__startswith")[0], "loans.Customer.national_id"
        )
        self.assertEqual(personal_field(Customer, "customer_id__startswith")[0], "")


class LookupValueTests(CastTestCase):
    def test_out_of_range_numbers_and_nul_bytes_in_admin_filters_answer_400(self):
        self.client.force_login(self.steward)
        for params in (
            {"id__gt": "99999999999999999999999"},
            {"id__in": "1,99999999999999999999999"},
            {"dpd": "3000000000"},
            {"disburse_principal__gte": "1e999999999"},
        ):
            response = self.client.get("/admin/loans/loan/", params)
            with self.subTest(params=params):
                self.assertEqual(response.status_code, 400)
                self.assertContains(response, "out of range", status_code=400)
        response = self.client.get("/admin/loans/customer/", {"name__startswith": "\x00"})
        self.assertContains(response, "control character", status_code=400)
        self.assertContains(response, "Back to your start page", status_code=400)  # site layout
