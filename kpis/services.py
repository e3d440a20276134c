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
from django.db import connection, connections, transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.module_loading import import_string

from abaco.dates import month_end, month_ends
from kpis.engine import snapshot_compute
from kpis.insights.services import Budget, insights_for_run
from kpis.models import SnapshotRun
from kpis.selectors.restatement import stale_dates
from loans.models import Loan
from loans.segments import customer_segments_refresh
from loans.selectors import book_data_through

logger = logging.getLogger(__name__)


def backfill_dates(*, today: date | None = None) -> list[date]:
    """Month-ends since the first disbursement plus the latest day with data: the book's
    data-through date, not after yesterday (a date beyond the data is computed only when asked
    for by its date)."""
    first = Loan.objects.aggregate(first=Min("disburse_date"))["first"]
    if first is None:
        return []
    latest, _ = daily_cutoff(today=today)
    dates = month_ends(first, latest)
    if latest not in dates:
        dates.append(latest)
    return dates


def snapshot_series(
    dates: Iterable[date],
    *,
    job: str,
    jobs: int | None = None,
    done: Callable[[SnapshotRun], object] | None = None,
    carry: bool = True,
) -> list[SnapshotRun]:
    """Snapshots for several dates, oldest first, returned in date order (``done`` is called as
    each one is stored; ``carry=False`` computes each in full, see kpis.engine.incremental).

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
            runs.append(snapshot_compute(as_of=day, job=job, carry=carry))
            if done is not None:
                done(runs[-1])
        return runs

    def compute(day: date, previous: Future[SnapshotRun] | None) -> SnapshotRun:
        try:
            # previous.result() re-raises the earlier date's failure: this one rolls back too.
            return snapshot_compute(
                as_of=day,
                job=job,
                before_history=previous.result if previous else None,
                carry=carry,
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


def daily_cutoff(*, today: date | None = None) -> tuple[date, str]:
    """The last date the daily job computes: the earlier of yesterday and the book's
    data-through date (a snapshot after the data ends is computed only when asked), and which
    of the two it is, as the job's step log says it."""
    yesterday = (today or timezone.localdate()) - timedelta(days=1)
    through = book_data_through()
    if through is not None and through < yesterday:
        return through, f"data-through {through} (yesterday was {yesterday})"
    return yesterday, f"yesterday {yesterday}"


def daily_dates(*, today: date | None = None) -> list[date]:
    """The daily job's dates: its cut-off (``daily_cutoff``), any month-end up to it that has no
    snapshot yet, and any stored snapshot a later load changed that is still waiting for its
    restatement (kpi_restate normally did it already)."""
    last, _ = daily_cutoff(today=today)
    first = Loan.objects.aggregate(first=Min("disburse_date"))["first"]
    if first is None:
        return []
    have = SnapshotRun.objects.as_of_dates()
    # Every month-end up to the cut-off, even past the last day with data in one source.
    wanted = {day for day in month_ends(first, last) if day not in have}
    wanted.add(last)
    wanted.update(stale_dates())
    return sorted(wanted)


def snapshots_compute(
    *,
    dates: date | Literal["backfill", "daily"],
    job: str,
    today: date | None = None,
    jobs: int | None = None,
    planned: Callable[[list[date]], object] | None = None,
    done: Callable[[SnapshotRun], object] | None = None,
    carry: bool = True,
) -> list[SnapshotRun]:
    """The snapshots of one date, of the backfill (backfill_dates) or of the daily job
    (daily_dates), oldest first; ``planned`` learns the dates before the first is computed
    (not called when there is none), ``done`` is called as each one is stored; ``carry=False``
    computes each in full."""
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
    return snapshot_series(days, job=job, jobs=jobs, done=done, carry=carry)


def kpi_daily_pipeline(ctx: Any) -> None:
    """The ``kpi_daily`` pipeline (integrations.pipelines): the daily job as a recorded run.

    ``ctx`` is the pipeline's ``RunContext``; kpis does not import integrations (the layers
    contract), so it is typed by use."""
    today = ctx.for_date + timedelta(days=1)
    with ctx.step("segments") as step:
        # Behavioural segments from the book itself (the CRM adds sector and size when on).
        last, why = daily_cutoff(today=today)
        step.rows_out = customer_segments_refresh(as_of=last)
        step.log(f"segments at {last}: {step.rows_out:,} customer(s) changed")
    with ctx.step("snapshots") as step:
        step.log(f"computing up to {why}")
        runs = snapshots_compute(dates="daily", job="kpi_daily", today=today)
        for run in runs:
            step.rows_out += run.loans or 0
            step.log(
                f"{run.as_of}: {run.get_basis_display()}, {run.loans or 0:,} loans "
                f"({run.computation})"
            )
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
    """The ``insights`` step after the snapshots (of kpi_daily, or the restatements of
    kpi_restate): the whole portfolio and each entity, under one budget. A failure is recorded
    on the step and logged; it never fails the job, whose snapshots are already committed."""
    job = ctx.run.job
    try:
        with ctx.step("insights") as step:
            budget = Budget.per_run()
            for run in insight_runs(runs):
                for insight in insights_for_run(run=run, job=job, by=ctx.by, budget=budget):
                    step.rows_out += 1
                    where = insight.member or "portfolio"
                    step.log(
                        f"{run.as_of} {where}: {insight.get_source_display()}, "
                        f"{insight.get_verification_display().lower()}"
                        + (f" ({insight.fallback_reason})" if insight.fallback_reason else "")
                        + f", {insight.input_tokens + insight.output_tokens:,} tokens"
                    )
    except Exception:
        logger.exception("insights step failed", extra={"job": job})


def restate_dates(*, params: dict[str, Any]) -> list[date]:
    """What a ``kpi_restate`` run recomputes: a steward's range (``from``, ``to``: every stored
    snapshot in it, and its month-ends up to the data-through date), else every stale snapshot."""
    if params.get("from"):
        start, end = date.fromisoformat(params["from"]), date.fromisoformat(params["to"])
        stored = {d for d in SnapshotRun.objects.as_of_dates() if start <= d <= end}
        through = book_data_through()
        if through is not None:
            stored.update(month_ends(start, min(end, through)))
        return sorted(stored)
    return stale_dates()


def kpi_restate_pipeline(ctx: Any) -> None:
    """The ``kpi_restate`` pipeline: recompute snapshots after a load changed the past (queued
    by the load, ``snapshots_restate_queue``) or for a steward's date range, as restated beside
    the as-reported run; progress on the status page. Stale snapshots that a load made while it
    ran are picked up before it ends."""
    params = ctx.run.params or {}
    restated: list[SnapshotRun] = []
    with ctx.step("restate") as step:
        days = restate_dates(params=params)
        if not days:
            step.log("nothing to recompute: every snapshot has read every load")
        for _ in range(3):  # then kpi_daily restates whatever is still stale
            if not days:
                break
            step.log(f"recomputing {len(days)} snapshot(s): {days[0]} … {days[-1]}")
            done: list[SnapshotRun] = []

            def finished(
                run: SnapshotRun, total: int = len(days), done: list[SnapshotRun] = done
            ) -> None:
                done.append(run)
                ctx.progress(len(done) / total, f"{run.as_of}: {len(done)} of {total}")

            for run in snapshot_series(days, job="kpi_restate", done=finished):
                step.rows_out += 1
                if run.basis == SnapshotRun.Basis.RESTATED:
                    restated.append(run)
                step.log(
                    f"{run.as_of}: {run.get_basis_display()}"
                    + (f" ({run.restatement_reason})" if run.restatement_reason else "")
                )
            days = stale_dates()  # loads that committed while it ran
    # The pages show a date's restatement by default: the newest ones get their insight now,
    # not at the next kpi_daily.
    if restated:
        insights_step(ctx, sorted(restated, key=lambda run: run.as_of))


PIPELINE_QUEUE = "integrations.tasks.pipeline_queue"


def snapshots_restate_queue(*, changes_from: date, batch_ids: list[int], **kwargs: Any) -> None:
    """``loans.signals.book_changed``: when a load changed a row dated on or before a stored
    snapshot, queue a ``kpi_restate`` pipeline run once the load commits; the task cluster runs
    it. Reached by its dotted path, as the jobs registry reaches kpis: the two never import each
    other."""
    if not SnapshotRun.objects.filter(as_of__gte=changes_from).exists():
        return
    params: dict[str, Any] = {"batches": batch_ids, "changes_from": changes_from.isoformat()}
    if kwargs.get("removed"):
        # Rows were deleted (demo data removed): no loaded batch tells which snapshots read
        # them, so every snapshot from the first date they touched is recomputed.
        params.update({"from": changes_from.isoformat(), "to": timezone.localdate().isoformat()})
    transaction.on_commit(lambda: import_string(PIPELINE_QUEUE)("kpi_restate", params))
