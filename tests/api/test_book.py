"""The book and the KPIs over the API, on the dashboards' fixture book (tests/kpis/books.py):
masking, filters, cursor pages, CSV, ETags, problem+json, throttling and size limits."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from django.test import override_settings

from api.tokens import api_token_create
from compliance.models import JournalEntry
from kpis import definitions as d
from loans.models import Batch
from tests.api.base import ApiTestCase
from tests.kpis.books import AS_OF, MONTH_ENDS, dashboard_book, more_loans

LOANS = "/api/v1/loans/"


class BookTestCase(ApiTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.book = dashboard_book()
        cls.runs = cls.book.compute()

    def loan_ids(self, response) -> list[str]:
        self.assertEqual(response.status_code, 200, response.content[:500])
        return [row["loan_id"] for row in response.json()["results"]]


class CustomerTests(BookTestCase):
    def customer(self, user, scopes) -> dict:
        response = self.api_get("/api/v1/customers/C1/", user=user, scopes=scopes)
        self.assertEqual(response.status_code, 200)
        return response.json()

    def test_personal_fields_show_only_with_read_pii_and_a_cleared_role(self):
        name = self.book.customers["C1"].name
        self.assertTrue(name)
        cleared = self.customer(self.steward, ["read:book", "read:pii"])
        self.assertEqual(cleared["name"], name)
        without_scope = self.customer(self.steward, ["read:book"])
        self.assertEqual(without_scope["name"], "•" * min(len(name), 8))
        role_not_cleared = self.customer(self.manager, ["read:book", "read:pii"])
        self.assertEqual(role_not_cleared["name"], "•" * min(len(name), 8))
        self.assertNotIn(name, str(role_not_cleared))

    def test_personal_fields_are_masked_in_the_csv_too(self):
        name = self.book.customers["C1"].name
        response = self.api_get(
            "/api/v1/customers/",
            user=self.manager,
            scopes=["read:book", "read:pii"],
            HTTP_ACCEPT="text/csv",
        )
        body = b"".join(response.streaming_content).decode()
        self.assertNotIn(name, body)
        self.assertIn("C1", body)


class LoanListTests(BookTestCase):
    def test_it_filters_by_entity_product_currency_and_disbursement_dates(self):
        self.assertEqual(self.loan_ids(self.api_get(LOANS + "?entity=ABF")), ["L2", "=L5"])
        self.assertEqual(
            self.loan_ids(self.api_get(LOANS + "?product=working_capital&currency=USD")), ["L2"]
        )
        self.assertEqual(
            self.loan_ids(
                self.api_get(LOANS + "?disbursed_from=2025-01-15&disbursed_to=2025-02-28")
            ),
            ["L3", "L4"],
        )

    def test_it_filters_by_dpd_at_a_snapshot_date(self):
        # At 2025-03-31 L2 is 75 days past due and L4 39 (PAR30 = 5,000 / 12,500).
        self.assertEqual(self.loan_ids(self.api_get(LOANS + "?dpd_min=30")), ["L2", "L4"])
        self.assertEqual(
            self.loan_ids(self.api_get(LOANS + "?dpd_min=30&dpd_max=60&as_of=2025-03-31")), ["L4"]
        )
        # A month earlier L2 was 44 days late and L4 8.
        self.assertEqual(
            self.loan_ids(self.api_get(LOANS + "?dpd_min=30&as_of=2025-02-28")), ["L2"]
        )

    def test_a_bad_filter_answers_400_naming_the_field(self):
        response = self.api_get(LOANS + "?dpd_min=-1&disbursed_from=yesterday")
        self.assertEqual(response.status_code, 400)
        errors = self.problem(response)["errors"]
        self.assertEqual(set(errors), {"dpd_min", "disbursed_from"})
        response = self.api_get(LOANS + "?dpd_min=1&as_of=2020-01-31")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(
            self.problem(response)["detail"], "No snapshot on this as_of date and basis."
        )
        response = self.api_get(LOANS + "?status=")
        self.assertEqual(
            self.problem(response)["errors"], {"status": ["This field may not be blank."]}
        )
        # A misspelt filter is refused, never read as no filter (the whole book as if filtered).
        response = self.api_get(LOANS + "?min_dpd=30&page_size=2")
        self.assertEqual(response.status_code, 400)
        (why,) = self.problem(response)["errors"]["min_dpd"]
        self.assertTrue(why.startswith("not a parameter of this list (it takes "), why)
        self.assertIn("dpd_min", why)

    def test_money_is_a_decimal_string_and_dates_are_iso(self):
        row = self.api_get(LOANS + "?entity=ABT&page_size=1").json()["results"][0]
        self.assertEqual(
            (row["loan_id"], row["disburse_principal"], row["disburse_date"], row["interest_rate"]),
            ("L1", "10000.00", "2025-01-10", row["interest_rate"]),
        )
        self.assertIsInstance(row["interest_rate"], str)

    def test_cursor_pages_stay_stable_when_loans_are_added_between_pages(self):
        first = self.api_get(LOANS + "?page_size=2").json()
        more_loans(self.book, count=3)
        token = self.token(self.client_user)
        seen = [r["loan_id"] for r in first["results"]]
        url = first["next"]
        while url:
            page = self.client.get(url, headers=self.bearer(token)).json()
            seen += [r["loan_id"] for r in page["results"]]
            url = page["next"]
        self.assertEqual(seen, ["L1", "L2", "L3", "L4", "=L5", "X0", "X1", "X2"])
        self.assertNotIn("count", first)

    def test_a_page_costs_the_same_queries_for_two_loans_or_a_hundred(self):
        token = self.token(self.client_user)
        self.client.get(LOANS, headers=self.bearer(token))  # its last use is written once
        with self.assertNumQueries(4):  # token, role permissions, request count, the page
            self.client.get(LOANS + "?page_size=2", headers=self.bearer(token))
        more_loans(self.book, count=100)
        with self.assertNumQueries(4):
            response = self.client.get(LOANS + "?page_size=100", headers=self.bearer(token))
        self.assertEqual(len(response.json()["results"]), 100)

    def test_every_read_goes_to_the_access_log_with_its_token(self):
        made, token = api_token_create(user=self.client_user, scopes=["read:book"])
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.get(
                LOANS + "?entity=ABF&page_size=2", headers=self.bearer(token)
            )
        self.assertEqual(response.status_code, 200)
        entry = JournalEntry.objects.get(kind=JournalEntry.Kind.ACCESS)
        body = json.loads(entry.body)
        self.assertEqual(
            (entry.action, entry.actor, body["rows"], body["token_id"], body["filters"]["entity"]),
            ("api list", self.client_user.username, 2, str(made.pk), "ABF"),
        )

    def test_accept_text_csv_streams_the_whole_filtered_list(self):
        response = self.api_get(LOANS + "?entity=ABF", HTTP_ACCEPT="text/csv")
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        # "=L5" starts with a formula trigger: the export neutralizes it for spreadsheets.
        self.assertEqual([r["loan_id"] for r in rows], ["L2", "'=L5"])
        self.assertEqual(rows[0]["disburse_principal"], "4000.00")


class LoanResourceTests(BookTestCase):
    def test_a_loans_schedule_cash_flows_and_states(self):
        schedule = self.api_get("/api/v1/loans/L1/installments/").json()["results"]
        self.assertEqual(
            [(r["due_date"], r["principal"]) for r in schedule],
            [("2025-02-10", "5000.00"), ("2025-03-10", "5000.00")],
        )
        cash = self.api_get("/api/v1/loans/L1/transactions/").json()["results"]
        self.assertEqual(
            [(r["transaction_type"], r["date"], r["principal"]) for r in cash],
            [("PAYMENT", "2025-02-10", "5000.00")],
        )
        states = self.api_get("/api/v1/loans/L2/states/").json()["results"]
        self.assertEqual(
            [(s["as_of"], s["dpd"], s["outstanding_principal"]) for s in states],
            [
                ("2025-03-31", 75, "4000.00"),
                ("2025-02-28", 44, "4000.00"),
                ("2025-01-31", 16, "4000.00"),
            ],
        )

    def test_an_unknown_loan_answers_404_as_problem_json(self):
        for url in ("/api/v1/loans/NOPE/", "/api/v1/loans/NOPE/installments/", "/api/v1/nothing/"):
            response = self.api_get(url)
            self.assertEqual(response.status_code, 404, url)
            self.problem(response)


class KpiTests(BookTestCase):
    def test_definitions_carry_code_name_unit_version_and_formula(self):
        page = self.api_get("/api/v1/kpis/definitions/").json()
        rows = {r["code"]: r for r in page["results"]}
        self.assertEqual(set(rows), {k.code for k in d.KPIS})
        self.assertIsNone(page["next"])
        par30 = rows["par_30"]
        self.assertEqual((par30["unit"], par30["version"]), ("ratio", d.BY_CODE["par_30"].version))
        self.assertEqual(par30["formula"], d.BY_CODE["par_30"].formula)

    def test_definitions_are_cursor_pages_in_code_order_and_csv(self):
        token = self.token(self.client_user)
        url, codes = "/api/v1/kpis/definitions/?page_size=7", []
        while url:
            page = self.client.get(url, headers=self.bearer(token)).json()
            self.assertLessEqual(len(page["results"]), 7)
            codes += [r["code"] for r in page["results"]]
            url = page["next"]
        self.assertEqual(codes, sorted(k.code for k in d.KPIS))
        # Back from the second page: the first page again.
        second = self.client.get(
            "/api/v1/kpis/definitions/?page_size=7", headers=self.bearer(token)
        ).json()["next"]
        back = self.client.get(second, headers=self.bearer(token)).json()["previous"]
        first = self.client.get(back, headers=self.bearer(token)).json()["results"]
        self.assertEqual([r["code"] for r in first], codes[:7])
        response = self.api_get("/api/v1/kpis/definitions/", HTTP_ACCEPT="text/csv")
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        self.assertEqual([r["code"] for r in rows], codes)
        par30 = next(r for r in rows if r["code"] == "par_30")
        self.assertEqual(json.loads(par30["dimensions"]), list(d.BY_CODE["par_30"].dimensions))

    def test_snapshots_say_whether_they_are_beyond_the_books_data(self):
        Batch.objects.update(data_through=MONTH_ENDS[1])  # the book now runs to February
        token = self.token(self.client_user)
        self.client.get("/api/v1/kpis/snapshots/", headers=self.bearer(token))  # token's last use
        # The data-through date is read once for the page, not once a row.
        with self.assertNumQueries(5):
            one = self.client.get("/api/v1/kpis/snapshots/?page_size=1", headers=self.bearer(token))
        with self.assertNumQueries(5):
            rows = self.client.get("/api/v1/kpis/snapshots/", headers=self.bearer(token))
        self.assertEqual(len(one.json()["results"]), 1)
        self.assertEqual(
            [(r["as_of"], r["beyond_data"], r["data_through"]) for r in rows.json()["results"]],
            [
                ("2025-03-31", True, "2025-02-28"),
                ("2025-02-28", False, "2025-02-28"),
                ("2025-01-31", False, "2025-02-28"),
            ],
        )

    def test_a_snapshots_etag_changes_when_the_books_data_through_moves(self):
        url = f"/api/v1/kpis/snapshots/{self.runs[AS_OF].pk}/"
        token = self.token(self.client_user)
        Batch.objects.update(data_through=MONTH_ENDS[1])
        beyond = self.client.get(url, headers=self.bearer(token))
        self.assertTrue(beyond.json()["beyond_data"])
        Batch.objects.update(data_through=AS_OF)  # a later tape covers the snapshot's date
        within = self.client.get(
            url, headers={**self.bearer(token), "If-None-Match": beyond["ETag"]}
        )
        self.assertEqual(within.status_code, 200)
        self.assertEqual(
            (within.json()["beyond_data"], within.json()["data_through"]), (False, "2025-03-31")
        )

    def test_a_series_reads_one_kpi_over_the_snapshot_dates(self):
        response = self.api_get("/api/v1/kpis/series/?code=outstanding_principal")
        points = [(p["as_of"], p["value"]) for p in response.json()["results"]]
        self.assertEqual([p[0] for p in points], [m.isoformat() for m in MONTH_ENDS])
        self.assertEqual(points[-1][1], "12500.0000000000")

    def test_a_snapshot_has_an_etag_and_answers_304_when_it_matches(self):
        run = self.runs[AS_OF]
        url = f"/api/v1/kpis/snapshots/{run.pk}/"
        token = self.token(self.client_user)
        response = self.client.get(url, headers=self.bearer(token))
        values = {v["code"]: v["value"] for v in response.json()["values"]}
        self.assertEqual(values["par_30"], "0.4000000000")
        tag = response["ETag"]
        again = self.client.get(url, headers={**self.bearer(token), "If-None-Match": tag})
        self.assertEqual((again.status_code, again.content), (304, b""))
        rolls = self.client.get(url + "roll-rates/", headers=self.bearer(token))
        self.assertEqual(rolls.status_code, 200)
        self.assertEqual(
            self.client.get(
                url + "roll-rates/", headers={**self.bearer(token), "If-None-Match": rolls["ETag"]}
            ).status_code,
            304,
        )

    def test_snapshots_list_dates_and_bases_and_top_borrowers_name_no_one(self):
        rows = self.api_get("/api/v1/kpis/snapshots/").json()["results"]
        self.assertEqual([r["as_of"] for r in rows], [m.isoformat() for m in reversed(MONTH_ENDS)])
        run = self.runs[AS_OF]
        top = self.api_get(
            f"/api/v1/kpis/snapshots/{run.pk}/top-borrowers/?dimension=portfolio"
        ).json()["results"]
        self.assertEqual((top[0]["rank"], top[0]["customer_id"]), (1, "C1"))
        self.assertNotIn(self.book.customers["C1"].name, str(top))


class ConventionTests(BookTestCase):
    @override_settings(API_THROTTLE_RATE="2/min")
    def test_a_token_over_its_rate_gets_429_with_retry_after(self):
        token = self.token(self.client_user)
        codes = [self.client.get(LOANS, headers=self.bearer(token)).status_code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])
        response = self.client.get(LOANS, headers=self.bearer(token))
        self.assertGreater(int(response["Retry-After"]), 0)
        self.assertIn("throttled", self.problem(response)["detail"])
        other = self.token(self.client_user)  # counted per token
        self.assertEqual(self.client.get(LOANS, headers=self.bearer(other)).status_code, 200)

    def test_an_unknown_accept_answers_406(self):
        response = self.api_get(LOANS, HTTP_ACCEPT="application/xml")
        self.assertEqual(response.status_code, 406)
        self.problem(response)

    def test_the_schema_and_the_docs_are_served_without_a_cdn(self):
        schema = self.client.get("/api/schema/?format=json")
        self.assertEqual(schema.status_code, 200)
        self.assertEqual(schema["Content-Type"], "application/vnd.oai.openapi+json")
        self.assertIn("/api/v1/loans/", json.loads(schema.content)["paths"])
        docs = self.client.get("/api/docs/")
        self.assertContains(docs, "swagger-ui")
        self.assertNotIn("cdn.", docs.content.decode())
        self.assertNotIn("unpkg", docs.content.decode())
        # Swagger UI's inline styles are allowed there alone; its scripts stay 'self' only.
        policy = dict(d.strip().split(" ", 1) for d in docs["Content-Security-Policy"].split(";"))
        self.assertEqual(policy["style-src"], "'self' 'unsafe-inline'")
        self.assertEqual(policy["script-src"], "'self'")
        self.assertNotIn("unsafe-inline", schema["Content-Security-Policy"])

    def test_pipeline_runs_need_a_role_that_sees_pipelines(self):
        self.assertEqual(self.api_get("/api/v1/pipelines/runs/").status_code, 403)
        self.assertEqual(
            self.api_get("/api/v1/pipelines/runs/", user=self.manager).status_code, 200
        )

    def test_the_audit_history_needs_read_audit_and_an_auditor(self):
        self.assertEqual(self.api_get("/api/v1/audit/changes/", user=self.auditor).status_code, 200)
        self.assertEqual(
            self.api_get(
                "/api/v1/audit/changes/", user=self.auditor, scopes=["read:book"]
            ).status_code,
            403,
        )
        self.assertEqual(self.api_get("/api/v1/audit/changes/", user=self.manager).status_code, 403)


_ = date


class RowSerializerTests(BookTestCase):
    def test_the_fast_serializers_write_exactly_what_drf_would(self):
        from rest_framework import serializers

        from kpis.api import LoanStateSerializer
        from kpis.models import LoanState
        from loans.api import InstallmentSerializer, LoanSerializer, loans_with_customer_key
        from loans.models import Installment

        class PlainLoan(serializers.ModelSerializer):
            customer_id = serializers.CharField(source="customer_key", read_only=True)

            class Meta(LoanSerializer.Meta):
                pass

        class PlainInstallment(serializers.ModelSerializer):
            class Meta(InstallmentSerializer.Meta):
                pass

        class PlainState(serializers.ModelSerializer):
            as_of = serializers.DateField(source="run.as_of", read_only=True)
            basis = serializers.CharField(source="run.basis", read_only=True)

            class Meta(LoanStateSerializer.Meta):
                pass

        loans = list(loans_with_customer_key())
        self.assertEqual(LoanSerializer(loans, many=True).data, PlainLoan(loans, many=True).data)
        rows = list(Installment.objects.all())
        self.assertEqual(
            InstallmentSerializer(rows, many=True).data, PlainInstallment(rows, many=True).data
        )
        states = list(LoanState.objects.select_related("run"))
        self.assertEqual(
            LoanStateSerializer(states, many=True).data, PlainState(states, many=True).data
        )
        self.assertEqual(len(loans), 5)


class RequestGuardTests(BookTestCase):
    def test_control_characters_answer_in_problem_json(self):
        in_path = self.api_get("/api/v1/batches/%07/")
        self.assertEqual((in_path.status_code, self.problem(in_path)["status"]), (404, 404))
        in_query = self.api_get(LOANS + "?entity=%00")
        self.assertEqual(in_query.status_code, 400)
        self.assertIn("control character", self.problem(in_query)["detail"])
