"""The thread pool and the connections: where each phase runs.

The import's own connection holds the book lock and the transaction; the files' staging and their
own checks run side by side, ``IMPORT_JOBS`` at a time, each on a connection of its own that
commits its staging tables for the import's connection to read. This module owns both: the
pool (``staged_files``) and the staging tables' schema and lifetime (``staging``,
``use_staging``, ``staging_drop``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from loans.imports.tape.check_keys import check_keys
from loans.imports.tape.check_values import check_values
from loans.imports.tape.compose import STAGING_SCHEMA, Cursor, join, one_row
from loans.imports.tape.payments import payments_pass
from loans.imports.tape.stage import stage
from loans.imports.tape.staged import StagedFile

logger = logging.getLogger(__name__)

# The order files are staged in: loans first, whose first rows the payments pass reads, then
# transactions, the longest to check, then the rest.
STAGE_ORDER = ("loans", "transactions", "customers", "schedules")
# How long a staging connection waits for a lock before it fails the import (see staged_files).
STAGING_LOCK_TIMEOUT = "60s"


@contextmanager
def staging(cursor: Cursor) -> Iterator[None]:
    """The import's staging tables, for the length of the ``with`` block.

    They are UNLOGGED tables in ``import_staging``, found first on the search path, rather than
    temporary tables: PostgreSQL never reads a temporary table with parallel workers, and the
    checks and lookups that scan millions of rows take about half the time on two cores. The
    import's own (lookups, merges) are created in its transaction, so a rollback (an error, a
    dry run) removes them; the files' tables, which other connections stage and commit, carry
    the import's token in their names (``StagedFile``). On the way out all are dropped; when the
    import does not commit, ``staging_drop`` drops the files' tables after it.
    """
    cursor.execute("SELECT current_setting('search_path')")
    search_path = one_row(cursor)[0]
    # Tables an import left behind when its process died; the import's lock says none is running.
    _drop_staging_tables(cursor)
    use_staging(cursor)
    yield
    _drop_staging_tables(cursor)
    cursor.execute("SELECT set_config('search_path', %s, true)", [search_path])


def use_staging(cursor: Cursor) -> None:
    """Unqualified names find (and create) staging tables first, until the transaction ends."""
    cursor.execute(
        "SELECT set_config('search_path', %s || ', ' || current_setting('search_path'), true)",
        [STAGING_SCHEMA],
    )


def staging_drop(tables: list[str]) -> None:
    """Drop these staging tables if they are still there, in a transaction of their own.

    For tables other connections committed (``tape_import`` stages files side by side) when the
    import did not commit. Best effort: the next import drops what is left.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            cursor.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(
                    join(sql.Identifier(STAGING_SCHEMA, table) for table in tables)
                )
            )
    except DatabaseError:
        logger.warning("staging tables left for the next import to drop", exc_info=True)


def _drop_staging_tables(cursor: Cursor) -> None:
    cursor.execute(
        "SELECT string_agg(format('%%I.%%I', schemaname, tablename), ', ') FROM pg_tables WHERE schemaname = %s",
        [STAGING_SCHEMA],
    )
    tables = one_row(cursor)[0]
    if tables:
        cursor.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(tables)))


@dataclass
class Staged:
    """A file's staging on its own connection, in steps the import's connection can wait for:
    ``paid`` (staged and, for transactions, the payments pass done) and ``checked`` (its own
    checks)."""

    paid: Future[bool] = field(default_factory=Future)
    # The pool's future, set as the file is submitted (before ``staged_files`` yields).
    checked: Future[bool] = field(default_factory=Future)


@contextmanager
def staged_files(files: list[StagedFile]) -> Iterator[list[Staged]]:
    """COPY the files and run each one's own checks side by side, ``IMPORT_JOBS`` at a time,
    each on a connection of its own that commits its staging tables for the import's
    connection to read: first the file (``stage``), then its own checks (``check_values``,
    ``check_keys``). These steps read nothing but the file, so they need neither the import's
    transaction nor its view of the book, and a file's COPY (a single core's work) no longer
    waits for the other files'. Yields, per file, futures of whether its file could be staged;
    the import's connection checks and merges each file as it is ready."""

    @contextmanager
    def step() -> Iterator[Cursor]:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor: Cursor = django_cursor.cursor
            cursor.execute("SET LOCAL work_mem = '256MB'")
            # These tables are this connection's own, so it never waits for a lock, except by
            # mistake: the import's connection, which may hold one (it reads the loans' tables
            # while the payments are still checked), waits for this one. An error, not a hang.
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [STAGING_LOCK_TIMEOUT])
            use_staging(cursor)
            yield cursor

    def loans_firsts() -> str | None:
        """The loans file's first rows once its own checks made them (None without one)."""
        for f, staged in zip(files, stages, strict=True):
            if f.spec.kind == "loans":
                wait([staged.checked])
                if not staged.checked.cancelled() and staged.checked.exception() is None:
                    return f.firsts_table if staged.checked.result() else None
        return None

    def run(f: StagedFile, staged: Staged) -> bool:
        try:
            with step() as cursor:
                readable = stage(f, cursor)
            if not readable:
                staged.paid.set_result(False)
                return False
            # The loans file is staged before this one (STAGE_ORDER): never waiting for a free
            # connection. Without it, the import's own connection runs the pass on the book.
            if f.spec.kind == "transactions" and (firsts := loans_firsts()):
                with step() as cursor:
                    payments_pass(f, cursor, firsts)
            staged.paid.set_result(True)
            with step() as cursor:
                check_values(f, cursor)
                check_keys(f, cursor)
            return True
        except BaseException as error:
            if not staged.paid.done():
                staged.paid.set_exception(error)
            raise
        finally:
            connection.close()  # this thread's own connection

    order = sorted(range(len(files)), key=lambda i: STAGE_ORDER.index(files[i].spec.kind))
    pool = ThreadPoolExecutor(max_workers=max(1, settings.IMPORT_JOBS), thread_name_prefix="tape")
    stages = [Staged() for _ in files]
    try:
        for i in order:
            stages[i].checked = pool.submit(run, files[i], stages[i])
        yield stages
    finally:
        # After an error, files not started yet are not read for nothing.
        pool.shutdown(cancel_futures=True)
