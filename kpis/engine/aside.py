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

from kpis.engine import book, steps


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


def book_facts_aside(snapshot: str, params: dict[str, Any]) -> steps.BookFacts:
    """steps.book_facts aside (the last task: it closes the connection)."""
    try:
        with _aside(snapshot) as cursor:
            return steps.book_facts(cursor, params)
    finally:
        connection.close()
