"""Writes to the loan book. The tape import is the one way tapes get in: admin uploads, the
``import_tape`` command, the scheduled Cascade job and ``demo_data`` all call ``tape_import``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg import sql

from loans.imports.files import TapeFile, tape_files_find
from loans.imports.loader import (
    FileLoad,
    FileLoader,
    SourceFormat,
    staging,
    staging_drop,
    use_staging,
)
from loans.imports.statements import statements_import
from loans.lineage import (
    BOOK_LOCK,
    SUMMARY_HEADER,
    Findings,
    Problem,
    TapeRejected,
    batch_finish,
    batch_for,
    duplicate_line,
    errors_of,
    summary_line,
)
from loans.models import Batch, BatchChange, ColumnMap, Upload

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
    preview: dict[str, tuple[list[str], list[tuple]]] = field(default_factory=dict)
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
    by=None,
    job: str = "",
    quarantine: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> TapeImport:
    """Load a tape (a folder of CSVs, a ZIP, or one CSV) all or nothing.

    The source's column map (if the steward made one) says how its files are written. With
    ``quarantine`` the valid rows load and exactly the bad rows are held back and listed.
    Files whose bytes were loaded before are recognized by SHA-256 and not loaded again.
    ``dry_run`` validates everything and returns a preview, then rolls back and keeps nothing.
    Raises ``TapeRejected`` (database untouched, batches marked failed) when any file has errors.
    """
    progress = progress or (lambda fraction, label: None)
    fmt, aliases, encoding = source_format(source)
    found, skipped = tape_files_find(Path(path), aliases=aliases)
    if encoding != ColumnMap.Encoding.AUTO:
        found = [dataclasses.replace(f, encoding=encoding) for f in found]
    result = TapeImport(skipped=skipped)
    if not found:
        problem = Problem(
            Path(path).name,
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
        batch = batch_for(tape_file, kind=tape_file.kind, source=source, by=by, job=job)
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
    loaders = [FileLoader(tape_file, fmt, tables=tables) for tape_file, _ in to_load]
    steps = itertools.count(len(loaders))  # reading the files is the first third

    def step(label: str) -> None:
        progress(next(steps) / (3 * len(loaders)), label)

    def merge(i: int) -> None:
        step(f"merging {loaders[i].file.name}")
        loaders[i].merge(cursor, batch_id=to_load[i][1].pk, quarantine=quarantine)

    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor  # psycopg's own cursor: COPY and composed SQL
            # One tape import at a time: merges insert new keys without per-row conflict checks.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [BOOK_LOCK])
            # Duplicate checks, reference joins and the merge hash and sort millions of rows: give
            # them memory for this transaction instead of spilling to disk at the 4 MB default.
            cursor.execute("SET LOCAL work_mem = '256MB'")
            with staging(cursor), _staged_files(loaders) as staged:
                progress(0.0, "reading the files")
                loaded_kinds, rejected_rows, merged = _check_files(
                    cursor,
                    loaders,
                    staged,
                    quarantine=quarantine,
                    step=step,
                    merge=None if dry_run or quarantine else merge,
                )
                result.files += [loader.result for loader in loaders]
                result.rejected_rows += rejected_rows
                by_kind = {lo.spec.kind: lo for lo in loaders if lo.spec.kind in loaded_kinds}
                if "loans" in by_kind and "transactions" in by_kind:
                    by_kind["loans"].balance_warning(cursor)
                if dry_run:
                    _preview(cursor, loaders, result)
                    raise _DryRun
                if (result.errors and not quarantine) or any(
                    not lo.result.rows_read for lo in loaders
                ):
                    raise TapeRejected(result.problems)
                for i in range(len(loaders)):
                    if i not in merged:
                        merge(i)
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
        for loader, batch in zip(loaders, batches, strict=False):
            with contextlib.suppress(DatabaseError):
                batch_finish(batch, status=Batch.Status.FAILED, load=loader.result)
        if isinstance(error, TapeRejected):
            logger.info("tape rejected", extra={"errors": len(error.problems), "source": source})
            error.result = result
        raise
    finally:
        # What the worker connections committed; gone already when the import committed.
        staging_drop([table for loader in loaders for table in loader.tables])
    for loader, batch in zip(loaders, batches, strict=True):
        batch_finish(batch, status=Batch.Status.LOADED, load=loader.result)
    progress(1.0, "loaded")
    return result


# The order files are staged in: loans first, whose first rows the payments pass reads, then
# transactions, the longest to check, then the rest.
STAGE_ORDER = ("loans", "transactions", "customers", "schedules")
# How long a staging connection waits for a lock before it fails the import (see _staged_files).
STAGING_LOCK_TIMEOUT = "60s"
# The file each kind refers to: it is merged first.
PARENT_KIND = {"loans": "customers", "schedules": "loans", "transactions": "loans"}


@dataclass
class _Staged:
    """A file's staging on its own connection, in steps the import's connection can wait for:
    ``paid`` (staged and, for transactions, the payments pass done) and ``checked`` (its own
    checks)."""

    paid: Future = field(default_factory=Future)
    checked: Future | None = None


@contextmanager
def _staged_files(loaders: list[FileLoader]) -> Iterator[list[_Staged]]:
    """COPY the files and run each one's own checks side by side, ``IMPORT_JOBS`` at a time,
    each on a connection of its own that commits its staging tables for the import's
    connection to read: first the file (``stage``), then its own checks (``check_values``,
    ``check_keys``). These steps read nothing but the file, so they need neither the import's
    transaction nor its view of the book, and a file's COPY (a single core's work) no longer
    waits for the other files'. Yields, per loader, futures of whether its file could be staged;
    the import's connection checks and merges each file as it is ready."""

    @contextmanager
    def step() -> Iterator:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            cursor.execute("SET LOCAL work_mem = '256MB'")
            # These tables are this connection's own, so it never waits for a lock, except by
            # mistake: the import's connection, which may hold one (it reads the loans' tables
            # while the payments are still checked), waits for this one. An error, not a hang.
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [STAGING_LOCK_TIMEOUT])
            use_staging(cursor)
            yield cursor

    def loans_firsts() -> str | None:
        """The loans file's first rows once its own checks made them (None without one)."""
        for loader, staged in zip(loaders, staged_files, strict=True):
            if loader.spec.kind == "loans":
                wait([staged.checked])
                if not staged.checked.cancelled() and staged.checked.exception() is None:
                    return loader.firsts_table if staged.checked.result() else None
        return None

    def stage(loader: FileLoader, staged: _Staged) -> bool:
        try:
            with step() as cursor:
                readable = loader.stage(cursor)
            if not readable:
                staged.paid.set_result(False)
                return False
            # The loans file is staged before this one (STAGE_ORDER): never waiting for a free
            # connection. Without it, the import's own connection runs the pass on the book.
            if loader.spec.kind == "transactions" and (firsts := loans_firsts()):
                with step() as cursor:
                    loader.payments_pass(cursor, firsts)
            staged.paid.set_result(True)
            with step() as cursor:
                loader.check_values(cursor)
                loader.check_keys(cursor)
            return True
        except BaseException as error:
            if not staged.paid.done():
                staged.paid.set_exception(error)
            raise
        finally:
            connection.close()  # this thread's own connection

    order = sorted(range(len(loaders)), key=lambda i: STAGE_ORDER.index(loaders[i].spec.kind))
    pool = ThreadPoolExecutor(max_workers=max(1, settings.IMPORT_JOBS), thread_name_prefix="tape")
    staged_files = [_Staged() for _ in loaders]
    try:
        for i in order:
            staged_files[i].checked = pool.submit(stage, loaders[i], staged_files[i])
        yield staged_files
    finally:
        # After an error, files not started yet are not read for nothing.
        pool.shutdown(cancel_futures=True)


def _check_files(
    cursor,
    loaders: list[FileLoader],
    staged: list[_Staged],
    *,
    quarantine: bool,
    step: Callable[[str], None],
    merge: Callable[[int], None] | None,
) -> tuple[list[str], list[Problem], set[int]]:
    """Check each staged file against the tape's other files and the book
    (``FileLoader.check_across``): customers and loans first, which the others' checks read, then
    the others as their staging ends. Returns the kinds loaded, the rejected rows, and which
    files ``merge`` merged.

    ``merge`` (a load that is all or nothing, not a preview): each file is merged as soon as it
    is checked and the file it refers to is merged (the loans, also once the payments pass gave
    their repaid dates), while later files are still being staged and checked: the merges, one
    core's work, overlap the staging instead of following it. No merge starts once any file has
    an error; the import then rolls back those done.

    A file after one that could not be read (in the tape's order) is reported "not checked":
    checks against the unreadable file would only bury its error."""
    first = [i for i, lo in enumerate(loaders) if lo.spec.kind in ("customers", "loans")]
    rest = {staged[i].checked: i for i in range(len(loaders)) if i not in first}
    index = {lo.spec.kind: i for i, lo in enumerate(loaders)}
    loaded_kinds: list[str] = []
    rejected: dict[int, list[Problem]] = {}
    checked: set[int] = set()
    merged: set[int] = set()

    def merge_ready() -> None:
        if merge is None or any(lo.errors for lo in loaders):
            return
        for kind in ("customers", "loans", "transactions", "schedules"):
            i, parent = index.get(kind), index.get(PARENT_KIND.get(kind, ""))
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
        loader = loaders[i]
        step(f"checking {loader.file.name}")
        if not staged[i].checked.result() or any(
            not loaders[j].result.rows_read for j in first if j < i
        ):
            return
        loader.check_across(cursor, loaded_kinds, quarantine=quarantine)
        loaded_kinds.append(loader.spec.kind)
        checked.add(i)
        if loader.result.rejected:
            rejected[i] = loader.rejected_rows(cursor)[:MAX_REJECTED_ROWS]
        if loader.spec.kind == "loans" and rest:
            loader.lookup_loans(cursor, set(loaded_kinds))  # while the big files are still read
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
    for i, loader in enumerate(loaders):
        if any(not lo.result.rows_read for lo in loaders[:i]):
            loader.result = FileLoad(loader.file)
            loader.problem(
                None, "", "", "not checked: an earlier file of this tape could not be read"
            )
            rejected.pop(i, None)
            if loader.spec.kind in loaded_kinds:
                loaded_kinds.remove(loader.spec.kind)
    return loaded_kinds, [row for i in sorted(rejected) for row in rejected[i]], merged


def _preview(cursor, loaders: list[FileLoader], result: TapeImport) -> None:
    """The first rows of each file as parsed, and how its header was mapped."""
    for loader in loaders:
        name = loader.file.name
        header = loader.file.header(loader.fmt.delimiter)
        result.mapping[name] = [
            (original, mapped if not mapped.startswith("_ignored_") else "(ignored)")
            for original, mapped in zip(header, loader.file_columns, strict=False)
        ]
        if not loader.result.rows_read:
            continue
        columns = [c.name for c in loader.columns]
        cursor.execute(
            sql.SQL("SELECT line + 1, {} FROM {} ORDER BY line LIMIT {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(loader.typed_table),
                sql.Literal(PREVIEW_ROWS),
            )
        )
        result.preview[name] = (["row", *columns], cursor.fetchall())


def upload_preview(*, upload) -> TapeImport:
    """Validate an uploaded tape without keeping anything: what would load, and every problem."""
    return tape_import(
        path=upload.file.path, source=upload.source, by=upload.created_by, dry_run=True
    )


def upload_load(*, upload) -> None:
    """Load an upload (run by the task cluster), reporting progress as it goes."""
    progress_rows = Upload.objects.using("progress").filter(pk=upload.pk)

    def report(fraction: float, label: str) -> None:
        progress_rows.update(progress=round(fraction, 3), progress_label=label[:200])

    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.RUNNING, started_at=timezone.now(), progress=0
    )
    result: TapeImport | None = None
    problems: list[Problem] = []
    try:
        if upload.kind == Upload.Kind.TAPE:
            result = tape_import(
                path=upload.file.path,
                source=upload.source,
                by=upload.created_by,
                job=f"upload {upload.pk}",
                quarantine=upload.quarantine,
                progress=report,
            )
        else:
            result = statements_import(
                path=Path(upload.file.path),
                kind=upload.kind,
                source=upload.source,
                by=upload.created_by,
                job=f"upload {upload.pk}",
                quarantine=upload.quarantine,
            )
        status = Upload.Status.LOADED
        problems = result.problems
    except TapeRejected as rejected:
        status = Upload.Status.FAILED
        problems = rejected.problems
        result = getattr(rejected, "result", None)
    except Exception:
        # Never leave the page spinning: say it failed, and let the cluster log the traceback.
        Upload.objects.filter(pk=upload.pk).update(
            status=Upload.Status.FAILED,
            finished_at=timezone.now(),
            progress_label="failed: an internal error, see the logs",
        )
        raise
    upload.refresh_from_db()
    upload.status = status
    upload.finished_at = timezone.now()
    upload.progress = 1.0
    upload.progress_label = "done" if status == Upload.Status.LOADED else "rejected"
    upload.summary = result.summary() if result is not None else ""
    upload.problems = [p.as_dict() | {"severity": p.severity} for p in problems[:1000]]
    rejected_rows = getattr(result, "rejected_rows", None) or errors_of(problems)
    if rejected_rows:
        upload.rejects.save(
            f"upload-{upload.pk}-rejected-rows.csv", _rejects_csv(rejected_rows), save=False
        )
    upload.save()
    batches = getattr(result, "batches", None) or (
        [result.batch] if getattr(result, "batch", None) else []
    )
    if batches:
        upload.batches.set(batches)


def _rejects_csv(rows: list[Problem]):
    import csv
    import io

    from django.core.files.base import ContentFile

    from compliance.exports import cell_safe

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "row", "column", "value", "reason"])
    for p in rows:
        writer.writerow([cell_safe(v) for v in (p.file, p.row or "", p.column, p.value, p.reason)])
    return ContentFile(buffer.getvalue().encode("utf-8"))


def batch_changes_review(*, changes, accept: bool, reason: str, by) -> int:
    """A steward's verdict on flagged changes of a newer tape. The data stays as the tape says
    (the loan platform is the system of record); a rejection records the dispute for follow-up
    and keeps KPI snapshots provisional until it is resolved."""
    if not reason.strip():
        raise ValueError("a reason is required")
    return changes.filter(review=BatchChange.Review.PENDING).update(
        review=BatchChange.Review.ACCEPTED if accept else BatchChange.Review.REJECTED,
        review_reason=reason.strip(),
        reviewed_by=by,
        reviewed_at=timezone.now(),
    )
