"""Dashboard pages served from the page cache (kpis.pagecache): computed once per snapshot state,
revalidated by ETag, and replaced as soon as a recomputation, a restatement or a load changes
what they show."""

from __future__ import annotations

from datetime import date

from django.db import connection
from django.test.utils import CaptureQueriesContext

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from loans.models import BatchChange
from tests.factories import batch_create
from tests.kpis.books import AS_OF
from tests.kpis.test_dashboards import CONCENTRATION, LOANS, OVERVIEW, DashboardTestCase


def _reads_kpi_values(queries: CaptureQueriesContext) -> bool:
    return any("kpis_kpivalue" in query["sql"] for query in queries.captured_queries)


class PageCacheTests(DashboardTestCase):
    def test_a_page_is_computed_once_then_served_from_the_cache(self):
        first = self.client.get(OVERVIEW)
        with CaptureQueriesContext(connection) as queries:
            second = self.client.get(OVERVIEW)
        self.assertFalse(_reads_kpi_values(queries))
        self.assertIn("12,500", self.tile(second, "outstanding_principal"))
        self.assertEqual(self.tile(first, "par_30"), self.tile(second, "par_30"))
        # The per-user chrome is rendered per request, with this user's name.
        self.assertContains(second, "Sign out mia.manager")

    def test_browsers_get_a_304_until_something_changes(self):
        etag = self.client.get(OVERVIEW)["ETag"]
        again = self.client.get(OVERVIEW, headers={"if-none-match": etag})
        self.assertEqual(again.status_code, 304)
        self.assertEqual(again["ETag"], etag)
        # Book data is never stored by the browser (issue 18): no-store beside the validator.
        self.assertIn("private", again["Cache-Control"])
        self.assertIn("no-store", again["Cache-Control"])
        # Another user's page (another name in the header) never matches it.
        self.client.force_login(self.admin)
        other = self.client.get(OVERVIEW, headers={"if-none-match": etag})
        self.assertEqual(other.status_code, 200)
        self.assertContains(other, "Sign out ada.admin")
        # A new snapshot changes the page: the old validator no longer matches.
        self.client.force_login(self.manager)
        snapshot_compute(as_of=date(2025, 4, 30))
        newer = self.client.get(OVERVIEW, headers={"if-none-match": etag})
        self.assertEqual(newer.status_code, 200)
        # (2025-04-30 lies beyond the book's data: stored, offered, never the default.)
        self.assertEqual(newer.context["s"].as_of, date(2025, 3, 31))
        self.assertContains(newer, "2025-04-30 (beyond data)")

    def test_the_cache_is_replaced_after_a_restatement(self):
        # Cached first: the restated basis shows the as-reported run while there is none.
        before = self.client.get(OVERVIEW, {"basis": "restated"})
        self.assertIn("12,500", self.tile(before, "outstanding_principal"))
        self.client.get(OVERVIEW)
        # A late correction: L2 (4,000 due 2025-01-15) was paid in full on 2025-03-20.
        self.book.cash("L2", date(2025, 3, 20), principal="4000")
        run = snapshot_compute(as_of=AS_OF)
        self.assertEqual(run.basis, SnapshotRun.Basis.RESTATED)
        after = self.client.get(OVERVIEW, {"basis": "restated"})
        self.assertEqual(after.context["s"].basis, "restated")
        self.assertIn("8,500", self.tile(after, "outstanding_principal"))
        # The as-reported page keeps its numbers and now offers the restatement.
        reported = self.client.get(OVERVIEW, {"basis": "as_reported"})
        self.assertIn("12,500", self.tile(reported, "outstanding_principal"))
        self.assertContains(reported, "basis=restated")

    def test_the_cache_is_replaced_when_a_recomputed_run_is_stored_again(self):
        self.assertIn("12,500", self.tile(self.client.get(OVERVIEW), "outstanding_principal"))
        # The date's runs deleted (as the definition-version backfill or an operator may) and
        # recomputed after a correction: the same basis, other numbers.
        SnapshotRun.objects.filter(as_of=AS_OF).delete()
        self.book.cash("L2", date(2025, 3, 20), principal="4000")
        self.assertEqual(snapshot_compute(as_of=AS_OF).basis, SnapshotRun.Basis.AS_REPORTED)
        self.assertIn("8,500", self.tile(self.client.get(OVERVIEW), "outstanding_principal"))

    def test_a_recomputation_whose_numbers_stand_still_replaces_the_page(self):
        # The numbers stand, so the new run is dropped and the as-reported run is kept, but it
        # is now provisional: no run is added and no batch is loaded, yet the page changes.
        self.assertNotContains(self.client.get(OVERVIEW), "Provisional")
        BatchChange.objects.create(
            batch=self.book.tape.loans,
            kind="loans",
            key="L1",
            fields={"term": [1, 2]},
            review=BatchChange.Review.PENDING,
        )
        runs = SnapshotRun.objects.count()
        self.assertEqual(snapshot_compute(as_of=AS_OF).basis, SnapshotRun.Basis.AS_REPORTED)
        self.assertEqual(SnapshotRun.objects.count(), runs)
        self.assertContains(self.client.get(OVERVIEW), "Provisional")

    def test_a_load_replaces_the_data_status(self):
        self.client.get(OVERVIEW)
        newer = batch_create(source="hubspot", kind="customers")
        batches = self.client.get(OVERVIEW).context["o"].batches
        self.assertIn(newer.pk, [batch.pk for batch in batches])

    def test_pii_clearance_is_part_of_the_key(self):
        self.client.force_login(self.admin)
        self.assertContains(self.client.get(CONCENTRATION), "Name of C1")
        self.client.force_login(self.manager)
        masked = self.client.get(CONCENTRATION)
        self.assertEqual(masked.status_code, 200)
        self.assertNotContains(masked, "Name of C1")

    def test_drill_down_pages_are_cached_and_exports_are_not(self):
        computed = self.loan_ids(self.client.get(LOANS, {"min_dpd": 30}))
        self.assertEqual(computed, ["L2", "L4"])
        with CaptureQueriesContext(connection) as queries:
            page = self.client.get(LOANS, {"min_dpd": 30})
        self.assertFalse(any("kpis_loanstate" in q["sql"] for q in queries.captured_queries))
        self.assertEqual(self.loan_ids(page), computed)
        export = self.client.get(LOANS, {"min_dpd": 30, "format": "csv", "table": "loans"})
        self.assertEqual(export.status_code, 200)
        rows = b"".join(export.streaming_content).decode().strip().splitlines()
        self.assertEqual(len(rows), 1 + 2)

    def test_the_page_cache_can_be_turned_off(self):
        with self.settings(PAGE_CACHE_SECONDS=0):
            response = self.client.get(OVERVIEW)
            self.assertNotIn("ETag", response)
            with CaptureQueriesContext(connection) as queries:
                self.client.get(OVERVIEW)
            self.assertTrue(_reads_kpi_values(queries))
