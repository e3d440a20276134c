"""KPI snapshots to compute: which dates, and one entry point for every way they are asked for
(``compute_kpis --as-of``, ``compute_kpis --backfill``, the scheduled ``kpi_daily``). The engine
itself is kpis.engine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import connection, connections
from django.db.models import Max, Min
from django.utils import timezone

from abaco.dates import month_end, month_ends
from kpis.engine import snapshot_compute
from kpis.insights.services import Budget, insights_for_run
from kpis.models import SnapshotRun
from loans.models import Loan, Transaction

logger = logging.getLogger(__name__)


def backfill_dates(*, today: date | None = None) -> list[date]:
    """Month-ends since the first disbursement plus the latest day with data (not after yesterday)."""
    bounds = Loan.objects.aggregate(first=Min("disburse_date"), last=Max("disburse_date"))
    if bounds["first"] is None:
        return []
    last_cash = Transaction.objects.aggregate(last=Max("date"))["last"] or bounds["last"]
    yesterday = (today or timezone.localdate()) - timedelta(days=1)
    latest = min(max(bounds["last"], last_cash), yesterday)
    dates = month_ends(bounds["first"], latest)
    if latest not in dates:
        dates.append(latest)
    return dates


def snapshot_series(
    dates: Iterable[date],
    *,
    job: str,
    jobs: int | None = None,
    done: Callable[[SnapshotRun], object] | None = None,
) -> list[SnapshotRun]:
    """Snapshots for several dates, oldest first, returned in date order (``done`` is called as
    each one is stored).

    A snapshot reads the snapshots before it (rates and roll rates against the previous
    month-end, vintages' ever-30+), but only at its end: the loan states and most facts depend on
    the book alone. So ``jobs`` dates (``KPI_JOBS``) are computed at once on their own
    connections, each waiting before its history for the date before it to commit. A series
    inside an open transaction (a caller's atomic block, a test) runs on its connection, one
    date after the other: other connections could not see what that transaction wrote.
    """
    dates = sorted(dates)
    jobs = max(1, min(jobs or settings.KPI_JOBS, len(dates)))
    if jobs == 1 or connection.in_atomic_block:
        runs = []
        for day in dates:
            runs.append(snapshot_compute(as_of=day, job=job))
            if done is not None:
                done(runs[-1])
        return runs

    def compute(day: date, previous: Future[SnapshotRun] | None) -> SnapshotRun:
        try:
            # previous.result() re-raises the earlier date's failure: this one rolls back too.
            return snapshot_compute(
                as_of=day, job=job, before_history=previous.result if previous else None
            )
        finally:
            connections.close_all()  # this thread's connection; the pool's threads end here

    futures: list[Future[SnapshotRun]] = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="snapshot") as pool:
        # First in, first out: an earlier date always starts before a later one waits on it.
        for day in dates:
            futures.append(pool.submit(compute, day, futures[-1] if futures else None))
        try:
            runs = []
            for future in futures:
                runs.append(future.result())
                if done is not None:
                    done(runs[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return runs


def daily_dates(*, today: date | None = None) -> list[date]:
    """The daily job's dates: yesterday and any month-end that has no snapshot yet."""
    yesterday = (today or timezone.localdate()) - timedelta(days=1)
    first = Loan.objects.aggregate(first=Min("disburse_date"))["first"]
    if first is None:
        return []
    have = SnapshotRun.objects.as_of_dates()
    # Every month-end up to yesterday, even past the last day with data: the book still stands then.
    wanted = [day for day in month_ends(first, yesterday) if day not in have and day != yesterday]
    wanted.append(yesterday)
    return wanted


def snapshots_compute(
    *,
    dates: date | Literal["backfill", "daily"],
    job: str,
    today: date | None = None,
    jobs: int | None = None,
    planned: Callable[[list[date]], object] | None = None,
    done: Callable[[SnapshotRun], object] | None = None,
) -> list[SnapshotRun]:
    """The snapshots of one date, of the backfill (backfill_dates) or of the daily job
    (daily_dates), oldest first; ``planned`` learns the dates before the first is computed
    (not called when there is none), ``done`` is called as each one is stored."""
    if dates == "backfill":
        days = backfill_dates(today=today)
    elif dates == "daily":
        days = daily_dates(today=today)
    else:
        days = [dates]
    if not days:
        return []
    if planned is not None:
        planned(days)
    return snapshot_series(days, job=job, jobs=jobs, done=done)


def kpi_daily_pipeline(ctx: Any) -> None:
    """The ``kpi_daily`` pipeline (integrations.pipelines): the daily job as a recorded run.

    ``ctx`` is the pipeline's ``RunContext``; kpis does not import integrations (the layers
    contract), so it is typed by use."""
    with ctx.step("snapshots") as step:
        runs = snapshots_compute(
            dates="daily", job="kpi_daily", today=ctx.for_date + timedelta(days=1)
        )
        for run in runs:
            step.rows_out += run.loans or 0
            step.log(f"{run.as_of}: {run.get_basis_display()}, {run.loans or 0:,} loans")
        if not runs:
            step.log("no loans yet: nothing to snapshot")
    insights_step(ctx, runs)


def insight_runs(runs: list[SnapshotRun]) -> list[SnapshotRun]:
    """The runs kpi_daily writes insights for: the newest, and the newest month-end when that is
    another (a first run that backfills every month-end asks for two, not one per month)."""
    if not runs:
        return []
    chosen = [runs[-1]]
    month_end_runs = [r for r in runs if r.as_of == month_end(r.as_of)]
    if month_end_runs and month_end_runs[-1] is not runs[-1]:
        chosen.append(month_end_runs[-1])
    return chosen


def insights_step(ctx: Any, runs: list[SnapshotRun]) -> None:
    """The ``insights`` step after the snapshots: the whole portfolio and each entity, under one
    budget. A failure is recorded on the step and logged; it never fails ``kpi_daily``, whose
    snapshots are already committed."""
    try:
        with ctx.step("insights") as step:
            budget = Budget.per_run()
            for run in insight_runs(runs):
                for insight in insights_for_run(run=run, job="kpi_daily", by=ctx.by, budget=budget):
                    step.rows_out += 1
                    where = insight.member or "portfolio"
                    step.log(
                        f"{run.as_of} {where}: {insight.get_source_display()}, "
                        f"{insight.get_verification_display().lower()}"
                        + (f" ({insight.fallback_reason})" if insight.fallback_reason else "")
                        + f", {insight.input_tokens + insight.output_tokens:,} tokens"
                    )
    except Exception:
        logger.exception("insights step failed", extra={"job": "kpi_daily"})
