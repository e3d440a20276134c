"""Work done aside, on a second connection (a worker thread's own), while the snapshot's
connection computes: a second core at work.

Each task reads in the snapshot the snapshot's transaction exported, so it sees the data that
transaction sees (no import commits meanwhile: BOOK_LOCK). The tasks run in the order submitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from kpis.engine import book, incremental, steps


@contextmanager
def _aside(snapshot: str) -> Iterator[CursorWrapper]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(book.REPEATABLE_READ)
        cursor.execute(book.SNAPSHOT_SET, [snapshot])
        cursor.execute(book.WORK_MEM)
        yield cursor
        transaction.set_rollback(True)  # it wrote nothing worth keeping, only temporary tables


def loan_cash_aside(snapshot: str, params: dict[str, Any]) -> tuple[bytes, bytes]:
    """One part of loan_cash and loan_schedule, as COPY rows for the snapshot's connection."""
    with _aside(snapshot) as cursor:
        steps.loan_cash(cursor, params)
        return steps.loan_cash_rows(cursor)


def month_loans_aside(snapshot: str, params: dict[str, Any]) -> bytes:
    """A carried run's month_loans, as COPY rows for the snapshot's connection: the touched loans'
    cash and schedule (``params["touched"]``) computed again here, for their openings."""
    with _aside(snapshot) as cursor:
        incremental.touched_cash(cursor, params, ids=True)
        steps.month_loans(cursor, params, carried=True)
        return steps.table_rows(cursor, "month_loans")


def book_facts_aside(snapshot: str, params: dict[str, Any]) -> steps.BookFacts:
    """steps.book_facts aside."""
    with _aside(snapshot) as cursor:
        return steps.book_facts(cursor, params)


def ever_30_aside(snapshot: str, params: dict[str, Any]) -> bytes:
    """The earlier month-ends' ever-30+ loans for vintages (steps.ever_30_rows), when they are
    committed before the snapshot's transaction began."""
    with _aside(snapshot) as cursor:
        return steps.ever_30_rows(cursor, params)


def aside_close() -> None:
    """The last task: closes the thread's connection."""
    connection.close()
