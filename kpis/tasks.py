"""Tasks the cluster runs for the kpis app: they take plain values, load, and call a service.

Lower layers queue these by dotted path (``async_task("kpis.tasks....")``): ``loans`` may not
import ``kpis``."""

from __future__ import annotations

from datetime import date

from kpis.models import SnapshotRun
from kpis.services import snapshots_compute


def snapshots_recompute_task(since: str, job: str) -> list[str]:
    """Recompute every stored snapshot dated on or after ``since`` (ISO date), oldest first: each
    one whose numbers change is kept as *restated* beside its as-reported run."""
    dates = sorted(
        SnapshotRun.objects.filter(as_of__gte=date.fromisoformat(since))
        .values_list("as_of", flat=True)
        .distinct()
    )
    for day in dates:
        snapshots_compute(dates=day, job=job)
    return [day.isoformat() for day in dates]
