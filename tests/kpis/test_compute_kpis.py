"""The compute_kpis command, the daily job (kpi_daily) and its schedule and pipeline run."""

from __future__ import annotations

import ast
import json
import os
import pydoc
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django_q.models import Schedule, Task
from django_q.tasks import async_task

from integrations.models import PipelineRun
from integrations.schedules import JOBS
from integrations.tasks import pipeline_task
from kpis.engine import snapshot_compute
from kpis.models import (
    KpiValue,
    LoanState,
    RollRate,
    SnapshotRun,
    TopBorrower,
    VintagePoint,
)
from kpis.services import daily_cutoff, snapshots_compute
from loans.models import Batch
from tests.factories import batch_create
from tests.kpis import books as p
from tests.kpis.test_engine import (
    GOLDEN_PORTFOLIO,
    RESIDUAL_PORTFOLIO,
    RESIDUAL_ROLL_RATES,
    RESIDUAL_VINTAGES,
)

pytestmark = pytest.mark.django_db

MADRID = ZoneInfo("Europe/Madrid")
TODAY = date(2025, 4, 10)
YESTERDAY = date(2025, 4, 9)


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("compute_kpis", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def as_of_dates() -> set[date]:
    return SnapshotRun.objects.as_of_dates()


def book_with_cash_until(last_payment: date) -> p.Book:
    """First disbursement 2025-01-15 (L1), a second loan 2025-02-20 (L2), a payment on 03-10 and
    the last one on ``last_payment``."""
    book = p.Book()
    book.lend("L1", customer="C1", principal="5000", on=date(2025, 1, 15))
    book.due("L1", date(2025, 3, 15), "5000", interest="100")
    book.lend("L2", customer="C2", principal="2000", on=date(2025, 2, 20))
    book.due("L2", date(2025, 5, 20), "2000", interest="60")
    book.cash("L1", date(2025, 3, 10), "1000", interest="100")
    book.cash("L1", last_payment, "500")
    return book


# --- compute_kpis --as-of -------------------------------------------------------------------------


def test_logs_go_to_stderr_so_that_json_output_is_alone_on_stdout():
    """`compute_kpis --json | jq` must read one object: log lines never share stdout with it."""
    probe = "import django; django.setup(); import logging; logging.getLogger('kpis.engine').info('probe')"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "abaco.settings", "DEBUG": "true"},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout == ""
    assert json.loads(result.stderr.splitlines()[-1])["message"] == "probe"


def test_it_prints_the_portfolio_as_one_json_object_of_exact_decimal_strings():
    p.golden_book()
    payload = json.loads(run_command("--as-of", "2025-03-31", "--json"))
    tables = ("roll_rates", "vintages")
    kpis = {
        code: v for code, v in payload.items() if not code.startswith("_") and code not in tables
    }
    # Strings or null, never floats: every number reads back as the exact Decimal.
    assert all(v is None or isinstance(v, str) for v in kpis.values())
    assert {code: None if v is None else Decimal(v) for code, v in kpis.items()} == GOLDEN_PORTFOLIO
    # Ratios are fractions, money and counts plain decimals without padding zeros.
    assert [
        kpis[code] for code in ("par_30", "collection_rate", "outstanding_principal", "hhi")
    ] == [
        "0.1",
        "0.2",
        "10000",
        "3800",
    ]
    assert {code: payload[code] for code in payload if code.startswith("_")} == {
        "_as_of": "2025-03-31",
        "_basis": "as_reported",
        "_provisional": False,
        "_definition_version": 2,
    }
    run = SnapshotRun.objects.get()
    assert (run.as_of, run.job) == (p.GOLDEN_AS_OF, "compute_kpis")
    # No previous month-end snapshot: no roll rates. The month-end's vintage points: 2024-08 = L5
    # 1,500, written off with 1,000 (2/3) and 211 DPD (ever 30+); 2024-10 = L3 1,000 at 150 DPD;
    # 2025-01 = L1 + L4, 16 DPD at most; 2025-03 = L2 + L6, current.
    assert payload["roll_rates"] == []
    assert payload["vintages"] == [
        {"cohort": c, "months_on_book": m, "written_off_share": w, "ever_30_share": e}
        for c, m, w, e in (
            ("2024-08", 7, "0.6666666667", "1"),
            ("2024-10", 5, "0", "1"),
            ("2025-01", 2, "0", "0"),
            ("2025-03", 0, "0", "0"),
        )
    ]


def test_it_prints_the_roll_rates_from_the_previous_month_end_and_the_vintages_up_to_the_date():
    """The residual book (tests/kpis/test_engine.py works out its numbers): a loan repaid but
    for a cent rolls to repaid, one with three cents left to 31-60."""
    p.residual_book()
    december, january = p.RESIDUAL_MONTH_ENDS
    snapshot_compute(as_of=december)
    payload = json.loads(run_command("--as-of", january.isoformat(), "--json"))
    assert payload["roll_rates"] == RESIDUAL_ROLL_RATES
    assert payload["vintages"] == RESIDUAL_VINTAGES
    assert {code: Decimal(payload[code]) for code in RESIDUAL_PORTFOLIO} == RESIDUAL_PORTFOLIO
    # A later date that is no month-end: the roll rates from 01-31, the vintages of the month-ends.
    payload = json.loads(run_command("--as-of", "2025-02-10", "--json"))
    assert payload["vintages"] == RESIDUAL_VINTAGES
    assert payload["roll_rates"] == [
        {"from": "current", "to": "current", "balance": "2000", "share": "1"},
        {"from": "31_60", "to": "31_60", "balance": "700.03", "share": "1"},
    ]


def test_it_reports_the_run_and_why_it_is_provisional():
    p.golden_book()
    failed = batch_create(kind=Batch.Kind.LOANS, status=Batch.Status.FAILED)
    out = run_command("--as-of", "2025-03-31")
    assert "2025-03-31 (As reported): 5 loans with a balance" in out
    assert (
        f"provisional: the latest loans import from cascade (batch {failed.pk}) failed with errors"
        in out
    )


@pytest.mark.parametrize("bad", ["2025-13-01", "31/03/2025", "yesterday"])
def test_it_rejects_an_as_of_that_is_not_an_iso_date(bad):
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        run_command("--as-of", bad)
    assert not SnapshotRun.objects.exists()


@pytest.mark.parametrize("args", [(), ("--json",), ("--as-of", "2025-03-31", "--backfill")])
def test_it_needs_exactly_one_of_as_of_and_backfill(args):
    p.golden_book()
    with pytest.raises(CommandError, match="either --as-of"):
        run_command(*args)
    assert not SnapshotRun.objects.exists()


# --- compute_kpis --backfill ----------------------------------------------------------------------


def test_backfill_computes_every_month_end_since_the_first_disbursement_and_the_latest_day():
    # A payment dated after today (a tape error) does not pull the latest day past yesterday.
    book_with_cash_until(date(2025, 4, 20))
    with time_machine.travel(datetime(2025, 4, 10, 9, 0, tzinfo=MADRID)):
        out = run_command("--backfill")
    assert as_of_dates() == {date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31), YESTERDAY}
    assert set(SnapshotRun.objects.values_list("basis", "job")) == {
        (SnapshotRun.Basis.AS_REPORTED, "compute_kpis --backfill")
    }
    assert "4 snapshot(s) computed." in out


def test_backfill_if_empty_leaves_existing_snapshots_alone():
    book_with_cash_until(date(2025, 4, 5))
    with time_machine.travel(datetime(2025, 4, 10, 9, 0, tzinfo=MADRID)):
        run_command("--as-of", "2025-03-31")
        out = run_command("--backfill", "--if-empty")
    assert as_of_dates() == {date(2025, 3, 31)}
    assert "Snapshots exist: nothing to backfill." in out


def stored_snapshots() -> dict:
    """Everything a backfill stored, keyed by date, without ids or timings."""
    return {
        (model.__name__, run.as_of): sorted(
            model.objects.filter(run=run).values_list(*fields), key=repr
        )
        for run in SnapshotRun.objects.all()
        for model, fields in (
            (KpiValue, ("code", "dimension", "member", "value", "numerator", "denominator")),
            (LoanState, ("loan_id", "outstanding_principal", "dpd", "bucket", "written_off")),
            (RollRate, ("from_bucket", "to_bucket", "balance", "share")),
            (VintagePoint, ("cohort", "months_on_book", "disbursed", "written_off", "ever_30")),
            (TopBorrower, ("dimension", "member", "rank", "customer_id", "outstanding_principal")),
        )
    }


@pytest.mark.django_db(transaction=True)  # the dates' own connections see only committed rows
def test_a_backfill_on_several_connections_stores_what_one_connection_does():
    p.monthly_rates_book()  # March's rates and roll rates read February's snapshot
    with time_machine.travel(datetime(2025, 4, 10, 9, 0, tzinfo=MADRID)):
        # Inside a transaction everything runs on its connection: dates one after the other,
        # and each one's book facts (borrowers, new customers) on it too.
        with transaction.atomic():
            run_command("--backfill", "--jobs", "2")
        one_by_one = stored_snapshots()
        SnapshotRun.objects.all().delete()
        out = run_command("--backfill", "--jobs", "2")
    assert "9 snapshot(s) computed." in out
    # Month-ends from 2024-08 in date order, then the latest day.
    assert [line.split(":")[0] for line in out.splitlines()[:2]] == [
        str(SnapshotRun.objects.get(as_of=date(2024, 8, 31))),
        str(SnapshotRun.objects.get(as_of=date(2024, 9, 30))),
    ]
    assert stored_snapshots() == one_by_one
    march = SnapshotRun.objects.get(as_of=date(2025, 3, 31))
    assert KpiValue.objects.get(run=march, code="liquidation_rate", dimension="portfolio").value
    assert RollRate.objects.filter(run=march).exists()
    assert set(SnapshotRun.objects.values_list("basis", flat=True)) == {"as_reported"}


def test_backfill_of_an_empty_book_is_an_error():
    with pytest.raises(CommandError, match="no loans yet"):
        run_command("--backfill")


# --- kpi_daily ------------------------------------------------------------------------------------


def test_kpi_daily_computes_yesterday_and_the_missing_month_ends_only():
    book_with_cash_until(YESTERDAY)
    february = snapshot_compute(as_of=date(2025, 2, 28), job="compute_kpis")
    runs = snapshots_compute(dates="daily", job="kpi_daily", today=TODAY)
    assert [run.as_of for run in runs] == [date(2025, 1, 31), date(2025, 3, 31), YESTERDAY]
    assert {run.job for run in runs} == {"kpi_daily"}
    # The month-end that existed is left alone.
    assert SnapshotRun.objects.get(as_of=date(2025, 2, 28)) == february
    assert SnapshotRun.objects.get(as_of=date(2025, 2, 28)).job == "compute_kpis"
    assert as_of_dates() == {date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31), YESTERDAY}
    # Run again the same day: only yesterday is recomputed, and it has not changed.
    again = snapshots_compute(dates="daily", job="kpi_daily", today=TODAY)
    assert [run.pk for run in again] == [runs[-1].pk]
    assert SnapshotRun.objects.count() == 4


def test_kpi_daily_computes_a_month_end_that_had_no_new_data_when_the_export_runs_past_it():
    book = book_with_cash_until(date(2025, 3, 20))
    # The export says its data runs to yesterday: quiet days are still data.
    Batch.objects.filter(pk__in=[book.tape.loans.pk, book.tape.transactions.pk]).update(
        data_through=YESTERDAY
    )
    runs = snapshots_compute(dates="daily", job="kpi_daily", today=TODAY)
    assert [run.as_of for run in runs] == [
        date(2025, 1, 31),
        date(2025, 2, 28),
        date(2025, 3, 31),
        YESTERDAY,
    ]


def test_kpi_daily_stops_at_the_data_through_date_before_yesterday():
    book_with_cash_until(date(2025, 3, 20))  # no cut-off recorded: the latest cash date
    assert daily_cutoff(today=TODAY) == (
        date(2025, 3, 20),
        "data-through 2025-03-20 (yesterday was 2025-04-09)",
    )
    runs = snapshots_compute(dates="daily", job="kpi_daily", today=TODAY)
    assert [run.as_of for run in runs] == [date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 20)]


def test_kpi_daily_is_a_declared_schedule_of_the_pipeline_task():
    job = next(job for job in JOBS if job.name == "kpi_daily")
    assert (job.func, job.args, job.cron) == (
        "integrations.tasks.pipeline_task",
        "'kpi_daily'",
        "30 7 * * *",
    )
    assert pydoc.locate(job.func) is pipeline_task


def test_setup_schedules_creates_the_kpi_daily_schedule_once():
    first, second = StringIO(), StringIO()
    call_command("setup_schedules", stdout=first)
    call_command("setup_schedules", stdout=second)
    assert "created kpi_daily" in first.getvalue()
    assert "updated kpi_daily" in second.getvalue()
    schedule = Schedule.objects.get(name="kpi_daily")
    assert (
        schedule.func,
        schedule.args,
        schedule.schedule_type,
        schedule.cron,
        schedule.repeats,
    ) == ("integrations.tasks.pipeline_task", "'kpi_daily'", Schedule.CRON, "30 7 * * *", -1)


def test_the_kpi_daily_schedule_runs_through_the_cluster_in_sync_mode_as_a_recorded_run():
    book_with_cash_until(YESTERDAY)
    call_command("setup_schedules", stdout=StringIO())
    schedule = Schedule.objects.get(name="kpi_daily")
    with time_machine.travel(datetime(2025, 4, 10, 7, 30, tzinfo=MADRID)):
        # What the cluster's scheduler does when the schedule fires (sync mode in tests).
        task_id = async_task(schedule.func, *ast.literal_eval(f"({schedule.args},)"))
    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    run = PipelineRun.objects.get(job="kpi_daily")
    assert (run.status, run.for_date, run.trigger) == ("succeeded", YESTERDAY, "schedule")
    assert run.steps.get(name="snapshots").log.splitlines() == [
        "computing up to yesterday 2025-04-09",
        "2025-01-31: As reported, 1 loans (every loan computed from the book)",
        "2025-02-28: As reported, 2 loans (every loan computed from the book)",
        "2025-03-31: As reported, 2 loans (every loan computed from the book)",
        # Its day before has no run, and the month-end is more than KPI_CARRY_DAYS before it.
        "2025-04-09: As reported, 2 loans (every loan computed from the book)",
    ]
    # Then the insights of the newest date and the newest month-end, each for the whole portfolio
    # and its one entity (the model is off: summaries).
    insights = run.steps.get(name="insights")
    assert (insights.status, insights.rows_out) == ("succeeded", 4)
    assert insights.log.splitlines()[0].startswith(
        "2025-04-09 portfolio: Deterministic summary, every statement passed its checks (the "
        "model is off"
    )
    assert SnapshotRun.objects.get(as_of=YESTERDAY).job == "kpi_daily"
