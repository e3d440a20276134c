"""The manager dashboards read snapshots of the fixture book (tests/kpis/books.py) and
show its hand-worked numbers; filters, drill-down, loan page, exports and roles."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from decimal import Decimal

from auditlog.context import set_actor
from django.urls import reverse
from openpyxl import load_workbook

from kpis.models import LoanState
from loans.models import BatchChange
from tests.base import CastTestCase
from tests.factories import batch_create
from tests.kpis.books import AS_OF, RESIDUAL_MONTH_ENDS, dashboard_book, more_loans, residual_book

OVERVIEW = reverse("kpis:overview")
RISK = reverse("kpis:risk")
CONCENTRATION = reverse("kpis:concentration")
LOANS = reverse("kpis:loans")


class DashboardTestCase(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.book = dashboard_book()
        cls.runs = cls.book.compute()

    def setUp(self) -> None:
        self.client.force_login(self.manager)

    def tile(self, response, code: str) -> str:
        html = response.content.decode()
        start = html.index(f'id="kpi-{code}"')
        return html[start : html.index("</div>", start)]

    def loan_ids(self, response) -> list[str]:
        """The drill-down's loans as the page shows them (a page from the page cache has no
        selector result in its context, only its HTML)."""
        return re.findall(
            r'<td><a href="/dashboard/loans/\d+/">([^<]+)</a></td>', response.content.decode()
        )


class OverviewTests(DashboardTestCase):
    def test_it_shows_the_headline_numbers_of_the_latest_snapshot(self):
        response = self.client.get(OVERVIEW)
        self.assertEqual(response.context["s"].as_of, AS_OF)
        self.assertIn("12,500", self.tile(response, "outstanding_principal"))
        self.assertIn("40.00%", self.tile(response, "par_30"))
        self.assertIn("0.00%", self.tile(response, "par_90"))
        self.assertIn("500", self.tile(response, "disbursements"))
        self.assertIn(">4<", self.tile(response, "active_borrowers").replace(" ", ""))

    def test_it_compares_with_the_previous_month_end(self):
        response = self.client.get(OVERVIEW)
        # 12,500 against 12,000 at 2025-02-28; PAR30 0.40 against 0.3333.
        self.assertIn("+500 (+4.2%)", self.tile(response, "outstanding_principal"))
        self.assertIn("+6.67 pp", self.tile(response, "par_30"))

    def test_month_to_date_figures_of_a_partial_month_are_not_compared_with_the_month_end(self):
        from kpis.engine import snapshot_compute

        mid = AS_OF - timedelta(days=10)
        snapshot_compute(as_of=mid)
        response = self.client.get(OVERVIEW, {"as_of": mid.isoformat()})
        self.assertContains(response, f"Month-to-date figures cover {mid.day} days of the month")
        for code in ("disbursements", "collection_rate"):
            self.assertNotIn("vs month-end", self.tile(response, code))
        self.assertIn("vs month-end", self.tile(response, "outstanding_principal"))
        # At the month-end the month is whole: compared.
        month_end = self.client.get(OVERVIEW)
        self.assertNotContains(month_end, "Month-to-date figures cover")
        self.assertIn("vs month-end", self.tile(month_end, "disbursements"))

    def test_it_marks_par_30_above_its_red_threshold(self):
        response = self.client.get(OVERVIEW)
        self.assertIn("tile red", response.content.decode().split('id="kpi-par_30"')[0][-40:])

    def test_it_shows_each_numbers_definition_and_version(self):
        response = self.client.get(OVERVIEW)
        self.assertIn("Σ OB of loans with DPD ≥ 30 / Σ OB", self.tile(response, "par_30"))
        self.assertIn("version 2", self.tile(response, "par_30"))

    def test_it_draws_the_trend_of_the_month_ends(self):
        trend = self.client.get(OVERVIEW).context["o"].trend
        self.assertEqual(trend["labels"], ["2025-01-31", "2025-02-28", "2025-03-31"])
        self.assertEqual(trend["series"]["outstanding_principal"], [15000.0, 12000.0, 12500.0])
        self.assertEqual(trend["series"]["par_30"][-1], 0.4)

    def test_an_earlier_date_shows_that_snapshot(self):
        response = self.client.get(OVERVIEW, {"as_of": "2025-02-28"})
        self.assertIn("12,000", self.tile(response, "outstanding_principal"))
        self.assertIn("33.33%", self.tile(response, "par_30"))

    def test_a_company_slice_changes_the_numbers(self):
        response = self.client.get(OVERVIEW, {"dimension": "company", "member": "ABT"})
        self.assertIn("8,000", self.tile(response, "outstanding_principal"))
        self.assertIn("12.50%", self.tile(response, "par_30"))
        response = self.client.get(OVERVIEW, {"dimension": "company", "member": "ABF"})
        self.assertIn("4,500", self.tile(response, "outstanding_principal"))
        self.assertIn("88.89%", self.tile(response, "par_30"))

    def test_restated_numbers_are_the_default_once_a_date_was_restated(self):
        self.assertNotContains(self.client.get(OVERVIEW), "Restated</a>")
        # A late payment on L2 changes 2025-03-31: recomputing it writes a restated run.
        from tests.factories import transaction_create

        transaction_create(
            loan=self.book.loans["L2"], date=date(2025, 3, 1), principal=1000, interest=0
        )
        from kpis.engine import snapshot_compute

        snapshot_compute(as_of=AS_OF)
        restated = self.client.get(OVERVIEW)
        self.assertContains(restated, "Restated</a>")
        self.assertIn("11,500", self.tile(restated, "outstanding_principal"))
        # The switch shows every date as first reported.
        reported = self.client.get(OVERVIEW, {"basis": "as_reported"})
        self.assertIn("12,500", self.tile(reported, "outstanding_principal"))
        self.assertContains(reported, "As reported, every date")
        # The run line says why the date was restated.
        self.assertContains(
            restated,
            'Restated: <span class="restatement-reason">the numbers changed since it was reported'
            " (a late correction)</span>",
        )

    def test_a_provisional_snapshot_carries_a_badge_with_its_reasons(self):
        batch_create(kind="loans", status="failed")
        from kpis.engine import snapshot_compute

        snapshot_compute(as_of=date(2025, 4, 30))
        response = self.client.get(OVERVIEW)
        self.assertContains(response, "badge provisional")
        self.assertContains(response, "failed with errors")

    def test_the_data_status_lists_the_latest_batch_per_source_and_kind(self):
        failed = batch_create(kind="loans", status="failed")
        batches = self.client.get(OVERVIEW).context["o"].batches
        self.assertEqual(
            {(b.source, b.kind) for b in batches},
            {("cascade", kind) for kind in ("customers", "loans", "schedules", "transactions")},
        )
        self.assertIn(failed, batches)
        self.assertContains(self.client.get(OVERVIEW), "status-failed")


class EmptyStateTests(CastTestCase):
    def test_with_no_loans_it_says_to_upload_a_tape(self):
        self.client.force_login(self.admin)
        response = self.client.get(OVERVIEW)
        self.assertContains(response, "The loan book is empty")
        self.assertContains(response, reverse("admin:loans_upload_add"))
        self.assertContains(response, "compute_kpis --backfill")

    def test_a_manager_gets_no_upload_link(self):
        self.client.force_login(self.manager)
        response = self.client.get(OVERVIEW)
        self.assertNotContains(response, reverse("admin:loans_upload_add"))

    def test_with_loans_but_no_snapshot_it_says_to_run_the_backfill(self):
        dashboard_book()
        self.client.force_login(self.manager)
        response = self.client.get(OVERVIEW)
        self.assertContains(response, "no KPI snapshot has been computed")
        self.assertContains(response, "compute_kpis --backfill")


class RiskTests(DashboardTestCase):
    def test_it_shows_the_dpd_buckets(self):
        buckets = {b["code"]: b for b in self.client.get(RISK).context["r"].buckets}
        self.assertEqual(buckets["current"]["balance"], 2500)
        self.assertEqual(buckets["current"]["count"], 2)
        self.assertEqual(buckets["8_30"]["balance"], 5000)
        self.assertEqual(buckets["31_60"]["balance"], 1000)
        self.assertEqual(buckets["61_90"]["balance"], 4000)
        self.assertEqual(buckets["91_180"]["count"], 0)

    def test_it_shows_par_per_entity(self):
        rows = {
            (r["dimension"], r["member"]): r
            for r in self.client.get(RISK).context["r"].par_by_slice
        }
        self.assertEqual(rows[("company", "ABT")]["par"][30], Decimal("0.125"))
        self.assertEqual(rows[("portfolio", "")]["par"][30], Decimal("0.4"))
        self.assertContains(self.client.get(RISK), "12.50%")

    def test_it_shows_the_roll_rates_from_the_previous_month_end(self):
        r = self.client.get(RISK).context["r"]
        matrix = {
            row["from"]: {to: c["share"] for to, c in zip(r.roll_labels, row["cells"], strict=True)}
            for row in r.roll_rows
        }
        self.assertAlmostEqual(float(matrix["current"]["8–30 DPD"]), 5000 / 7000, places=6)
        self.assertEqual(matrix["31_60"]["61–90 DPD"], 1)
        self.assertEqual(matrix["8_30"]["31–60 DPD"], 1)

    def test_it_draws_the_vintage_curves(self):
        chart = self.client.get(RISK).context["r"].chart["vintages"]
        self.assertEqual(chart["ever_30"]["2024-12"][-1], {"x": 3, "y": 1.0})
        self.assertEqual(chart["ever_30"]["2025-01"][-1]["y"], round(1000 / 11000, 6))
        self.assertEqual(chart["written_off"]["2025-01"][-1]["y"], 0.0)

    def test_a_company_slice_changes_the_buckets(self):
        response = self.client.get(RISK, {"dimension": "company", "member": "ABF"})
        buckets = {b["code"]: b for b in response.context["r"].buckets}
        self.assertEqual(buckets["61_90"]["balance"], 4000)
        self.assertEqual(buckets["8_30"]["balance"], 0)


class ConcentrationTests(DashboardTestCase):
    def test_it_lists_the_top_borrowers_with_masked_personal_data(self):
        c = self.client.get(CONCENTRATION).context["c"]
        self.assertEqual([b["customer_id"] for b in c.borrowers], ["C1", "C2", "C3", "+C5"])
        self.assertEqual(c.borrowers[0]["ob"], 6000)
        self.assertEqual(c.borrowers[0]["share"], Decimal("0.48"))
        self.assertNotEqual(c.borrowers[0]["name"], "Name of C1")
        self.assertNotContains(self.client.get(CONCENTRATION), "Name of C1")

    def test_a_company_slice_ranks_its_own_borrowers(self):
        response = self.client.get(CONCENTRATION, {"dimension": "company", "member": "ABF"})
        borrowers = response.context["c"].borrowers
        self.assertEqual(
            [(b["customer_id"], b["ob"], b["loans"]) for b in borrowers],
            [("C2", 4000, 1), ("+C5", 500, 1)],
        )
        self.assertEqual(borrowers[0]["share"], Decimal(4000) / Decimal(4500))

    def test_the_migration_ranks_snapshots_taken_before_top_borrowers_were_kept(self):
        import importlib

        from django.db import connection

        from kpis.models import TopBorrower

        migration = importlib.import_module("kpis.migrations.0004_top_borrowers")
        fields = (
            "run_id",
            "dimension",
            "member",
            "rank",
            "customer_id",
            "outstanding_principal",
            "loans",
        )
        # The migration ranks the slices that existed then; segments came later (0006).
        kept = sorted(TopBorrower.objects.exclude(dimension="segment").values_list(*fields))
        TopBorrower.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(migration.BACKFILL_SQL)
        self.assertEqual(sorted(TopBorrower.objects.values_list(*fields)), kept)
        # Borrowers per slice (portfolio, ABT, ABF, factoring, working capital, USD) at each date:
        # 01-31 C1 C2; 02-28 C1 C2 C3; 03-31 C1 C2 C3 +C5.
        self.assertEqual(
            len(kept), (2 + 1 + 1 + 1 + 1 + 2) + (3 + 2 + 1 + 2 + 1 + 3) + (4 + 2 + 2 + 3 + 1 + 4)
        )

    def test_a_user_cleared_for_personal_data_sees_names(self):
        self.client.force_login(self.admin)
        response = self.client.get(CONCENTRATION)
        self.assertContains(response, "Name of C1")
        self.assertContains(response, "ID-C1")

    def test_it_shows_hhi_and_shares(self):
        measures = {m.code: m.value for m in self.client.get(CONCENTRATION).context["c"].measures}
        self.assertEqual(measures["hhi"], 3600)
        self.assertEqual(measures["top_1_share"], Decimal("0.48"))
        self.assertEqual(measures["top_10_share"], 1)
        self.assertEqual(measures["active_borrowers"], 4)
        self.assertEqual(measures["repeat_borrower_rate"], Decimal("0.25"))


class DrilldownTests(DashboardTestCase):
    def test_a_bucket_lists_exactly_its_loans(self):
        response = self.client.get(LOANS, {"bucket": "31_60"})
        self.assertEqual(self.loan_ids(response), ["L4"])
        self.assertEqual(response.context["l"].total, 1)
        current = self.client.get(LOANS, {"bucket": "current", "sort": "outstanding"})
        self.assertEqual(self.loan_ids(current), ["L3", "=L5"])

    def test_par_30_lists_the_loans_30_or_more_days_past_due(self):
        response = self.client.get(LOANS, {"min_dpd": 30})
        self.assertEqual(self.loan_ids(response), ["L2", "L4"])
        self.assertEqual(response.context["l"].total, 2)

    def test_a_threshold_inside_a_bucket_counts_only_the_loans_past_it(self):
        response = self.client.get(LOANS, {"min_dpd": 21})
        self.assertEqual(self.loan_ids(response), ["L2", "L4", "L1"])
        self.assertEqual(response.context["l"].total, 3)

    def test_a_company_slice_narrows_the_drill_down(self):
        response = self.client.get(LOANS, {"min_dpd": 30, "dimension": "company", "member": "ABT"})
        self.assertEqual(self.loan_ids(response), ["L4"])
        self.assertEqual(response.context["l"].total, 1)

    def test_an_earlier_date_lists_that_dates_states(self):
        response = self.client.get(LOANS, {"as_of": "2025-02-28", "bucket": "31_60"})
        self.assertEqual(self.loan_ids(response), ["L2"])

    def test_it_pages_fifty_loans_at_a_time(self):
        more_loans(self.book, count=120)
        self.book.compute()  # the grown book is a restatement of the same dates
        response = self.client.get(LOANS, {"bucket": "8_30", "basis": "restated"})
        drill = response.context["l"]
        self.assertEqual(len(drill.states), 50)
        self.assertEqual(drill.pages, 2)
        # L1 and the 80 extra loans that paid their first installment, but for 4 at 7 DPD
        self.assertEqual(drill.total, 77)
        second = self.client.get(LOANS, {"bucket": "8_30", "basis": "restated", "page": 2})
        second = second.context["l"]
        self.assertEqual(len(second.states), drill.total - 50)
        self.assertFalse({s.pk for s in drill.states} & {s.pk for s in second.states})

    def test_its_pager_walks_keyset_pages_both_ways(self):
        more_loans(self.book, count=120)
        self.book.compute()
        params = {"bucket": "8_30", "basis": "restated", "sort": "outstanding"}
        first = self.client.get(LOANS, params).context["l"]
        self.assertTrue(first.next_after)
        response = self.client.get(LOANS, {**params, "after": first.next_after, "page": 2})
        second = response.context["l"]
        self.assertEqual(second.page, 2)
        self.assertEqual(len(second.states), 27)
        # Largest balance first (L1's 5,000, then 400s), ties by id, and nothing seen twice.
        every = [*first.states, *second.states]
        self.assertEqual(every[0].loan.loan_id, "L1")
        keys = [(s.outstanding_principal, s.pk) for s in every]
        self.assertEqual(keys, sorted(keys, reverse=True))
        self.assertEqual(second.next_after, "")
        self.assertContains(response, 'sort=outstanding" rel="prev"')  # page 1 needs no cursor
        back = self.client.get(LOANS, {**params, "before": f"400.00_{second.states[0].pk}"})
        self.assertEqual([s.pk for s in back.context["l"].states], [s.pk for s in first.states])
        # A boundary that cannot be one is a bad request, said so (issue 18), never a 500.
        for junk in ("junk", "1e999999999_1", "NaN_1", "5_99999999999999999999"):
            response = self.client.get(LOANS, {**params, "after": junk})
            self.assertContains(response, "is not valid", status_code=400)

    def test_each_row_links_to_its_loan(self):
        response = self.client.get(LOANS, {"bucket": "31_60"})
        self.assertContains(response, reverse("kpis:loan", args=[self.book.loans["L4"].pk]))


class LoanPageTests(DashboardTestCase):
    def test_it_shows_the_schedule_transactions_and_states(self):
        loan = self.book.loans["L1"]
        response = self.client.get(reverse("kpis:loan", args=[loan.pk]))
        h = response.context["h"]
        self.assertEqual(
            [i.due_date for i in h.installments], [date(2025, 2, 10), date(2025, 3, 10)]
        )
        self.assertEqual(
            [(t.date, t.principal) for t in h.transactions], [(date(2025, 2, 10), 5000)]
        )
        self.assertEqual(
            [(s.run.as_of, s.dpd, s.outstanding_principal) for s in h.states],
            [
                (date(2025, 3, 31), 21, 5000),
                (date(2025, 2, 28), 0, 5000),
                (date(2025, 1, 31), 0, 10000),
            ],
        )
        self.assertContains(response, "2025-03-10")

    def test_it_shows_tape_changes_and_audit_history(self):
        loan = self.book.loans["L1"]
        newer = batch_create(kind="loans")
        BatchChange.objects.create(
            batch=newer, kind="loans", key="L1", fields={"interest_rate": ["0.24", "0.26"]}
        )
        BatchChange.objects.create(
            batch=newer,
            kind="schedules",
            key="L1 due 2025-03-10",
            fields={"principal": ["5000", "5100"]},
        )
        BatchChange.objects.create(batch=newer, kind="loans", key="L10", fields={"term": [1, 2]})
        with set_actor(self.admin):
            loan.loan_status = "Late"
            loan.save()
        response = self.client.get(reverse("kpis:loan", args=[loan.pk]))
        h = response.context["h"]
        self.assertEqual({c.key for c in h.changes}, {"L1", "L1 due 2025-03-10"})
        self.assertContains(response, "interest_rate: 0.24 → 0.26")
        self.assertContains(response, "loan_status: Current → Late")
        self.assertIn(newer.pk, {b.pk for b in h.batches})
        self.assertIn(self.book.batches["schedules"].pk, {b.pk for b in h.batches})

    def test_an_unknown_loan_is_404(self):
        self.assertEqual(self.client.get(reverse("kpis:loan", args=[987654])).status_code, 404)


class ExportTests(DashboardTestCase):
    def csv_rows(self, response) -> list[list[str]]:
        return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    def test_the_drill_down_exports_as_csv_with_formulas_escaped(self):
        response = self.client.get(LOANS, {"bucket": "current", "format": "csv"})
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        rows = self.csv_rows(response)
        self.assertEqual(rows[0][:2], ["loan_id", "customer_id"])
        self.assertIn(["'=L5", "'+C5"], [row[:2] for row in rows[1:]])

    def test_the_drill_down_exports_as_xlsx_with_formulas_escaped(self):
        response = self.client.get(LOANS, {"bucket": "current", "format": "xlsx"})
        sheet = load_workbook(io.BytesIO(response.content)).active
        cells = [[c.value for c in row][:2] for row in sheet.iter_rows(min_row=2)]
        self.assertIn(["'=L5", "'+C5"], cells)

    def test_the_top_borrowers_export_escapes_customer_ids(self):
        response = self.client.get(CONCENTRATION, {"format": "csv", "table": "top_borrowers"})
        rows = self.csv_rows(response)
        self.assertEqual(rows[4][1], "'+C5")
        self.assertEqual(rows[1][2], "••••••••")  # a manager is not cleared for names

    def test_every_page_table_exports(self):
        for url, table in [
            (OVERVIEW, "headlines"),
            (OVERVIEW, "trend"),
            (RISK, "buckets"),
            (RISK, "par"),
            (RISK, "roll_rates"),
            (RISK, "vintages"),
            (CONCENTRATION, "measures"),
        ]:
            response = self.client.get(url, {"format": "xlsx", "table": table})
            self.assertEqual(response.status_code, 200, (url, table))
            self.assertGreater(load_workbook(io.BytesIO(response.content)).active.max_row, 1)
        rows = self.csv_rows(self.client.get(OVERVIEW, {"format": "csv"}))
        self.assertIn(["2025-03-31", "outstanding_principal"], [row[:2] for row in rows])

    def test_exports_need_the_export_permission(self):
        from django.contrib.auth.models import Permission

        self.manager.groups.first().permissions.remove(
            Permission.objects.get(codename="export_data")
        )
        self.assertEqual(self.client.get(OVERVIEW, {"format": "csv"}).status_code, 403)
        self.assertEqual(self.client.get(OVERVIEW).status_code, 200)


class RoleTests(DashboardTestCase):
    URLS = (OVERVIEW, RISK, CONCENTRATION, LOANS)

    def test_managers_and_admins_read_every_dashboard(self):
        loan_page = reverse("kpis:loan", args=[self.book.loans["L1"].pk])
        for user in (self.manager, self.admin):
            self.client.force_login(user)
            for url in (*self.URLS, loan_page):
                self.assertEqual(self.client.get(url).status_code, 200, (user, url))

    def test_other_roles_get_403(self):
        loan_page = reverse("kpis:loan", args=[self.book.loans["L1"].pk])
        # Uploaders and stewards read the dashboards (issue 17); auditors and outsiders do not.
        for user in (self.auditor, self.outsider):
            self.client.force_login(user)
            for url in self.URLS:
                self.assertEqual(self.client.get(url).status_code, 403, (user, url))
        # The loan page is the book's (loans.view_loan): auditors and uploaders read it too.
        for user, status in ((self.auditor, 200), (self.uploader, 200), (self.outsider, 403)):
            self.client.force_login(user)
            self.assertEqual(self.client.get(loan_page).status_code, status, user)

    def test_anonymous_users_go_to_login(self):
        self.client.logout()
        for url in self.URLS:
            response = self.client.get(url)
            self.assertEqual(response.status_code, 302)
            self.assertTrue(response["Location"].startswith("/login/"), url)


class QueryCountTests(DashboardTestCase):
    """Each page reads a fixed number of rows sets, whatever the size of the book."""

    PAGES = {
        OVERVIEW: {},
        RISK: {},
        CONCENTRATION: {},
        LOANS: {"min_dpd": 30},
    }

    def counts(self, *, other_process: bool = False, **extra) -> dict[str, int]:
        """Queries of each page's second request; ``other_process``: as another process would
        serve it (nothing in its own memory, the page's body in the shared cache)."""
        from django.core.cache import caches
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        loan = reverse("kpis:loan", args=[self.book.loans["L1"].pk])
        found = {}
        for url, params in [*self.PAGES.items(), (loan, {})]:
            params = {**params, **extra}
            self.client.get(url, params)  # warm caches (content types, session)
            if other_process:
                caches["pages"].clear()
            with CaptureQueriesContext(connection) as queries:
                self.assertEqual(self.client.get(url, params).status_code, 200)
            found["loan" if url == loan else url] = len(queries)
        return found

    def test_query_counts_do_not_grow_with_the_book(self):
        # Computed (the page cache off): session, user, the user's permissions (one query,
        # abaco.backends), then the page's own reads. Served again to the same user by the same
        # process: the same three and the data version (and the overview's insight id, checked
        # per request; every page's data-through date comes with the page). By another
        # process: the shared cache's read besides (and the overview's insight, not yet in
        # that process's memory).
        computed = {OVERVIEW: 11, RISK: 11, CONCENTRATION: 11, LOANS: 11, "loan": 11}
        served = {OVERVIEW: 5, RISK: 4, CONCENTRATION: 4, LOANS: 4, "loan": 4}
        shared = {**{page: count + 1 for page, count in served.items()}, OVERVIEW: 7}

        def check(**extra) -> None:
            with self.settings(PAGE_CACHE_SECONDS=0):
                self.assertEqual(self.counts(**extra), computed)
            self.assertEqual(self.counts(**extra), served)
            self.assertEqual(self.counts(other_process=True, **extra), shared)

        check()
        more_loans(self.book, count=40)
        self.book.compute()
        restated = LoanState.objects.filter(run__as_of=AS_OF, run__basis="restated")
        self.assertEqual(restated.count(), 5 + 40)
        check(basis="restated")


class ResidualTest(CastTestCase):
    """Loans counted as repaid but for a residual (definitions v2) are named on the risk page."""

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        residual_book().compute()

    def test_the_risk_page_names_the_loans_counted_repaid_with_a_residual(self):
        self.client.force_login(self.manager)
        response = self.client.get(RISK, {"as_of": RESIDUAL_MONTH_ENDS[-1].isoformat()})
        self.assertContains(
            response,
            "Counted as repaid, with a residual of at most 0.02 each left unpaid: 3 loans, "
            "0.04 USD in all.",
        )
        # 12-31 has no residual: no line.
        response = self.client.get(RISK, {"as_of": RESIDUAL_MONTH_ENDS[0].isoformat()})
        self.assertNotContains(response, 'id="residual"')
