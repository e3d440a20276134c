"""A tape's import, from its files to the book, in the order it runs.

``tape_import`` is the whole import of one tape: find its files and their batches, then in one
transaction under the book lock, stage each file on a connection of its own and check its values
and keys (``pool``: ``stage``, ``check_values``, ``check_keys``, and for the payments the
``payments`` pass), check it against the other files and the book (``check_across``), and merge
it (``merge``, which writes the change log first: ``changes``). ``loans.services`` publishes
it as the one way tapes get in; nothing else imports this package.

Everything that writes to the book runs inside the import's transaction: a file with any error
raises ``TapeRejected`` and the database is exactly as before.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg import sql

from loans.imports.files import TapeFile, tape_files_check, tape_files_find
from loans.imports.specs import TAPE_SPECS
from loans.imports.tape.check_across import check_across, lookup_loans, rejected_rows
from loans.imports.tape.compose import Cursor
from loans.imports.tape.cutoff import file_cutoff
from loans.imports.tape.merge import merge
from loans.imports.tape.payments import balance_warning
from loans.imports.tape.pool import Staged, staged_files, staging, staging_drop
from loans.imports.tape.staged import FileLoad, SourceFormat, StagedFile
from loans.lineage import (
    BOOK_LOCK,
    SUMMARY_HEADER,
    Findings,
    Problem,
    TapeRejected,
    batch_finish,
    batch_for,
    duplicate_line,
    imports_recover,
    summary_line,
)
from loans.models import Batch, ColumnMap
from loans.signals import book_loaded

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

PREVIEW_ROWS = 10
MAX_REJECTED_ROWS = 200_000  # kept for the downloadable CSV; counts stay exact beyond it


class _DryRun(Exception):
    """Raised inside the import's transaction to roll a preview back."""


@dataclass
class TapeImport(Findings):
    """What an import did (or, for a dry run, would do), file by file."""

    files: list[FileLoad] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duplicates: list[Batch] = field(default_factory=list)
    # Dry runs: file name -> (columns, first rows as parsed) and file header -> tape column.
    preview: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=dict)
    mapping: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    rejected_rows: list[Problem] = field(default_factory=list)
    already_loaded: list[tuple[str, Batch]] = field(
        default_factory=list
    )  # dry runs: name, earlier batch

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [SUMMARY_HEADER]
        lines += [summary_line(f.tape_file.name, f) for f in self.files]
        lines += [duplicate_line(batch) for batch in self.duplicates]
        for name in self.skipped:
            lines.append(f"{name:<32} not a tape file: skipped")
        return "\n".join(lines)


def source_format(source: str) -> tuple[SourceFormat, dict[str, str], str]:
    """The steward's column map for ``source`` (format, file-name aliases, forced encoding)."""
    column_map = ColumnMap.objects.filter(source=source).first()
    if column_map is None:
        return SourceFormat(), {}, ColumnMap.Encoding.AUTO
    fmt = SourceFormat(
        delimiter=column_map.delimiter or ",",
        decimal_comma=column_map.decimal_comma,
        day_first=column_map.day_first,
        headers={k.strip().lower(): v for k, v in column_map.headers.items()},
    )
    aliases = {k.strip().lower(): v for k, v in column_map.file_names.items()}
    return fmt, aliases, column_map.encoding


def tape_import(
    *,
    path: Path | str,
    source: str,
    by: User | None = None,
    job: str = "",
    quarantine: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
    full_export: bool = True,
    data_through: date | None = None,
) -> TapeImport:
    """Load a tape (a folder of CSVs, a ZIP, or one CSV) all or nothing.

    The source's column map (if the steward made one) says how its files are written. With
    ``quarantine`` the valid rows load and exactly the bad rows are held back and listed.
    Files whose bytes were loaded before are recognized by SHA-256 and not loaded again.
    ``dry_run`` validates everything and returns a preview, then rolls back and keeps nothing.
    Raises ``TapeRejected`` (database untouched, batches marked failed) when any file has errors.

    ``name`` is the name the file was uploaded under when ``path`` is a stored copy (the kind is
    read from it). ``full_export`` says the tape is the source's whole book: only then are the
    source's loans and transactions missing from it flagged as vanished; a partial file flags none.
    Each loaded batch records its cut-off (``data_through``, the date given by the export or
    the uploader, else the file's latest date) and the earliest date it changed (tape.cutoff).
    """
    fmt, aliases, encoding = source_format(source)
    progress = progress or (lambda fraction, label: None)
    found, skipped = tape_files_find(Path(path), aliases=aliases, name=name)
    # Refusals that come before anything is stored: encoding, longest line, most columns.
    found, refusals = tape_files_check(found, encoding=encoding, delimiter=fmt.delimiter)
    if refusals:
        raise TapeRejected(refusals)
    result = TapeImport(skipped=skipped)
    if not found:
        problem = Problem(
            name or Path(path).name,
            None,
            "",
            "",
            "no tape files found (expected customers.csv, loans.csv, schedules.csv or transactions.csv)",
        )
        raise TapeRejected([problem])

    to_load: list[tuple[TapeFile, Batch | None]] = []
    for tape_file in found:
        if dry_run:
            earlier = Batch.objects.loaded().holding(tape_file.sha256).first()
            if earlier:
                result.already_loaded.append((tape_file.name, earlier))
            else:
                to_load.append((tape_file, None))
            continue
        batch = batch_for(
            tape_file, kind=tape_file.kind, source=source, by=by, job=job, full_export=full_export
        )
        result.batches.append(batch)
        if batch.status == Batch.Status.DUPLICATE:
            result.duplicates.append(batch)
        else:
            to_load.append((tape_file, batch))
    if not to_load:
        progress(1.0, "nothing new to load")
        return result

    batches = [b for _, b in to_load if b is not None]
    started = timezone.now()
    for batch in batches:
        batch.status, batch.started_at = Batch.Status.RUNNING, started
        batch.save(update_fields=["status", "started_at"])
    tables = f"_{secrets.token_hex(4)}"  # this import's staging tables, whoever creates them
    files = [StagedFile(tape_file, fmt, tables=tables) for tape_file, _ in to_load]
    steps = itertools.count(len(files))  # reading the files is the first third

    def step(label: str) -> None:
        progress(next(steps) / (3 * len(files)), label)

    def merge_file(i: int) -> None:
        step(f"merging {files[i].file.name}")
        batch = to_load[i][1]
        assert batch is not None, "a dry run merges nothing"
        merge(
            files[i],
            cursor,
            batch_id=batch.pk,
            quarantine=quarantine,
            full_export_of=source if full_export else None,
        )
        batch.data_through, batch.changes_from = file_cutoff(
            files[i], cursor, batch_id=batch.pk, given=data_through
        )

    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor: Cursor = django_cursor.cursor  # psycopg's own cursor: COPY and composed SQL
            # One tape import at a time: merges insert new keys without per-row conflict checks.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [BOOK_LOCK])
            # No other import runs now: what a dead one left (batches, uploads, staging) goes.
            imports_recover(book_locked=True)
            # Duplicate checks, reference joins and the merge hash and sort millions of rows: give
            # them memory for this transaction instead of spilling to disk at the 4 MB default.
            cursor.execute("SET LOCAL work_mem = '256MB'")
            with staging(cursor), staged_files(files) as staged:
                progress(0.0, "reading the files")
                loaded_kinds, rejected_rows, merged = files_check(
                    cursor,
                    files,
                    staged,
                    quarantine=quarantine,
                    step=step,
                    merge=None if dry_run or quarantine else merge_file,
                )
                result.files += [f.result for f in files]
                result.rejected_rows += rejected_rows
                by_kind = {lo.spec.kind: lo for lo in files if lo.spec.kind in loaded_kinds}
                if "loans" in by_kind and "transactions" in by_kind:
                    balance_warning(by_kind["loans"], cursor)
                if dry_run:
                    preview(cursor, files, result)
                    raise _DryRun
                if (result.errors and not quarantine) or any(
                    not lo.result.rows_read for lo in files
                ):
                    raise TapeRejected(result.problems)
                for i in range(len(files)):
                    if i not in merged:
                        merge_file(i)
                if "transactions" in loaded_kinds and "loans" not in loaded_kinds:
                    # Payments without their loans' file: bring those loans' repaid_on up to date.
                    cursor.execute(
                        sql.SQL(
                            "UPDATE loans_loan l SET repaid_on = rp.repaid_on FROM {} rp "
                            "WHERE l.loan_id = rp.loan_id AND rp.repaid_on IS NOT NULL "
                            "AND l.repaid_on IS DISTINCT FROM rp.repaid_on"
                        ).format(sql.Identifier(by_kind["transactions"].payments_table))
                    )
    except _DryRun:
        return result
    except Exception as error:
        # Nothing was loaded, and the batches say so rather than staying "running": after a
        # rejection, or an internal error (then best effort: the database itself may be gone).
        for f, batch in zip(files, batches, strict=False):
            with contextlib.suppress(DatabaseError):
                batch_finish(batch, status=Batch.Status.FAILED, load=f.result)
        if isinstance(error, TapeRejected):
            logger.info("tape rejected", extra={"errors": len(error.problems), "source": source})
            error.result = result
        raise
    finally:
        # What the worker connections committed; gone already when the import committed.
        staging_drop([table for f in files for table in f.tables])
    for f, batch in zip(files, batches, strict=True):
        batch_finish(batch, status=Batch.Status.LOADED, load=f.result)
    progress(0.99, "segments and snapshots to restate")
    book_loaded(batches=batches)
    progress(1.0, "loaded")
    return result


def files_check(
    cursor: Cursor,
    files: list[StagedFile],
    staged: list[Staged],
    *,
    quarantine: bool,
    step: Callable[[str], None],
    merge: Callable[[int], None] | None,
) -> tuple[list[str], list[Problem], set[int]]:
    """Check each staged file against the tape's other files and the book
    (``check_across``): customers and loans first, which the others' checks read, then
    the others as their staging ends. Returns the kinds loaded, the rejected rows, and which
    files ``merge`` merged.

    ``merge`` (a load that is all or nothing, not a preview): each file is merged as soon as it
    is checked and the file it refers to is merged (the loans, also once the payments pass gave
    their repaid dates), while later files are still being staged and checked: the merges, one
    core's work, overlap the staging instead of following it. No merge starts once any file has
    an error; the import then rolls back those done.

    A file after one that could not be read (in the tape's order) is reported "not checked":
    checks against the unreadable file would only bury its error."""
    first = [i for i, lo in enumerate(files) if lo.spec.kind in ("customers", "loans")]
    rest = {staged[i].checked: i for i in range(len(files)) if i not in first}
    index = {lo.spec.kind: i for i, lo in enumerate(files)}
    loaded_kinds: list[str] = []
    rejected: dict[int, list[Problem]] = {}
    checked: set[int] = set()
    merged: set[int] = set()

    def merge_ready() -> None:
        if merge is None or any(lo.errors for lo in files):
            return
        for kind in ("customers", "loans", "transactions", "schedules"):
            i, parent = index.get(kind), index.get(TAPE_SPECS[kind].parent)
            if (
                i is None
                or i in merged
                or i not in checked
                or (parent is not None and parent not in merged)
            ):
                continue
            if (
                kind == "loans"
                and "transactions" in index
                and not staged[index["transactions"]].paid.done()
            ):
                continue
            merge(i)
            merged.add(i)

    def check(i: int) -> None:
        f = files[i]
        step(f"checking {f.file.name}")
        if not staged[i].checked.result() or any(
            not files[j].result.rows_read for j in first if j < i
        ):
            return
        check_across(f, cursor, loaded_kinds, quarantine=quarantine)
        loaded_kinds.append(f.spec.kind)
        checked.add(i)
        if f.result.rejected:
            rejected[i] = rejected_rows(f, cursor)[:MAX_REJECTED_ROWS]
        if f.spec.kind == "loans" and rest:
            lookup_loans(f, cursor, set(loaded_kinds))  # while the big files are still read
        merge_ready()

    for i in first:
        check(i)
    payments = index.get("transactions")
    if payments is not None:
        # The payments pass comes before the payments' own checks; the loans' merge waits for it.
        staged[payments].paid.result()
        merge_ready()
    for future in as_completed(rest):
        check(rest[future])
    for i, f in enumerate(files):
        if any(not lo.result.rows_read for lo in files[:i]):
            f.result = FileLoad(f.file)
            f.problem(None, "", "", "not checked: an earlier file of this tape could not be read")
            rejected.pop(i, None)
            if f.spec.kind in loaded_kinds:
                loaded_kinds.remove(f.spec.kind)
    return loaded_kinds, [row for i in sorted(rejected) for row in rejected[i]], merged


def preview(cursor: Cursor, files: list[StagedFile], result: TapeImport) -> None:
    """The first rows of each file as parsed, and how its header was mapped."""
    for f in files:
        name = f.file.name
        header = f.file.header(f.fmt.delimiter)
        result.mapping[name] = [
            (original, mapped if not mapped.startswith("_ignored_") else "(ignored)")
            for original, mapped in zip(header, f.file_columns, strict=False)
        ]
        if not f.result.rows_read:
            continue
        columns = [c.name for c in f.columns]
        cursor.execute(
            sql.SQL("SELECT line + 1, {} FROM {} ORDER BY line LIMIT {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(f.typed_table),
                sql.Literal(PREVIEW_ROWS),
            )
        )
        result.preview[name] = (["row", *columns], cursor.fetchall())
