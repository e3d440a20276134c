"""The KPI engine: loan states at an as-of date and KPI values per portfolio slice, set-based in
PostgreSQL, stored as a dated snapshot (docs/design.md, "Where data lives"; each KPI's definition and query in
kpis.definitions).

- ``compose``, ``book``, ``facts``: the composed SQL (slices; the book's cash and loan states;
  facts per slice, KPI values and the stored tables);
- ``steps``: the computing steps that run it, in order;
- ``aside``: the part done on a second connection, in the same database snapshot;
- ``incremental``: the daily case, loan states carried forward from the day before's run;
- ``runs``: the SnapshotRun row, its batches and fingerprint, deleting a run;
- ``restatement``: as reported or restated, once the numbers are in.

Dashboards and the API read snapshots; nothing here runs in a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import TYPE_CHECKING

from django.db import connection, transaction

from kpis.engine import book, steps
from kpis.engine.aside import (
    aside_close,
    book_facts_aside,
    ever_30_aside,
    loan_cash_aside,
    month_loans_aside,
)
from kpis.engine.incremental import carry_base, loan_states_carried, touched_collect, touched_ids
from kpis.engine.restatement import restatement_settle
from kpis.engine.runs import run_open, snapshot_quality
from kpis.models import SnapshotRun
from loans.lineage import BOOK_LOCK

if TYPE_CHECKING:
    from django.contrib.auth.models import User

__all__ = ["snapshot_compute", "snapshot_quality"]

logger = logging.getLogger("kpis.engine")


def snapshot_compute(
    *,
    as_of: date,
    by: User | None = None,
    job: str = "",
    before_history: Callable[[], object] | None = None,
    carry: bool = True,
) -> SnapshotRun:
    """Compute and store loan states and KPI values for end of day ``as_of``, in one transaction.

    The first run of a date is kept *as reported*; recomputed, it is restated only when the
    numbers differ (kpis.engine.restatement).

    With ``carry`` (the default), loan states are carried forward from a stored run of the days
    just before, with only the loans touched since recomputed (kpis.engine.incremental), when
    there is one to carry from; ``carry=False`` computes every loan from the book.

    Everything up to the facts that read earlier snapshots (the monthly rates and roll rates
    against the previous month-end, vintages' ever-30+) depends on the book alone; the history
    is read last, after ``before_history`` returns. A series computed on several connections
    (kpis.services.snapshot_series) waits there for the earlier dates to commit; read committed,
    the statements after it see them.
    """
    started = time.perf_counter()
    # Part of the work goes to a second connection (kpis.engine.aside), unless a transaction is
    # already open: its uncommitted rows (a caller's atomic block, a test) are invisible to any other.
    aside = not connection.in_atomic_block
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-aside") as pool,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # The book as no import is changing it, for this transaction's statements and the
        # second connection's exported snapshot alike.
        cursor.execute(book.BOOK_LOCK_SHARED, [BOOK_LOCK])
        cursor.execute(book.WORK_MEM)
        run, reported, batch_ids, reasons = run_open(cursor, as_of=as_of, by=by, job=job)
        cursor.execute(book.DROP_TEMP_TABLES)
        # Loan cash in two parts when there is a second connection: odd loan ids there, even
        # here. A carried run reads only the touched loans' cash, all of it here.
        params = steps.params(run=run.pk, as_of=as_of, parts=2 if aside else 1)
        base = carry_base(as_of=as_of) if carry else None
        # A run with a day before to carry from is a daily one: it keeps the month's openings of
        # the payers it computes for the next day's run, even when it computes every loan.
        run.opening_kept = base is not None
        if base:
            params.update(base.params(), parts=1)
            run.touched_loans = touched_collect(cursor, params, base)
            if run.touched_loans is None:  # most loans touched: faster in full
                base, params["parts"] = None, 2 if aside else 1
        ever_30 = None  # earlier month-ends' ever-30+ loans, when read aside
        if aside:
            cursor.execute(book.EXPORT_SNAPSHOT)
            snapshot = cursor.fetchone()[0]
            if base:
                # A carried run's own work is mostly on temporary tables, which PostgreSQL reads
                # with one core: the month's flows per loan, which need only the touched loans'
                # cash, go aside.
                month = pool.submit(
                    month_loans_aside, snapshot, {**params, "touched": touched_ids(cursor)}
                )
            else:
                part = pool.submit(loan_cash_aside, snapshot, {**params, "part": 1})
            book_facts = pool.submit(book_facts_aside, snapshot, dict(params))
            # Vintages read earlier month-ends' states; a series' earlier dates are still being
            # computed (before_history waits for them), a daily run's are committed.
            if before_history is None and as_of == params["month_end"]:
                ever_30 = pool.submit(ever_30_aside, snapshot, dict(params))
            pool.submit(aside_close)
        if base:
            run.loans = loan_states_carried(cursor, params)
            run.carried_from = base.run
        else:
            steps.loan_cash(cursor, params)
            if aside:
                steps.loan_cash_add(cursor, part.result())
            run.loans = steps.loan_states(cursor, params)
        cursor.execute(book.RESIDUALS_STORE, params)
        steps.state_facts(cursor, params)
        if base and aside:
            steps.month_loans_add(cursor, params, month.result())
        else:
            steps.month_loans(cursor, params, carried=base is not None)
        if run.opening_kept:
            steps.openings_keep(cursor, params)
        steps.flow_facts(
            cursor, params, book_facts.result() if aside else steps.book_facts(cursor, params)
        )
        if before_history is not None:
            waiting = time.perf_counter()
            before_history()
            started += time.perf_counter() - waiting  # its duration is its own work
        steps.history_facts(cursor, params, ever_30.result() if ever_30 else None)
        stands = restatement_settle(cursor, run=run, reported=reported, reasons=reasons)
        if stands is not run:
            # The reported numbers stand on today's batches too: it is not waiting for them.
            stands.batches.set(batch_ids)
            return stands
        run.batches.set(batch_ids)
        run.duration_ms = round((time.perf_counter() - started) * 1000)
        run.save(
            update_fields=["loans", "duration_ms", "carried_from", "touched_loans", "opening_kept"]
        )
    logger.info(
        "snapshot computed",
        extra={
            "as_of": str(as_of),
            "basis": run.basis,
            "ms": run.duration_ms,
            "carried_from": str(base.run.as_of) if base else None,
            "touched": run.touched_loans,
        },
    )
    return run
