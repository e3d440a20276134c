"""Which stored snapshots a later load changed (docs/design.md, "Data cut-off and
restatement"): a snapshot read every loaded batch of the book when it was computed
(``SnapshotRun.batches``); a loaded batch it did not read whose earliest changed row
(``Batch.changes_from``) is dated on or before its date makes it stale until it is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db.models import Exists, OuterRef, QuerySet

from kpis.engine.runs import BOOK_KINDS
from kpis.models import SnapshotRun
from loans.models import Batch

READ = SnapshotRun.batches.through


def _unread_changes() -> QuerySet[Batch]:
    """Loaded book batches that changed a row dated on or before the outer run's date and that
    the outer run did not read."""
    read = READ.objects.filter(snapshotrun_id=OuterRef(OuterRef("pk")), batch_id=OuterRef("pk"))
    return (
        Batch.objects.loaded()
        .filter(kind__in=BOOK_KINDS, changes_from__lte=OuterRef("as_of"))
        .exclude(Exists(read))
    )


def runs_stale() -> QuerySet[SnapshotRun]:
    """The standing runs (restated where a date has one) that a later load changed."""
    return SnapshotRun.objects.standing().filter(Exists(_unread_changes()))


def stale_dates() -> list[date]:
    """The dates of ``runs_stale``, oldest first."""
    return sorted(set(runs_stale().values_list("as_of", flat=True)))


def run_changed_by(run: SnapshotRun) -> list[Batch]:
    """The loaded batches that changed ``run``'s date after it was computed (none: it stands)."""
    read = READ.objects.filter(snapshotrun_id=run.pk, batch_id=OuterRef("pk"))
    return list(
        Batch.objects.loaded()
        .filter(kind__in=BOOK_KINDS, changes_from__lte=run.as_of)
        .exclude(Exists(read))
        .order_by("created_at")
    )


@dataclass(frozen=True)
class AffectedSnapshot:
    as_of: date
    basis: str
    status: str  # "recomputed" (it read the batch) or "pending" (waiting for kpi_restate)


def batch_snapshots(batch: Batch) -> list[AffectedSnapshot]:
    """The stored snapshot dates a batch changed (on or after its ``changes_from``) and whether
    each has been recomputed with it: the batch page's section."""
    if batch.changes_from is None or batch.status != Batch.Status.LOADED:
        return []
    read = READ.objects.filter(snapshotrun_id=OuterRef("pk"), batch_id=batch.pk)
    runs = (
        SnapshotRun.objects.standing()
        .filter(as_of__gte=batch.changes_from)
        .annotate(has_read=Exists(read))
        .order_by("as_of")
        .values_list("as_of", "basis", "has_read")
    )
    return [
        AffectedSnapshot(day, basis, "recomputed" if has_read else "pending")
        for day, basis, has_read in runs
    ]
