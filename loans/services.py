"""Writes to the loan book. The tape import is the one way tapes get in: admin uploads, the
``import_tape`` command, the scheduled Cascade job and ``demo_data`` all call ``tape_import``,
which runs ``loans.imports.tape`` (the import, phase by phase).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from compliance.exports import cell_safe
from compliance.journal import journal_append
from compliance.models import JournalEntry
from loans.demo import DEMO_PREFIX, DEMO_SOURCE
from loans.imports.statements import statements_import
from loans.imports.tape import Progress, TapeImport, source_format, tape_import
from loans.lineage import (
    BOOK_LOCK,
    CHECK_QUEUED,
    CHECK_STARTED,
    LoadResult,
    Problem,
    TapeRejected,
    alive_hold,
    alive_release,
    errors_of,
    imports_recover,
)
from loans.models import Batch, BatchChange, Loan, Upload
from loans.signals import book_changed

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.db.backends.utils import CursorWrapper

__all__ = [
    "TapeImport",
    "batch_changes_review",
    "demo_remove",
    "imports_recover",
    "snapshots_recompute_queue",
    "source_format",
    "tape_import",
    "upload_check",
    "upload_check_queue",
    "upload_load",
    "upload_preview",
    "upload_queue",
]


def upload_preview(*, upload: Upload, progress: Progress | None = None) -> TapeImport:
    """Validate an uploaded tape without keeping anything: what would load, and every problem."""
    return tape_import(
        path=upload.file.path,
        name=upload.original_name or None,
        source=upload.source,
        by=upload.created_by,
        dry_run=True,
        full_export=upload.full_export,
        progress=progress,
    )


def upload_check_queue(*, upload: Upload) -> None:
    """Queue the dry run of a new tape upload in the task cluster (once the caller's transaction
    commits); its page follows the progress and then shows what was found."""
    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.CHECKING, progress=0, progress_label=CHECK_QUEUED, preview=None
    )
    upload.status = Upload.Status.CHECKING
    transaction.on_commit(
        lambda: async_task(
            "loans.tasks.upload_check_task", upload.pk, task_name=f"upload-check-{upload.pk}"
        )
    )


def upload_check(*, upload: Upload) -> None:
    """The dry run of an upload (run by the task cluster), with progress, stored for its page."""
    progress_rows = Upload.objects.using("progress").filter(pk=upload.pk)

    def report(fraction: float, label: str) -> None:
        progress_rows.update(progress=round(fraction, 3), progress_label=label[:200])

    # Crash recovery tells a dead check by this lock (and a started one by its label): the
    # upload goes back to a draft whose page queues the check again.
    alive_hold("upload", upload.pk)
    report(0, CHECK_STARTED)
    try:
        try:
            found = _preview_dict(upload_preview(upload=upload, progress=report))
        except TapeRejected as rejected:
            found = {"fatal": [str(p) for p in rejected.problems]}
        Upload.objects.filter(pk=upload.pk, status=Upload.Status.CHECKING).update(
            status=Upload.Status.DRAFT, preview=found, progress=1, progress_label="checked"
        )
    finally:
        alive_release("upload", upload.pk)


def _preview_dict(result: TapeImport) -> dict[str, Any]:
    """A dry run as the preview page reads it (JSON: values as text)."""

    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "already_loaded": [[name, {"pk": batch.pk}] for name, batch in result.already_loaded],
        "errors": [{**p.as_dict(), "severity": p.severity} for p in result.errors],
        "files": [
            {
                "tape_file": {"name": f.tape_file.name},
                "rows_read": f.rows_read,
                "rejected": f.rejected,
            }
            for f in result.files
        ],
        "mapping": {name: [list(pair) for pair in pairs] for name, pairs in result.mapping.items()},
        "preview": {
            name: [list(columns), [[text(v) for v in row] for row in rows]]
            for name, (columns, rows) in result.preview.items()
        },
        "problems": [{**p.as_dict(), "severity": p.severity} for p in result.problems],
    }


def upload_queue(*, upload: Upload) -> bool:
    """Send a draft upload to the task cluster (the admin's confirm, the API's POST), or a failed
    one again (refused, or its process died); False when it was already sent. The task is queued
    once the caller's transaction commits."""
    sent = Upload.objects.filter(
        pk=upload.pk, status__in=[Upload.Status.DRAFT, Upload.Status.FAILED]
    ).update(status=Upload.Status.QUEUED)
    if not sent:
        return False
    upload.status = Upload.Status.QUEUED
    transaction.on_commit(
        lambda: async_task(
            "loans.tasks.upload_load_task", upload.pk, task_name=f"upload-{upload.pk}"
        )
    )
    return True


def upload_load(*, upload: Upload) -> None:
    """Load an upload (run by the task cluster), reporting progress as it goes."""
    progress_rows = Upload.objects.using("progress").filter(pk=upload.pk)

    def report(fraction: float, label: str) -> None:
        progress_rows.update(progress=round(fraction, 3), progress_label=label[:200])

    alive_hold("upload", upload.pk)  # crash recovery tells a dead load by this lock
    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.RUNNING, started_at=timezone.now(), progress=0
    )
    result: LoadResult | None = None
    problems: list[Problem] = []
    try:
        if upload.kind == Upload.Kind.TAPE:
            result = tape_import(
                path=upload.file.path,
                name=upload.original_name or None,
                full_export=upload.full_export,
                source=upload.source,
                by=upload.created_by,
                job=f"upload {upload.pk}",
                quarantine=upload.quarantine,
                progress=report,
                data_through=upload.data_through,
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
        result = rejected.result
    except Exception:
        # Never leave the page spinning: say it failed, and let the cluster log the traceback.
        Upload.objects.filter(pk=upload.pk).update(
            status=Upload.Status.FAILED,
            finished_at=timezone.now(),
            progress_label="failed: an internal error, see the logs",
        )
        alive_release("upload", upload.pk)
        raise
    upload.refresh_from_db()
    upload.status = status
    upload.finished_at = timezone.now()
    upload.progress = 1.0
    upload.progress_label = "done" if status == Upload.Status.LOADED else "rejected"
    upload.summary = result.summary() if result is not None else ""
    upload.problems = [p.as_dict() | {"severity": p.severity} for p in problems[:1000]]
    rejected_rows = (result.rejected_rows if result is not None else []) or errors_of(problems)
    if rejected_rows:
        upload.rejects.save(
            f"upload-{upload.pk}-rejected-rows.csv", _rejects_csv(rejected_rows), save=False
        )
    upload.save()
    if result is not None and result.batches:
        upload.batches.set(result.batches)
    alive_release("upload", upload.pk)


def _rejects_csv(rows: list[Problem]) -> ContentFile[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "row", "column", "value", "reason"])
    for p in rows:
        writer.writerow([cell_safe(v) for v in (p.file, p.row or "", p.column, p.value, p.reason)])
    return ContentFile(buffer.getvalue().encode("utf-8"))


def batch_changes_review(
    *, changes: QuerySet[BatchChange], accept: bool, reason: str, by: User | None
) -> int:
    """A steward's verdict on flagged changes of a newer tape. The data stays as the tape says
    (the loan platform is the system of record); a rejection records the dispute for follow-up
    and keeps KPI snapshots provisional until it is resolved."""
    if not reason.strip():
        raise ValueError("a reason is required")
    pending = changes.filter(review=BatchChange.Review.PENDING)
    reviewed = list(pending.values_list("batch_id", "kind", "key"))
    count = pending.update(
        review=BatchChange.Review.ACCEPTED if accept else BatchChange.Review.REJECTED,
        review_reason=reason.strip(),
        reviewed_by=by,
        reviewed_at=timezone.now(),
    )
    for batch_id in sorted({batch_id for batch_id, _, _ in reviewed}):
        journal_append(
            kind=JournalEntry.Kind.REVIEW,
            action="accept" if accept else "reject",
            by=by,
            object=f"loans.batch:{batch_id}",
            rows=sum(1 for b, _, _ in reviewed if b == batch_id),
            reason=reason.strip(),
            changes={"reviewed": [f"{k} {key}" for b, k, key in reviewed if b == batch_id]},
        )
    return count


@dataclass
class DemoRemoval:
    """What ``demo_remove`` removed (or, for a dry run, would remove)."""

    batches: int = 0
    loans: int = 0
    customers: int = 0
    installments: int = 0
    transactions: int = 0
    changes: int = 0
    files: list[str] = field(default_factory=list)
    # The first day the demo rows could have moved a number: every snapshot from it on is
    # recomputed. None when there was nothing to remove.
    since: date | None = None
    customers_kept: int = 0  # demo-written customers that now hold real loans

    def summary(self) -> str:
        return (
            f"{self.loans:,} loans, {self.customers:,} customers, {self.installments:,} "
            f"schedule lines, {self.transactions:,} transactions, {self.changes:,} change records, "
            f"{self.batches:,} batches and {len(self.files):,} raw files"
        )


# Each statement takes the demo loans' ids as an array, to be a probe of an index that leads with
# the loan (installments, transactions), the id (loans) or the customer (the real loans a
# demo-written customer may hold): at a million real loans the real rows are never read.
# PostgreSQL's sample of the big tables underestimates how many distinct loans they hold (about
# 12,000 of a million), so it expects 5,000 ids to match 2 million rows and plans a scan of all
# 10 million; sequential scans are turned off for these statements alone (_index_probes_only).
_DEMO_DELETES = [
    ("installments", "DELETE FROM loans_installment WHERE loan_id = ANY(%(loans)s)"),
    ("transactions", "DELETE FROM loans_transaction WHERE loan_id = ANY(%(loans)s)"),
    ("loans", "DELETE FROM loans_loan WHERE id = ANY(%(loans)s)"),
    # Customers the demo tape wrote that hold no real loan (found beforehand, by index probes).
    ("customers", "DELETE FROM loans_customer WHERE id = ANY(%(customers)s)"),
    (
        "changes",
        # The demo batches' own change log, and any other batch's flags about demo rows (a full
        # export loaded before vanished rows were judged per source flagged every demo loan).
        "DELETE FROM loans_batchchange WHERE batch_id = ANY(%(batches)s) "
        "OR (kind IN ('loans', 'customers') AND key = ANY(%(keys)s)) "
        "OR key LIKE %(prefix)s",
    ),
]


def demo_remove(*, dry_run: bool = False) -> DemoRemoval:
    """Remove every row the demo tape brought (source ``demo``: its loans with their schedules
    and cash, its customers that hold no real loan, its batches, their change log and raw files),
    leaving every other row as it was. Runs in one transaction under the book lock, so no import
    interleaves; raw files are deleted once it has committed. The caller recomputes the
    snapshots dated on or after ``since`` (``snapshots_recompute_queue``)."""
    removal = DemoRemoval()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [BOOK_LOCK])
        batches = list(Batch.objects.filter(source=DEMO_SOURCE).values_list("pk", "file"))
        ids = [pk for pk, _ in batches]
        removal.batches = len(ids)
        if not ids:
            return removal
        # The loans' batch index finds them.
        loans = list(
            Loan.objects.filter(batch_id__in=ids).values_list("pk", "loan_id", "disburse_date")
        )
        params: dict[str, Any] = {
            "batches": ids,
            "loans": [pk for pk, _, _ in loans],
            "keys": [key for _, key, _ in loans],
            "prefix": DEMO_PREFIX + "%",
        }
        # None: no demo loan, no snapshot touched.
        removal.since = min((day for _, _, day in loans), default=None)
        # The demo tape's customers, less those that hold a real loan too (kept): by the
        # customers' batch index, then the loans' customer index.
        cursor.execute("SELECT id FROM loans_customer WHERE batch_id = ANY(%(batches)s)", params)
        candidates = [row[0] for row in cursor.fetchall()]
        with _index_probes_only(cursor):
            cursor.execute(
                "SELECT DISTINCT customer_id FROM loans_loan WHERE customer_id = ANY(%s) "
                "AND NOT batch_id = ANY(%s)",
                [candidates, ids],
            )
            holding_real = {row[0] for row in cursor.fetchall()}
        params["customers"] = [pk for pk in candidates if pk not in holding_real]
        removal.customers_kept = len(holding_real)
        kept = set(
            Batch.objects.exclude(source=DEMO_SOURCE)
            .filter(file__in=[name for _, name in batches if name])
            .values_list("file", flat=True)
        )
        removal.files = sorted({name for _, name in batches if name and name not in kept})
        if dry_run:
            for what, statement in _DEMO_DELETES:
                count = statement.replace("DELETE FROM", "SELECT count(*) FROM", 1)
                with _index_probes_only(cursor):
                    cursor.execute(count, params)
                    setattr(removal, what, cursor.fetchone()[0])
            transaction.set_rollback(True)
            return removal
        for what, statement in _DEMO_DELETES:
            with _index_probes_only(cursor):
                cursor.execute(statement, params)
                setattr(removal, what, cursor.rowcount)
        cursor.execute("DELETE FROM loans_upload_batches WHERE batch_id = ANY(%(batches)s)", params)
        # The snapshots' record of the batches they read (kpis' table: named here, not
        # imported, as loans may not import kpis). The as-reported runs keep their numbers; the
        # recomputation records the batches that remain.
        cursor.execute(
            "DELETE FROM kpis_snapshotrun_batches WHERE batch_id = ANY(%(batches)s)", params
        )
        # A later batch of the same bytes from another source points at a demo batch: it stays.
        cursor.execute(
            "UPDATE loans_batch SET duplicate_of_id = NULL "
            "WHERE duplicate_of_id = ANY(%(batches)s) AND NOT id = ANY(%(batches)s)",
            params,
        )
        cursor.execute("DELETE FROM loans_batch WHERE id = ANY(%(batches)s)", params)
        files = removal.files
        transaction.on_commit(lambda: _raw_files_delete(files))
    return removal


@contextmanager
def _index_probes_only(cursor: CursorWrapper) -> Iterator[None]:
    """Within the transaction, for one statement: no sequential scans (see _DEMO_DELETES)."""
    cursor.execute("SET LOCAL enable_seqscan = off")
    try:
        yield
    finally:
        cursor.execute("SET LOCAL enable_seqscan TO DEFAULT")


def _raw_files_delete(names: list[str]) -> None:
    """Through the storage backend, so it works on local disk and Blob storage alike."""
    for name in names:
        if default_storage.exists(name):
            default_storage.delete(name)


def snapshots_recompute_queue(*, since: date) -> str:
    """Have the snapshots dated on or after ``since`` recomputed after rows were removed: the
    ``book_changed`` signal, on which kpis queues a ``kpi_restate`` pipeline run for that range
    (shown with its progress on the pipelines page). Returns what became of it."""
    book_changed.send(sender=Batch, changes_from=since, batch_ids=[], removed=True)
    if settings.Q_CLUSTER.get("sync"):
        return "done"
    return "queued as a kpi_restate run (the pipelines page shows its progress)"
