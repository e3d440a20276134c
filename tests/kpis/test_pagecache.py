"""Dashboard, loan and customer pages served from the page cache (kpis.pagecache): computed once
per snapshot state, revalidated by ETag, and replaced as soon as a recomputation, a restatement,
a load, an edit in the admin or a steward's review changes what they show."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

from auditlog.context import set_actor
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kpis.engine import snapshot_compute
from kpis.insights.services import insight_generate
from kpis.models import SnapshotRun
from kpis.pagecache import CONTENT_PERMISSIONS
from loans.models import BatchChange
from loans.services import batch_changes_review
from tests.base import admin_form_data
from tests.factories import batch_create
from tests.kpis.books import AS_OF
from tests.kpis.test_dashboards import CONCENTRATION, LOANS, OVERVIEW, RISK, DashboardTestCase


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


CSRF_VALUE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class ServedPageTests(DashboardTestCase):
    """The second level: each process keeps the whole page it served a user today, chrome
    included, and adds only what each request adds."""

    def setUp(self) -> None:
        super().setUp()
        caches["pages"].clear()

    def test_a_repeated_request_renders_nothing_and_masks_its_csrf_tokens_afresh(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.manager)
        first = client.get(OVERVIEW)
        second = client.get(OVERVIEW)
        self.assertTrue(first.templates)
        self.assertEqual(second.templates, [])  # not even the chrome or the insight
        self.assertEqual(first["ETag"], second["ETag"])
        self.assertNotIn("<!-- csrf -->", second.content.decode())
        tokens = CSRF_VALUE.findall(second.content.decode())
        # The sign-out form and the insight's button, each masked afresh, as Django masks
        # each render's: none is the token an earlier response carried.
        self.assertEqual(len(tokens), 2)
        self.assertTrue(set(tokens).isdisjoint(CSRF_VALUE.findall(first.content.decode())))
        # The token of a page served from memory is the user's: it signs the user out.
        self.assertEqual(
            client.post(reverse("logout"), {"csrfmiddlewaretoken": tokens[0]}).status_code, 302
        )
        self.assertEqual(client.get(OVERVIEW).status_code, 302)  # to the login page

    def test_each_user_gets_a_page_of_their_own(self):
        other = User.objects.create_user("max.manager")
        other.groups.set(self.manager.groups.all())
        self.client.get(RISK)
        self.assertContains(self.client.get(RISK), "Sign out mia.manager")
        self.client.force_login(other)
        self.client.get(RISK)
        self.assertContains(self.client.get(RISK), "Sign out max.manager")
        self.assertNotContains(self.client.get(RISK), "mia.manager")

    def test_a_page_with_a_message_is_shown_once_and_never_kept(self):
        self.client.get(OVERVIEW)
        form = {"as_of": AS_OF.isoformat(), "dimension": "portfolio", "member": ""}
        self.client.post(reverse("kpis:insight_regenerate"), form)
        told = self.client.get(OVERVIEW)
        self.assertContains(told, "is being written")
        self.assertNotContains(self.client.get(OVERVIEW), "is being written")
        self.assertNotContains(self.client.get(OVERVIEW), "is being written")

    def test_a_new_insight_shows_at_once(self):
        self.assertContains(self.client.get(OVERVIEW), "No insight has been written")
        self.client.get(OVERVIEW)
        run = SnapshotRun.objects.get(as_of=AS_OF, basis=SnapshotRun.Basis.AS_REPORTED)
        with self.settings(OPENAI_ENABLED=False):
            insight = insight_generate(run=run, job="kpi_daily")
        page = self.client.get(OVERVIEW)
        self.assertNotContains(page, "No insight has been written")
        self.assertContains(page, insight.headline)

    def test_the_data_age_counts_the_days_of_a_page_kept_from_yesterday(self):
        today = timezone.localdate()
        ages = []
        for day in (today, today, today + timedelta(days=1)):
            with mock.patch("django.utils.timezone.localdate", return_value=day):
                page = self.client.get(RISK).content.decode()
            ages.append(int(re.search(r"\((\d+) days ago\)", page).group(1)))
        self.assertEqual(ages, [ages[0], ages[0], ages[0] + 1])


def _reads(queries: CaptureQueriesContext, *tables: str) -> list[str]:
    return [t for t in tables if any(t in q["sql"] for q in queries.captured_queries)]


class RecordPageCacheTests(DashboardTestCase):
    """Loan and customer pages: what they show moves only with the data version, which an edit
    in the admin and a steward's review move too."""

    def setUp(self) -> None:
        super().setUp()
        self.loan = self.book.loans["L1"]
        self.url = reverse("kpis:loan", args=[self.loan.pk])

    def test_a_loan_page_is_computed_once_then_served_from_the_cache(self):
        first = self.client.get(self.url)
        with CaptureQueriesContext(connection) as queries:
            second = self.client.get(self.url)
        book = ("loans_loan", "loans_installment", "loans_transaction", "kpis_loanstate")
        self.assertEqual(_reads(queries, *book), [])
        self.assertContains(second, "2025-03-10")
        self.assertContains(second, "Sign out mia.manager")
        states = re.compile(r'<table class="figures" id="states">.*?</table>', re.S)
        self.assertEqual(
            states.search(first.content.decode())[0], states.search(second.content.decode())[0]
        )

    def test_the_data_through_line_comes_with_the_kept_page_and_moves_with_a_load(self):
        self.assertContains(self.client.get(self.url), "Data through <strong>2025-03-31</strong>")
        batch_create(kind="loans", data_through=date(2025, 4, 30))
        self.assertContains(self.client.get(self.url), "Data through <strong>2025-04-30</strong>")
        with CaptureQueriesContext(connection) as queries:
            self.client.get(self.url)
        # The data version counts the batches; nothing reads their dates again.
        self.assertEqual(_reads(queries, '"loans_batch"."data_through"'), [])

    def test_customer_pages_are_cached_too(self):
        url = reverse("kpis:customer", args=[self.loan.customer_id])
        self.assertContains(self.client.get(url), self.loan.loan_id)
        with CaptureQueriesContext(connection) as queries:
            self.assertContains(self.client.get(url), self.loan.loan_id)
        self.assertEqual(_reads(queries, "loans_customer", "loans_loan"), [])

    def test_an_edit_in_the_admin_replaces_the_loan_page(self):
        self.client.force_login(self.admin)
        self.assertNotContains(self.client.get(self.url), "loan_status: Current → Late")
        change = reverse("admin:loans_loan_change", args=[self.loan.pk])
        data = admin_form_data(self.client.get(change))
        self.assertEqual(self.client.post(change, {**data, "loan_status": "Late"}).status_code, 302)
        page = self.client.get(self.url)
        self.assertContains(page, "loan_status: Current → Late")
        self.assertContains(page, "Late · tape DPD")

    def test_an_edit_of_the_customer_replaces_its_loans_pages(self):
        self.client.force_login(self.admin)
        self.assertContains(self.client.get(self.url), "Name of C1")
        customer = self.loan.customer
        with set_actor(self.admin):
            customer.name = "Renamed C1"
            customer.save()
        self.assertContains(self.client.get(self.url), "Renamed C1")

    def test_a_steward_review_replaces_the_loan_page(self):
        newer = batch_create(kind="loans")
        BatchChange.objects.create(
            batch=newer,
            kind="loans",
            key="L1",
            fields={"interest_rate": ["0.24", "0.26"]},
            review=BatchChange.Review.PENDING,
        )
        self.assertContains(self.client.get(self.url), "Waiting for a steward")
        # The review's journal entry is written when its transaction commits.
        with self.captureOnCommitCallbacks(execute=True):
            batch_changes_review(
                changes=BatchChange.objects.filter(batch=newer),
                accept=False,
                reason="The platform misread the rate",
                by=self.steward,
            )
        self.assertContains(self.client.get(self.url), "Rejected: The platform misread the rate")

    def test_a_new_run_adds_its_state_to_the_loan_page(self):
        self.assertNotContains(self.client.get(self.url), "2025-04-30")
        snapshot_compute(as_of=date(2025, 4, 30))
        self.assertContains(self.client.get(self.url), "2025-04-30")

    def test_pii_clearance_is_part_of_the_loan_pages_key(self):
        self.client.force_login(self.admin)
        self.assertContains(self.client.get(self.url), "Name of C1")
        self.client.force_login(self.manager)
        self.assertNotContains(self.client.get(self.url), "Name of C1")
        # An auditor reads loan pages but not the dashboards: no dashboard tabs on its copy.
        self.client.force_login(self.auditor)
        audited = self.client.get(self.url)
        self.assertContains(audited, "Who read this loan")
        self.assertNotContains(audited, 'aria-label="Dashboards"')

    def test_every_permission_a_cached_template_asks_about_is_in_the_key(self):
        # Not in the shared entry: the insight (kept per process under a key of its own, its
        # button's permission in it), the wrapper around a kept page (kept per user, the
        # chrome's permissions in the ETag), and the insights page (never kept).
        per_request = {"_insight.html", "_cached_page.html", "insights.html"}
        asked = set()
        for template in (Path(settings.BASE_DIR) / "templates" / "kpis").glob("*.html"):
            if template.name not in per_request:
                asked |= set(re.findall(r"perms\.(\w+\.\w+)", template.read_text()))
        self.assertTrue(asked)
        self.assertLessEqual(asked, set(CONTENT_PERMISSIONS))
