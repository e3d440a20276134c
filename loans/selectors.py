"""Reads of the loan book (writes are in services)."""

from __future__ import annotations

from collections.abc import Iterable

from loans.models import Batch


def batches_latest_per_source(*, kinds: Iterable[str] | None = None) -> list[Batch]:
    """The newest batch of each source and kind (duplicates of earlier bytes left out): the data
    status managers read, and what the KPI quality gate checks."""
    batches = Batch.objects.exclude(status=Batch.Status.DUPLICATE)
    if kinds is not None:
        batches = batches.filter(kind__in=list(kinds))
    return list(batches.order_by("source", "kind", "-created_at").distinct("source", "kind"))
