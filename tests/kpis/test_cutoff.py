"""Data cut-off, automatic restatement and rates that say when they mean nothing (issue 17,
part A), on the demo book plus a small tape, with the clock a year after the data."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import time_machine
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.test import SimpleTestCase, override_settings
from django.urls import reverse

from abaco.dates import month_end, month_ends
from integrations.models import PipelineRun
from integrations.pipelines import book_stale_check, pipeline_run
from kpis.engine import snapshot_compute
from kpis.models import Insight, KpiValue, SnapshotRun
from kpis.selectors.common import (
    Period,
    rate_not_meaningful,
    rate_period,
    roll_not_meaningful,
)
from kpis.selectors.restatement import stale_dates
from loans.models import Batch, Customer
from loans.selectors import book_data_through, data_age
from loans.services import tape_import
from tests.base import CastTestCase
from tests.loans.tape_files import tape_valid, tape_write

MADRID = ZoneInfo("Europe/Madrid")
DEMO_AS_OF = date(2025, 11, 30)
# The daily job runs a year after the data ends.
A_YEAR_LATER = datetime(2026, 12, 1, 7, 30, tzinfo=MADRID)
OVERVIEW = reverse("kpis:overview")
RISK = reverse("kpis:risk")


def text(response) -> str:
    """A CSV export's body (streamed)."""
    return b"".join(response.streaming_content).decode("utf-8-sig")


def tape_folder(tmp, name: str, tape) -> str:
    folder = tmp / name
    folder.mkdir()
    tape_write(folder, **tape)
    return str(folder)


class DailyFlowTests(CastTestCase):
    """The demo book and a small Cascade tape, then kpi_daily a year after the data."""

    databases = {"default", "progress"}  # kpi_restate reports its progress on its own alias

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        import tempfile
        from pathlib import Path

        cls.tmp = Path(tempfile.mkdtemp(prefix="cutoff-"))
        with time_machine.travel(datetime(2025, 12, 1, 9, 0, tzinfo=MADRID)):
            call_command(
                "demo_data", "--loans", "200", "--customers", "30", "--seed", "3", stdout=StringIO()
            )
        cls.tape = tape_valid(6)
        # The lender's export says its data runs to the demo's date (the uploader gives it).
        tape_import(
            path=tape_folder(cls.tmp, "real", cls.tape),
            source="cascade",
            job="test",
            data_through=DEMO_AS_OF,
        )
        with time_machine.travel(A_YEAR_LATER):
            cls.daily = pipeline_run(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)

    def setUp(self) -> None:
        self.client.force_login(self.manager)

    def test_every_batch_that_feeds_loans_records_its_cut_off(self):
        demo = Batch.objects.get(source="demo", kind="transactions")
        self.assertIsNotNone(demo.data_through)
        self.assertLessEqual(demo.data_through, DEMO_AS_OF)
        real = Batch.objects.get(source="cascade", kind="loans")
        self.assertEqual(real.data_through, DEMO_AS_OF)  # the date the uploader gave
        # The book's data-through date is the earliest of the sources' latest cut-offs.
        self.assertEqual(book_data_through(), min(demo.data_through, DEMO_AS_OF))

    def test_kpi_daily_stops_at_data_through_and_says_so(self):
        through = book_data_through()
        self.assertEqual(self.daily.status, "succeeded", self.daily.error)
        log = self.daily.steps.get(name="snapshots").log
        self.assertIn(f"computing up to data-through {through} (yesterday was 2026-11-30)", log)
        latest = SnapshotRun.objects.order_by("-as_of").first()
        self.assertEqual(latest.as_of, through)
        self.assertFalse(SnapshotRun.objects.filter(as_of__gt=through).exists())
        # Every month-end of the data's last year is there, nothing of the year after it.
        self.assertLessEqual(
            set(month_ends(date(2025, 1, 1), through)), SnapshotRun.objects.as_of_dates()
        )

    def test_segments_are_computed_from_the_book_in_kpi_daily(self):
        segments = self.daily.steps.get(name="segments")
        self.assertEqual(segments.status, "succeeded")
        # Without HubSpot every borrower with a loan has a behavioural segment.
        self.assertFalse(Customer.objects.filter(segment="").exists())
        members = set(
            KpiValue.objects.filter(
                run__as_of=book_data_through(), code="outstanding_principal", dimension="segment"
            ).values_list("member", flat=True)
        )
        self.assertTrue(members)
        self.assertNotIn("", members)

    def test_the_dashboard_opens_at_data_through_with_its_age_on_every_page(self):
        through = book_data_through()
        with time_machine.travel(A_YEAR_LATER):
            for url in (OVERVIEW, RISK, reverse("integrations:status")):
                response = self.client.get(url)
                self.assertContains(
                    response,
                    f"Data through <strong>{through:%Y-%m-%d}</strong>\n  "
                    f"({(date(2026, 12, 1) - through).days} days ago)",
                )
                # A year old: red, and stale.
                self.assertContains(response, 'class="data-through red"')
                self.assertContains(response, "stale: no new data")
            # The admin's pages too, its index (which has no breadcrumbs) included.
            self.client.force_login(self.steward)
            for url in (reverse("admin:index"), reverse("admin:loans_batch_changelist")):
                self.assertContains(
                    self.client.get(url), f"Data through <strong>{through:%Y-%m-%d}</strong>"
                )
            self.client.force_login(self.manager)
            response = self.client.get(OVERVIEW)
        # (Served from this process's memory, as the manager saw it above: the page, no context.)
        self.assertContains(response, f'<option value="{through:%Y-%m-%d}" selected>')
        self.assertNotContains(response, "Beyond data")
        # The segment slice is labelled, member by member.
        self.assertContains(response, "Segment:")
        self.assertNotContains(response, ">unsegmented<")

    def test_a_snapshot_beyond_the_data_is_computed_only_when_asked_and_badged(self):
        through = book_data_through()
        beyond = month_end(through + timedelta(days=40))
        snapshot_compute(as_of=beyond, job="compute_kpis")
        with time_machine.travel(A_YEAR_LATER):
            default = self.client.get(OVERVIEW)
            self.assertEqual(default.context["s"].as_of, through)  # never the default
            self.assertContains(default, f"{beyond:%Y-%m-%d} (beyond data)")
            for url in (OVERVIEW, RISK, reverse("kpis:concentration"), reverse("kpis:loans")):
                asked = self.client.get(url, {"as_of": beyond.isoformat()})
                self.assertContains(asked, "badge beyond-data")
                self.assertContains(asked, 'id="beyond-data"')

    def test_readyz_reports_the_data_through_date(self):
        with time_machine.travel(A_YEAR_LATER):
            body = self.client.get("/readyz").json()
        through = book_data_through()
        self.assertEqual(body["data_through"], through.isoformat())
        self.assertEqual(body["data_age_days"], (date(2026, 12, 1) - through).days)
        self.assertTrue(body["data_stale"])

    @override_settings(ADMINS=[("Ops", "ops@abaco.example")])
    def test_a_stale_book_alerts_once_like_a_failed_pipeline(self):
        cache.clear()
        with time_machine.travel(A_YEAR_LATER):
            age = book_stale_check()
            book_stale_check()  # the watch runs every 15 minutes: one alert per date
        self.assertTrue(age.stale)
        self.assertEqual(len(mail.outbox), 1)
        self.assertIn(
            f"no new loan data since {book_data_through():%Y-%m-%d}", mail.outbox[0].subject
        )
        self.assertIn("demo", mail.outbox[0].body)

    def test_a_backdated_load_queues_the_restatement_and_the_pages_use_it(self):
        through = book_data_through()
        # A payment of L00001 (disbursed early in 2024) was bigger than the tape said: every
        # snapshot since changes.
        corrected = {kind: [dict(row) for row in rows] for kind, rows in self.tape.items()}
        first = next(t for t in corrected["transactions"] if t["transaction_type"] == "PAYMENT")
        paid_on = first["date_paid"]
        first["principal"] = Decimal(first["principal"]) + Decimal("300.00")
        affected = sorted(d for d in SnapshotRun.objects.as_of_dates() if d >= paid_on)
        self.assertTrue(affected)
        # Loaded, not yet committed: the pages say a recomputation is pending.
        with self.captureOnCommitCallbacks(execute=False) as queued:
            tape_import(
                path=tape_folder(self.tmp, "corrected", corrected),
                source="cascade",
                job="test",
                data_through=DEMO_AS_OF,
            )
        self.assertEqual(stale_dates(), affected)
        with time_machine.travel(A_YEAR_LATER):
            pending = self.client.get(OVERVIEW)
        self.assertContains(pending, 'id="restatement-pending"')
        self.assertContains(pending, "Its recomputation as restated is pending or running")
        batch = (
            Batch.objects.filter(source="cascade", kind="transactions", status="loaded")
            .order_by("-created_at")
            .first()
        )
        self.assertEqual(batch.changes_from, paid_on)
        self.client.force_login(self.steward)
        page = self.client.get(reverse("admin:loans_batch_change", args=[batch.pk]))
        self.assertContains(page, "Snapshots this batch changed")
        self.assertContains(page, f"{len(affected)} stored snapshot dates on or after it")
        self.assertContains(page, "Pending recomputation")
        # The load's commit runs what it queued (the cluster in sync mode): kpi_restate, and the
        # journal entries of the import.
        with time_machine.travel(A_YEAR_LATER):
            for callback in queued:
                callback()
        run = PipelineRun.objects.get(job="kpi_restate")
        self.assertEqual((run.status, run.trigger), ("succeeded", "load"), run.error)
        self.assertEqual(run.params["changes_from"], paid_on.isoformat())
        self.assertEqual(run.progress, 1.0)
        log = run.steps.get(name="restate").log
        self.assertIn(
            f"recomputing {len(affected)} snapshot(s): {affected[0]} … {affected[-1]}", log
        )
        self.assertIn("Restated (the numbers changed since it was reported", log)
        # As reported kept, restated beside it.
        for day in affected:
            self.assertEqual(
                set(SnapshotRun.objects.of_date(day).values_list("basis", flat=True)),
                {"as_reported", "restated"},
            )
        self.assertEqual(stale_dates(), [])
        # The newest restatement gets its insight at once (the overview shows it by default).
        newest = SnapshotRun.objects.of_date(affected[-1]).get(basis="restated")
        self.assertTrue(Insight.objects.filter(run=newest, dimension="portfolio").exists())
        self.assertIn(f"{affected[-1]} portfolio:", run.steps.get(name="insights").log)
        page = self.client.get(reverse("admin:loans_batch_change", args=[batch.pk]))
        self.assertContains(page, "all recomputed with this batch")
        # The trend uses one basis for all its dates: restated by default, as reported by switch.
        self.client.force_login(self.manager)
        with time_machine.travel(A_YEAR_LATER):
            restated = self.client.get(OVERVIEW)
            reported = self.client.get(OVERVIEW, {"basis": "as_reported"})
        self.assertNotContains(restated, 'id="restatement-pending"')
        self.assertEqual(restated.context["s"].as_of, through)
        self.assertEqual(restated.context["s"].run.basis, "restated")
        # The data status names the latest date's standing run, on either basis shown.
        standing = SnapshotRun.objects.get(as_of=through, basis="restated")
        for page in (restated, reported):
            self.assertEqual(page.context["s"].latest_run, standing)
            self.assertContains(page, "· Restated · computed")
            self.assertContains(page, f"· {standing.loans} loans with a balance")
        trend_runs = restated.context["s"].month_end_runs(months=24)
        self.assertTrue(
            all(r.basis == "restated" for r in trend_runs if r.as_of >= paid_on), trend_runs
        )
        # At the payment's month-end the loan owes 300 less, restated.
        trend = restated.context["o"].trend
        at = trend["labels"].index(month_end(paid_on).isoformat())
        restated_ob = trend["series"]["outstanding_principal"][at]
        reported_ob = reported.context["o"].trend["series"]["outstanding_principal"][at]
        self.assertAlmostEqual(reported_ob - restated_ob, 300.0, places=2)
        self.assertTrue(
            all(r.basis == "as_reported" for r in reported.context["s"].month_end_runs(months=24))
        )


class RecomputeSnapshotsTests(CastTestCase):
    """A steward's "Recompute snapshots" for a date range, in the cluster."""

    databases = {"default", "progress"}

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        from tests.kpis.books import dashboard_book

        cls.book = dashboard_book()
        cls.book.compute()

    def test_a_steward_recomputes_a_range_as_a_pipeline_run(self):
        self.client.force_login(self.steward)
        status = self.client.get(reverse("integrations:status"))
        self.assertContains(status, "Recompute snapshots")
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                reverse("integrations:recompute"), {"from": "2025-02-01", "to": "2025-03-31"}
            )
        self.assertEqual(response.status_code, 302)
        run = PipelineRun.objects.get(job="kpi_restate")
        self.assertEqual((run.status, run.created_by), ("succeeded", self.steward), run.error)
        self.assertEqual(run.params, {"from": "2025-02-01", "to": "2025-03-31"})
        self.assertIn("recomputing 2 snapshot(s): 2025-02-28 … 2025-03-31", run.steps.get().log)

    def test_a_manager_may_not_recompute_and_a_get_does_nothing(self):
        self.client.force_login(self.manager)
        self.assertNotContains(
            self.client.get(reverse("integrations:status")), "Recompute snapshots"
        )
        response = self.client.post(
            reverse("integrations:recompute"), {"from": "2025-02-01", "to": "2025-03-31"}
        )
        self.assertEqual(response.status_code, 403)
        self.client.force_login(self.steward)
        self.assertEqual(self.client.get(reverse("integrations:recompute")).status_code, 405)
        self.assertFalse(PipelineRun.objects.filter(job="kpi_restate").exists())

    def test_a_range_that_ends_before_it_starts_is_refused(self):
        self.client.force_login(self.steward)
        response = self.client.post(
            reverse("integrations:recompute"),
            {"from": "2025-03-31", "to": "2025-02-01"},
            follow=True,
        )
        self.assertContains(response, "The range starts (2025-03-31) after it ends (2025-02-01).")
        self.assertFalse(PipelineRun.objects.filter(job="kpi_restate").exists())


class NotMeaningfulTests(SimpleTestCase):
    """Each rule that turns a rate into "n/m", with its reason."""

    MONTH = rate_period(date(2025, 11, 30))
    PARTIAL = rate_period(date(2025, 12, 10))

    def test_a_full_month_and_a_partial_one_name_their_length(self):
        self.assertEqual(self.MONTH.label, "2025-10-31 → 2025-11-30 (1 month)")
        self.assertEqual(self.PARTIAL.label, "2025-11-30 → 2025-12-10 (10 days, a partial month)")

    def test_smm_outside_zero_one_is_not_meaningful(self):
        reason = rate_not_meaningful(
            "smm", Decimal("-0.0392"), period=self.MONTH, smm=Decimal("-0.0392")
        )
        self.assertIn("SMM -3.92% is outside [0, 1]", reason)
        self.assertIn(
            "outside [0, 1]",
            rate_not_meaningful("smm", Decimal("1.2"), period=self.MONTH, smm=Decimal("1.2")),
        )
        self.assertEqual(
            rate_not_meaningful("smm", Decimal("0.05"), period=self.MONTH, smm=Decimal("0.05")), ""
        )

    def test_cpr_from_such_an_smm_is_not_meaningful(self):
        reason = rate_not_meaningful(
            "cpr", Decimal("-0.5859"), period=self.MONTH, smm=Decimal("-0.0392")
        )
        self.assertEqual(reason, "CPR comes from an SMM outside [0, 1] (-3.92%)")
        # Even where the engine stored no CPR at all.
        self.assertTrue(rate_not_meaningful("cpr", None, period=self.MONTH, smm=Decimal("-2")))

    def test_cdr_annualised_from_a_partial_month_is_not_meaningful(self):
        reason = rate_not_meaningful("cdr", Decimal("0.3"), period=self.PARTIAL, smm=None)
        self.assertEqual(reason, "annualised from a partial month (10 days to 2025-12-10)")
        self.assertEqual(rate_not_meaningful("cdr", Decimal("0.1"), period=self.MONTH), "")
        # A monthly rate over the partial month is shown, its header names the length.
        self.assertEqual(
            rate_not_meaningful("liquidation_rate", Decimal("0.01"), period=self.PARTIAL), ""
        )

    def test_roll_rates_between_dates_that_are_not_consecutive_month_ends(self):
        self.assertEqual(
            roll_not_meaningful(self.PARTIAL),
            "2025-11-30 and 2025-12-10 are not consecutive month-ends (10 days): a roll rate is "
            "a month's move",
        )
        self.assertEqual(roll_not_meaningful(self.MONTH), "")
        self.assertFalse(Period(date(2025, 9, 30), date(2025, 11, 30)).full_month)


class NotMeaningfulPageTests(CastTestCase):
    """The risk page and its exports show "n/m" and the reason instead of the number."""

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        from tests.kpis.books import AS_OF, dashboard_book

        cls.book = dashboard_book()
        cls.book.compute()
        cls.partial = AS_OF + timedelta(days=10)
        # The data runs past the month-end: the partial month is within the data.
        Batch.objects.filter(pk=cls.book.tape.transactions.pk).update(data_through=cls.partial)
        Batch.objects.filter(pk=cls.book.tape.loans.pk).update(data_through=cls.partial)
        snapshot_compute(as_of=cls.partial)

    def setUp(self) -> None:
        self.client.force_login(self.manager)

    def test_a_partial_month_shows_n_m_for_cdr_cpr_and_roll_rates_with_reasons(self):
        response = self.client.get(RISK, {"as_of": self.partial.isoformat()})
        self.assertContains(response, "(10 days, a partial month)")
        self.assertContains(response, 'id="roll-rates-nm"')
        self.assertContains(response, "are not consecutive month-ends (10 days)")
        html = response.content.decode()
        cdr = html[html.index('id="rate-cdr"') : html.index("</div>", html.index('id="rate-cdr"'))]
        self.assertIn("n/m", cdr)
        self.assertIn("annualised from a partial month (10 days", cdr)

    def test_the_rates_and_roll_rate_exports_carry_n_m_and_the_reason(self):
        response = self.client.get(
            RISK, {"as_of": self.partial.isoformat(), "format": "csv", "table": "rates"}
        )
        rows = {row["kpi"]: row for row in csv.DictReader(io.StringIO(text(response)))}
        self.assertEqual(rows["cdr"]["value"], "n/m")
        self.assertIn("annualised from a partial month", rows["cdr"]["note"])
        self.assertIn("10 days, a partial month", rows["cdr"]["period"])
        response = self.client.get(
            RISK, {"as_of": self.partial.isoformat(), "format": "csv", "table": "roll_rates"}
        )
        lines = list(csv.DictReader(io.StringIO(text(response))))
        self.assertTrue(lines)
        self.assertTrue(all(line["current"] == "n/m" for line in lines))
        self.assertIn("not consecutive month-ends", lines[0]["note"])

    def test_a_month_end_shows_its_numbers_and_a_one_month_header(self):
        from tests.kpis.books import AS_OF

        response = self.client.get(RISK, {"as_of": AS_OF.isoformat()})
        self.assertContains(response, "(1 month)")
        self.assertNotContains(response, 'id="roll-rates-nm"')
        self.assertContains(response, 'id="roll-rates"')


def test_data_age_levels_follow_the_settings(settings):
    settings.DATA_AGE_AMBER_DAYS, settings.DATA_AGE_RED_DAYS, settings.DATA_STALE_DAYS = 3, 7, 5
    today = date(2026, 12, 1)
    assert data_age(today=today, through=date(2026, 11, 30)).level == ""
    assert data_age(today=today, through=date(2026, 11, 28)).level == "amber"
    assert data_age(today=today, through=date(2026, 11, 24)).level == "red"
    assert not data_age(today=today, through=date(2026, 11, 27)).stale
    assert data_age(today=today, through=date(2026, 11, 26)).stale
