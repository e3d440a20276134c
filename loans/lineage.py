"""The load vocabulary every source shares: what a problem in a file is, how a load is refused,
what a load counted, the batch that records where the rows came from, and the book lock.

This is the bottom of the load layer. The tape import (``loans.imports``), financial statements,
HubSpot, Meta, the Cascade job and the KPI engine import it; it imports nothing of theirs, so no
source depends on another source's loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.core.files import File
from django.db import connections
from django.utils import timezone

from compliance.journal import journal_append
from compliance.models import JournalEntry
from loans.models import Batch

if TYPE_CHECKING:
    from loans.imports.files import TapeFile

ERROR, WARNING = "error", "warning"

# An advisory lock an import holds for its whole transaction (one import at a time) and KPI
# snapshots share (kpis.engine): a snapshot never reads a book that an import is half-way
# through, and an import waits for the snapshots being computed.
BOOK_LOCK = "abaco.tape_import"
# The schema of the tape import's UNLOGGED staging tables (migration 0011).
STAGING_SCHEMA = "import_staging"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a file, named by file, row and column."""

    file: str
    row: int | None  # 1 is the header line; data starts at row 2
    column: str
    value: str
    reason: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = f"{self.file}, row {self.row}" if self.row else self.file
        col = f", column {self.column}" if self.column else ""
        value = f" (value {self.value!r})" if self.value not in ("", None) else ""
        return f"{where}{col}: {self.reason}{value}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
        }


def errors_of(problems: list[Problem]) -> list[Problem]:
    """The problems that refuse a load (the rest are warnings)."""
    return [p for p in problems if p.severity == ERROR]


class TapeRejected(Exception):
    """A load refused whole: nothing it would have written is in the database."""

    # What the refused load found, file by file, when the loader keeps it (the tape import's
    # ``TapeImport``): the upload page's summary and rejected rows.
    result: LoadResult | None = None

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = errors_of(problems)
        lines = "\n".join(str(p) for p in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(s):\n{lines}{more}")


class LoadCounts(Protocol):
    """What a file's load counted: the tape import's ``FileLoad`` and every ``LoadTally``."""

    rows_read: int
    inserted: int
    updated: int
    rejected: int
    problems: list[Problem]

    @property
    def unchanged(self) -> int: ...


class LoadResult(Protocol):
    """What an upload's load reports, whichever loader ran it (tape, statements): the upload
    page's summary, every problem, the rows to list for download, and the batches it wrote."""

    @property
    def problems(self) -> list[Problem]: ...

    @property
    def rejected_rows(self) -> list[Problem]: ...

    @property
    def batches(self) -> list[Batch]: ...

    def summary(self) -> str: ...


class Findings:
    """``errors`` and ``warnings`` of anything that keeps its ``problems``: a field
    (``LoadTally``) or a property (``TapeImport``)."""

    if TYPE_CHECKING:
        # For the type checker only: at run time a property here would stand in for a
        # subclass's dataclass field (a default_factory leaves no class attribute) and refuse
        # its assignment.
        @property
        def problems(self) -> list[Problem]: ...

    @property
    def errors(self) -> list[Problem]:
        return errors_of(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != ERROR]


@dataclass
class LoadTally(Findings):
    """A ``LoadCounts`` that counts ``unchanged`` itself: statements, marketing spend, Meta."""

    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    problems: list[Problem] = field(default_factory=list)


def batch_for(
    tape_file: TapeFile, *, kind: str, source: str, by: Any, job: str, full_export: bool = True
) -> Batch:
    """Keep the raw file (always, even when it fails) and open its lineage record.

    Bytes already loaded once make a ``duplicate`` batch pointing at the first, with nothing stored.
    """
    earlier = Batch.objects.loaded().holding(tape_file.sha256).first()
    batch = Batch(
        source=source,
        kind=kind,
        original_name=tape_file.name,
        sha256=tape_file.sha256,
        size=tape_file.size,
        created_by=by,
        job=job,
        full_export=full_export,
        status=Batch.Status.DUPLICATE if earlier else Batch.Status.PENDING,
        duplicate_of=earlier,
    )
    if earlier:
        batch.file.name = earlier.file.name
    else:
        with tape_file.open() as stream:
            batch.file.save(Path(tape_file.name.replace(":", "_")).name, File(stream), save=False)
    batch.save()
    if batch.status == Batch.Status.PENDING:
        alive_hold("batch", batch.pk)
    return batch


def batch_finish(batch: Batch, *, status: str, load: LoadCounts) -> None:
    """Close a batch's lineage record with what its load counted and found."""
    loaded = status == Batch.Status.LOADED
    batch.status = status
    batch.finished_at = timezone.now()
    batch.rows_read = load.rows_read
    batch.rows_inserted = load.inserted if loaded else 0
    batch.rows_updated = load.updated if loaded else 0
    batch.rows_unchanged = load.unchanged if loaded else 0
    batch.rows_rejected = load.rejected
    if not loaded:
        batch.changes_from = None  # a failed load changed nothing
    batch.errors = [p.as_dict() for p in errors_of(load.problems)]
    batch.warnings = [p.as_dict() for p in load.problems if p.severity != ERROR]
    batch.save()
    by = batch.created_by
    journal_append(
        kind=JournalEntry.Kind.IMPORT,
        action=f"import {status}",
        by=by,
        object=f"loans.batch:{batch.pk}",
        rows=batch.rows_read,
        file=batch.original_name,
        sha256=batch.sha256,
        source=batch.source,
        job=batch.job,
        counts={
            "read": batch.rows_read,
            "inserted": batch.rows_inserted,
            "updated": batch.rows_updated,
            "unchanged": batch.rows_unchanged,
            "rejected": batch.rows_rejected,
        },
    )
    alive_release("batch", batch.pk)


# Crash recovery (issue 18). A load holds a session advisory lock per batch (and per upload) on
# its database connection while it runs: PostgreSQL releases it when the process dies (kill -9,
# out of memory) and its connection with it. A batch still "pending" or "running" whose lock is
# free therefore belongs to a dead process. Locks this process holds are remembered, since a
# session may take its own advisory lock again.
ALIVE_KEYS = {"batch": "abaco.batch_alive", "upload": "abaco.upload_alive"}
_held: set[tuple[str, int]] = set()
DEAD_REASON = (
    "the process running this load stopped (killed or crashed) before it finished: nothing of "
    "it was loaded"
)
# An upload's check (dry run) is queued with the first label and starts with the second.
CHECK_QUEUED = "queued"
CHECK_STARTED = "checking"


def alive_hold(kind: str, pk: int, using: str = "default") -> None:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", [ALIVE_KEYS[kind], pk % 2**31])
    _held.add((kind, pk))


def alive_release(kind: str, pk: int, using: str = "default") -> None:
    if (kind, pk) not in _held:
        return
    _held.discard((kind, pk))
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_unlock(hashtext(%s), %s)", [ALIVE_KEYS[kind], pk % 2**31]
        )


def _dead(cursor: Any, kind: str, pk: int) -> bool:
    if (kind, pk) in _held:
        return False
    cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", [ALIVE_KEYS[kind], pk % 2**31])
    if not cursor.fetchone()[0]:
        return False  # its process holds it: alive
    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", [ALIVE_KEYS[kind], pk % 2**31])
    return True


def _dead_uploads_settle(cursor: Any, uploads: Any, **update: Any) -> int:
    """Update the ``uploads`` whose process died (their liveness lock is free) with ``update``,
    each only if it is still as found; returns how many were."""
    settled = 0
    for upload in uploads.only("pk", "status"):
        if _dead(cursor, "upload", upload.pk):
            settled += (
                uploads.model.objects.using(uploads.db)
                .filter(pk=upload.pk, status=upload.status)
                .update(**update)
            )
    return settled


def imports_recover(*, book_locked: bool = False) -> dict[str, int]:
    """Mark the batches and uploads of dead loads failed, with the reason, and drop the staging
    tables dead imports left (only while no import can be running: the book lock is held by the
    caller, ``book_locked``, or taken here for the moment). Called when an import takes the book
    lock, when a cluster worker starts and by ``pipelines_watch``. Inside an import it is part of
    the import's transaction: if that import is refused, the next lock-taker cleans up again."""
    from loans.models import Upload

    using = "default"
    now = timezone.now()
    counts = {"batches": 0, "uploads": 0, "staging_tables": 0}
    with connections[using].cursor() as cursor:
        batches = Batch.objects.using(using).filter(
            status__in=[Batch.Status.PENDING, Batch.Status.RUNNING]
        )
        for batch in batches.only("pk", "original_name"):
            if _dead(cursor, "batch", batch.pk):
                error = Problem(batch.original_name, None, "", "", DEAD_REASON).as_dict()
                counts["batches"] += (
                    Batch.objects.using(using)
                    .filter(pk=batch.pk, status__in=[Batch.Status.PENDING, Batch.Status.RUNNING])
                    .update(status=Batch.Status.FAILED, finished_at=now, errors=[error])
                )
        counts["uploads"] += _dead_uploads_settle(
            cursor,
            Upload.objects.using(using).filter(status=Upload.Status.RUNNING),
            status=Upload.Status.FAILED,
            finished_at=now,
            progress_label=f"failed: {DEAD_REASON}"[:200],
            summary=f"Failed: {DEAD_REASON}. Send it to load again from this page.",
        )
        # A check (dry run) that started and died: back to a draft, whose page checks it again.
        # A check still queued has not started (its label says so) and is left to the cluster.
        counts["uploads"] += _dead_uploads_settle(
            cursor,
            Upload.objects.using(using)
            .filter(status=Upload.Status.CHECKING)
            .exclude(progress_label=CHECK_QUEUED),
            status=Upload.Status.DRAFT,
            preview=None,
            progress=0,
            progress_label=f"check interrupted: {DEAD_REASON}"[:200],
        )
        if not book_locked:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [BOOK_LOCK])
            if not cursor.fetchone()[0]:
                return counts  # an import is running: its staging tables are not debris
        try:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", [STAGING_SCHEMA]
            )
            for (table,) in cursor.fetchall():
                cursor.execute(f'DROP TABLE IF EXISTS "{STAGING_SCHEMA}"."{table}"')
                counts["staging_tables"] += 1
        finally:
            if not book_locked:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [BOOK_LOCK])
    if any(counts.values()):
        import logging

        logging.getLogger(__name__).warning("cleaned up after dead loads", extra=counts)
    return counts


SUMMARY_HEADER = (
    f"{'file':<32} {'read':>10} {'inserted':>10} {'updated':>10} {'unchanged':>10} {'rejected':>9}"
)


def summary_line(name: str, load: LoadCounts) -> str:
    """One file's row under ``SUMMARY_HEADER``: what its load counted."""
    return (
        f"{name:<32} {load.rows_read:>10,} {load.inserted:>10,} {load.updated:>10,} "
        f"{load.unchanged:>10,} {load.rejected:>9,}"
    )


def duplicate_line(batch: Batch) -> str:
    """A file whose bytes an earlier batch loaded, under ``SUMMARY_HEADER``."""
    return f"{batch.original_name:<32} same bytes as batch {batch.duplicate_of_id}: nothing to load"
