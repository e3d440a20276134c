"""The computing steps of a snapshot, in the order they run on the snapshot's connection: the
book's cash and schedule per loan, the loan states, the facts per slice, then (after the
history is ready) the facts against earlier snapshots, the KPI values, roll rates and vintages.

Each step is a few statements of kpis.engine.book and .facts on one cursor; the snapshot's
transaction (kpis.engine.snapshot_compute) orders them and hands parts to the side connection.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db.backends.utils import CursorWrapper

from abaco.dates import month_end, previous_month_end
from kpis import definitions as d
from kpis.engine import book, facts

BookFacts = tuple[list[tuple[Any, ...]], int, list[tuple[Any, ...]]]


def params(*, run: int, as_of: date, parts: int) -> dict[str, Any]:
    """The statements' parameters for a run at ``as_of``, loan cash read in ``parts``
    (this connection's part is 0)."""
    return {
        "run": run,
        "as_of": as_of,
        "month_start": as_of.replace(day=1),
        "month_before": previous_month_end(as_of),
        "month_end": month_end(as_of),
        **{f"due_{n}": as_of + timedelta(days=n) for n in d.DUE_DAYS},
        "write_off_dpd": settings.WRITE_OFF_DPD,
        "residual_tolerance": settings.RESIDUAL_TOLERANCE,
        "version": d.VERSION,
        "parts": parts,
        "part": 0,
    }


def loan_cash(cursor: CursorWrapper, params: dict[str, Any]) -> None:
    """This connection's part of loan_cash and loan_schedule (loan_schedule left unanalyzed:
    the other parts may still come)."""
    cursor.execute(book.LOAN_CASH, params)
    cursor.execute(book.analyze("loan_cash"))
    cursor.execute(book.LOAN_SCHEDULE, params)


def loan_cash_add(cursor: CursorWrapper, rows: tuple[bytes, bytes]) -> None:
    """Another connection's part of loan_cash and loan_schedule, as COPY rows."""
    for table, part in zip(("loan_cash", "loan_schedule"), rows, strict=True):
        rows_add(cursor, table, part)
    cursor.execute(book.analyze("loan_cash"))


def loan_cash_rows(cursor: CursorWrapper) -> tuple[bytes, bytes]:
    """loan_cash and loan_schedule as COPY rows, for another connection."""
    return table_rows(cursor, "loan_cash"), table_rows(cursor, "loan_schedule")


def table_rows(cursor: CursorWrapper, table: str) -> bytes:
    """A temporary table's rows as COPY rows, for another connection."""
    with cursor.cursor.copy(book.copy_to(table)) as copy:
        return b"".join(bytes(block) for block in copy)


def rows_add(cursor: CursorWrapper, table: str, rows: bytes) -> None:
    """COPY rows from another connection into a temporary table."""
    with cursor.cursor.copy(book.copy_from(table)) as copy:
        copy.write(rows)


def loan_states(cursor: CursorWrapper, params: dict[str, Any]) -> int:
    """The run's loan states; returns how many loans have a balance at R."""
    cursor.execute(book.analyze("loan_schedule"))
    cursor.execute(book.LOAN_RESIDUALS)
    cursor.execute(book.LOAN_STATES, params)
    balances: int = cursor.rowcount
    return balances


def state_facts(cursor: CursorWrapper, params: dict[str, Any]) -> None:
    """Facts of the states per slice: balances and buckets, concentration, top borrowers and the
    loans repaid but for a residual."""
    cursor.execute(facts.SLICE_CUSTOMERS, params)
    cursor.execute(book.analyze("slice_customers"))
    cursor.execute(facts.TOP_CUSTOMERS, params)
    cursor.execute(facts.STATE_FACTS, params)
    cursor.execute(facts.CONCENTRATION, params)
    cursor.execute(facts.TOP_BORROWERS_INSERT, params)
    cursor.execute(facts.RESIDUAL_FACTS, params)


def month_loans(cursor: CursorWrapper, params: dict[str, Any], *, carried: bool) -> None:
    """The month's cash flows per loan, from loan_cash and loan_schedule (a ``carried`` run's
    payers that it did not recompute with their history from the month's openings)."""
    cursor.execute(book.MONTH_LOANS_CARRIED if carried else book.MONTH_LOANS, params)
    cursor.execute(book.analyze("month_loans"))


def month_loans_add(cursor: CursorWrapper, params: dict[str, Any], rows: bytes) -> None:
    """month_loans as another connection computed it (kpis.engine.aside), as COPY rows."""
    cursor.execute(book.MONTH_LOANS_EMPTY, params)
    rows_add(cursor, "month_loans", rows)
    cursor.execute(book.analyze("month_loans"))


def openings_keep(cursor: CursorWrapper, params: dict[str, Any]) -> None:
    """Keeps the month's openings of the payers this run computed, for the runs carried from it
    (kpis.engine.incremental), and drops the months before the last two."""
    cursor.execute(book.OPENINGS_KEEP, params)
    cursor.execute(book.OPENINGS_PRUNE, params)


def book_facts(cursor: CursorWrapper, params: dict[str, Any]) -> BookFacts:
    """Borrowers and repeaters per slice, the month's new customers and, at a month-end, each
    vintage's disbursed principal."""
    cursor.execute(book.BORROWER_FACTS, params)
    borrowers = cursor.fetchall()
    cursor.execute(book.NEW_CUSTOMERS, params)
    new_customers = cursor.fetchone()[0]
    cohorts = []
    if params["as_of"] == params["month_end"]:
        cursor.execute(book.COHORTS, params)
        cohorts = cursor.fetchall()
    return borrowers, new_customers, cohorts


def flow_facts(cursor: CursorWrapper, params: dict[str, Any], book_read: BookFacts) -> None:
    """The month's flows and the due schedule per slice, with the book facts."""
    borrowers, params["new_customers"], cohorts = book_read
    params["cohorts"] = [cohort for cohort, _ in cohorts]
    params["cohorts_disbursed"] = [disbursed for _, disbursed in cohorts]
    cursor.execute(facts.FACTS_BORROWERS)
    cursor.executemany(facts.FACTS_BORROWERS_INSERT, borrowers)
    cursor.execute(facts.FLOW_FACTS, params)
    cursor.execute(facts.DUE_FACTS, params)


def history_facts(
    cursor: CursorWrapper, params: dict[str, Any], ever_30: bytes | None = None
) -> None:
    """What reads earlier snapshots: the monthly rates, then every KPI value, roll rates and,
    at a month-end, vintages (with the earlier month-ends' ever-30+ loans read aside as
    ``ever_30``, or here)."""
    cursor.execute(facts.RATE_FACTS, params)
    cursor.execute(facts.VALUES_INSERT, params)
    cursor.execute(facts.ROLL_RATES, params)
    if params["as_of"] == params["month_end"]:
        cursor.execute(facts.EVER_30_TABLE)
        if ever_30 is None:
            cursor.execute(facts.EVER_30_BEFORE, params)
        else:
            rows_add(cursor, "ever_30_before", ever_30)
        cursor.execute(book.analyze("ever_30_before"))
        cursor.execute(facts.VINTAGES, params)


def ever_30_rows(cursor: CursorWrapper, params: dict[str, Any]) -> bytes:
    """The earlier month-ends' ever-30+ loans, as COPY rows for another connection."""
    cursor.execute(facts.EVER_30_TABLE)
    cursor.execute(facts.EVER_30_BEFORE, params)
    return table_rows(cursor, "ever_30_before")
