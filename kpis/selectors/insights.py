"""Reads of stored insights: the one the overview shows and a slice's history."""

from __future__ import annotations

from kpis.models import Insight
from kpis.selectors.common import Selection

HISTORY = 50


def insight_latest(*, run: int | None, dimension: str, member: str) -> Insight | None:
    """The newest insight of a run (by id) and slice (one indexed query)."""
    if run is None:
        return None
    return (
        Insight.objects.filter(run=run, dimension=dimension, member=member)
        .select_related("run", "requested_by")
        .first()
    )


def insights_history(*, selection: Selection) -> list[Insight]:
    """The selected slice's insights over every run, newest first (the last ``HISTORY``)."""
    return list(
        Insight.objects.filter(dimension=selection.dimension, member=selection.member)
        .select_related("run", "requested_by")
        .order_by("-run__as_of", "-created_at", "-pk")[:HISTORY]
    )
