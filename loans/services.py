"""Writes to the loan book. The tape import is the one way tapes get in: admin uploads, the
``import_tape`` command, the scheduled Cascade job and ``demo_data`` all call ``tape_import``,
which runs ``loans.imports.tape`` (the import, phase by phase).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from compliance.exports import cell_safe
from loans.imports.statements import statements_import
from loans.imports.tape import TapeImport, source_format, tape_import
from loans.lineage import LoadResult, Problem, TapeRejected, errors_of
from loans.models import BatchChange, Upload

if TYPE_CHECKING:
    from django.contrib.auth.models import User

__all__ = [
    "TapeImport",
    "batch_changes_review",
    "source_format",
    "tape_import",
    "upload_load",
    "upload_preview",
    "upload_queue",
]


def upload_preview(*, upload: Upload) -> TapeImport:
    """Validate an uploaded tape without keeping anything: what would load, and every problem."""
    return tape_import(
        path=upload.file.path, source=upload.source, by=upload.created_by, dry_run=True
    )


def upload_queue(*, upload: Upload) -> bool:
    """Send a draft upload to the task cluster (the admin's confirm, the API's POST); False when
    it was already sent. The task is queued once the caller's transaction commits."""
    sent = Upload.objects.filter(pk=upload.pk, status=Upload.Status.DRAFT).update(
        status=Upload.Status.QUEUED
    )
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

    Upload.objects.filter(pk=upload.pk).update(
        status=Upload.Status.RUNNING, started_at=timezone.now(), progress=0
    )
    result: LoadResult | None = None
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
        result = rejected.result
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
    rejected_rows = (result.rejected_rows if result is not None else []) or errors_of(problems)
    if rejected_rows:
        upload.rejects.save(
            f"upload-{upload.pk}-rejected-rows.csv", _rejects_csv(rejected_rows), save=False
        )
    upload.save()
    if result is not None and result.batches:
        upload.batches.set(result.batches)


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
    return changes.filter(review=BatchChange.Review.PENDING).update(
        review=BatchChange.Review.ACCEPTED if accept else BatchChange.Review.REJECTED,
        review_reason=reason.strip(),
        reviewed_by=by,
        reviewed_at=timezone.now(),
    )
