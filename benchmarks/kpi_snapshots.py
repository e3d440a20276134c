"""KPI engine speed (issue: KPI engine): one as-of date for the whole portfolio, all KPIs and
slices, and a backfill of every month-end plus the latest day as `compute_kpis --backfill` runs it
(KPI_JOBS dates at once), on the benchmark tape's book (loaded by tape_import.py; run that first,
or `make bench` runs both in order).

Each figure is printed beside its yardstick, measured in the same run: one aggregate pass over
every installment and every transaction, grouped by loan (the least any engine that recomputes
from the book must read), as a ratio. Machines of this kind differ by 2x from day to day; the
ratio does much less."""

from __future__ import annotations

import json
import re
import statistics
import time
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from kpis.services import backfill_dates, snapshot_series
from loans.models import Installment, Loan, Transaction
from loans.segments import customer_segments_refresh


def run() -> None:
    loans = Loan.objects.count()
    if not loans:
        print(
            "kpi_snapshots: no loans in the benchmark database; run the tape_import benchmark first"
        )
        return
    rows = Installment.objects.count() + Transaction.objects.count()
    print(f"book: {loans:,} loans, {rows:,} installments and transactions")
    floor = _book_pass()
    _snapshots_truncate()
    dates = backfill_dates(today=date(2025, 12, 1))
    # Segments first, as daily_ingest does, so the segment slice has its real members.
    started = time.perf_counter()
    changed = customer_segments_refresh(as_of=dates[-1])
    print(
        f"customer segments at {dates[-1]}: {changed:,} changed in {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    run = snapshot_compute(as_of=dates[-1], job="bench")
    one = time.perf_counter() - started
    print(
        f"one as-of date ({run.as_of}, {run.loans:,} loans with a balance): {one:.1f} s (target < 10 s)"
        f"{_against(one, floor)}"
    )
    # The backfill as `compute_kpis --backfill` runs it: from no snapshots, KPI_JOBS dates at once.
    _snapshots_truncate()
    started = time.perf_counter()
    snapshot_series(dates, job="bench")
    backfill = time.perf_counter() - started
    print(
        f"backfill of {len(dates)} dates ({len(dates) - 1} month-ends + latest day, "
        f"{settings.KPI_JOBS} at once): {backfill:.0f} s (target < 300 s)"
        f"{_against(backfill, floor)}"
    )
    # Statistics as a server's autovacuum keeps them (this machine's PostgreSQL has autovacuum
    # off): every stored run listed, and each run computed from here on newer than them.
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE kpis_loanstate")
    print(f"ANALYZE kpis_loanstate, as autovacuum would: {time.perf_counter() - started:.1f} s")
    # The daily case, as kpi_daily computes yesterday: every earlier snapshot stored (the previous
    # month-end's for rates and roll rates, all of them for vintages) and this date new. Three
    # times, as one run on a shared 2-core machine varies by about 10%: the median is the figure.
    daily = []
    for _ in range(3):
        SnapshotRun.objects.filter(as_of=dates[-1]).delete()
        started = time.perf_counter()
        snapshot_compute(as_of=dates[-1], job="bench")
        daily.append(time.perf_counter() - started)
    print(
        f"one as-of date with its history stored ({dates[-1]}, as kpi_daily finds yesterday): "
        f"{', '.join(f'{s:.1f}' for s in daily)} s, median {statistics.median(daily):.1f} s (target < 10 s)"
        f"{_against(statistics.median(daily), floor)}"
    )
    # An operator's recompute of a stored date: the numbers come out the same, the stored run stands.
    started = time.perf_counter()
    snapshot_compute(as_of=dates[-1], job="bench")
    print(
        f"recompute of that stored date, numbers unchanged: {time.perf_counter() - started:.1f} s"
    )
    # The incremental daily case (kpis.engine.incremental): yesterday stored as kpi_daily left it,
    # today carried forward, at the month-end (every payer of the month touched) and mid-month.
    for as_of in (dates[-1], dates[-1].replace(day=15)):
        _carried_daily(as_of, floor)


# Every value a run stores, one checksum per table: the rows without their ids, sorted.
STORED = {
    "loan states": "SELECT loan_id, customer_id, company, product_type, currency, segment, "
    "interest_rate, outstanding_principal, dpd, bucket, written_off, written_off_balance "
    "FROM kpis_loanstate WHERE run_id = %(run)s",
    "residual loans": "SELECT loan_id, balance FROM kpis_loanresidual WHERE run_id = %(run)s",
    "KPI values": "SELECT code, dimension, member, value, numerator, denominator "
    "FROM kpis_kpivalue WHERE run_id = %(run)s",
    "roll rates": "SELECT from_bucket, to_bucket, balance, share FROM kpis_rollrate "
    "WHERE run_id = %(run)s",
    "vintages": "SELECT cohort, months_on_book, disbursed, written_off, ever_30 "
    "FROM kpis_vintagepoint WHERE run_id = %(run)s",
    "top borrowers": "SELECT dimension, member, rank, customer_id, outstanding_principal, loans "
    "FROM kpis_topborrower WHERE run_id = %(run)s",
}


def _stored(run: SnapshotRun) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the sorted rows) of each table the run stored."""
    found = {}
    with connection.cursor() as cursor:
        for name, rows in STORED.items():
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
                f"FROM ({rows}) r",
                {"run": run.pk},
            )
            found[name] = cursor.fetchone()
    return found


def _carried_daily(as_of: date, floor: float) -> None:
    """``as_of`` computed in full and carried forward from the day before, interleaved, three
    times each; every stored value of each carried run checked equal to the full run's first.

    The day before is stored as ``kpi_daily`` leaves it: a daily run (carried from the date
    before it, itself computed in full), which keeps the month's openings of its payers; its
    time is printed too, the cost of a chain's first day."""
    before = as_of - timedelta(days=1)
    SnapshotRun.objects.filter(as_of__in=[before - timedelta(days=1), before, as_of]).delete()
    snapshot_compute(as_of=before - timedelta(days=1), job="bench", carry=False)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    expected = None
    with override_settings(KPI_CARRY_MAX_TOUCHED=float("inf")):  # carried, however many touched
        started = time.perf_counter()
        first = snapshot_compute(as_of=before, job="bench")
        elapsed = time.perf_counter() - started
        print(
            f"  the day before as the first daily run of a chain ({first.computation}): "
            f"{elapsed:.1f} s{_against(elapsed, floor)}"
        )
        for _ in range(3):
            for carry in (False, True):
                SnapshotRun.objects.filter(as_of=as_of).delete()
                started = time.perf_counter()
                run = snapshot_compute(as_of=as_of, job="bench", carry=carry)
                seconds[carry].append(time.perf_counter() - started)
                got = _stored(run)
                expected = expected or got
                if got != expected:
                    differ = [name for name in STORED if got[name] != expected[name]]
                    raise SystemExit(f"carried run of {as_of} differs from the full one: {differ}")
                if carry:
                    touched, loans = run.touched_loans, run.carried_from.loans
    rows = ", ".join(f"{name} {expected[name][0]:,}" for name in STORED)
    full, carried = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(
        f"the daily case carried forward ({as_of} from {before}): every stored value equal to a "
        f"full computation ({rows}); {touched:,} loans touched of {loans:,} ({touched / loans:.0%})"
    )
    print(
        f"  in full {', '.join(f'{s:.1f}' for s in seconds[False])} s, median {full:.1f} s, "
        f"ratio {full / floor:.1f}; carried {', '.join(f'{s:.1f}' for s in seconds[True])} s, "
        f"median {carried:.1f} s, ratio {carried / floor:.1f} (target 0.5); yardstick {floor:.2f} s"
    )


# The yardstick: every installment and every transaction read once and summed by loan, each money
# column and a count, the two tables one after the other on one connection. The outer sums keep
# every inner aggregate alive (PostgreSQL drops subquery columns nobody reads) and return one row,
# so no result crosses the wire. It runs as the engine's statements do: the engine's work_mem, and
# the server's own parallel-query settings, since the engine's statements may use them too (a
# floor that forbade what the engine may do would not be a floor).
MONEY = ["principal", "interest", "other", "fees", "to_tax", "add_balance", "reduce_balance"]
BOOK_PASS = [
    f"SELECT count(*), sum(n), {', '.join(f'sum({c})' for c in MONEY)} FROM ("
    f"SELECT loan_id, count(*) AS n, {', '.join(f'sum({c}) AS {c}' for c in MONEY)}"
    f" FROM {table} GROUP BY loan_id) AS per_loan"
    for table in ("loans_installment", "loans_transaction")
]


def _book_pass() -> float:
    """Seconds for one aggregate pass over the book (median of three), printed; the yardstick."""
    passes = []
    for _ in range(3):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '256MB'")  # as kpis.engine sets it
            started = time.perf_counter()
            for statement in BOOK_PASS:
                cursor.execute(statement)
                cursor.fetchall()
            passes.append(time.perf_counter() - started)
            workers = [_workers_planned(cursor, statement) for statement in BOOK_PASS]
    floor = statistics.median(passes)
    print(
        "yardstick, one aggregate pass over all installments and transactions by loan"
        f" (parallel workers planned: {' and '.join(map(str, workers))}): "
        f"{', '.join(f'{s:.2f}' for s in passes)} s, median {floor:.2f} s"
    )
    return floor


def _workers_planned(cursor, statement: str) -> int:
    """The parallel workers PostgreSQL plans for a statement (0: a serial plan)."""
    cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}")
    plan = cursor.fetchone()[0]
    found = re.findall(r'"Workers Planned": (\d+)', json.dumps(plan))
    return max(map(int, found), default=0)


def _against(seconds: float, floor: float) -> str:
    return f"; yardstick {floor:.2f} s, ratio {seconds / floor:.1f}"


def _snapshots_truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE kpis_loanstate, kpis_loanresidual, kpis_kpivalue, kpis_snapshotrun_batches, "
            "kpis_snapshotrun, kpis_monthopening CASCADE"
        )
