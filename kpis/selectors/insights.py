"""Reads of stored insights: the one the overview shows and a slice's history."""

from __future__ import annotations

from django.db import connections, router

from kpis.models import Insight
from kpis.selectors.common import Selection

HISTORY = 50

# Insight.Meta.ordering's newest of one run and slice.
INSIGHT_LATEST_ID = """
SELECT id FROM kpis_insight WHERE dimension = %s AND member = %s AND run_id = %s
ORDER BY created_at DESC, id DESC LIMIT 1
"""


def insight_latest(*, run: int | None, dimension: str, member: str) -> Insight | None:
    """The newest insight of a run (by id) and slice (one indexed query)."""
    if run is None:
        return None
    return (
        Insight.objects.filter(run=run, dimension=dimension, member=member)
        .select_related("run", "requested_by")
        .first()
    )


def insight_latest_id(*, run: int | None, dimension: str, member: str) -> int | None:
    """The id of the insight ``insight_latest`` reads (an index probe on ``insight_slice_idx``):
    insights are never changed once written, so the id names what the overview shows. Plain SQL:
    the overview asks on every request, and compiling the ORM's query cost more than running it."""
    if run is None:
        return None
    with connections[router.db_for_read(Insight)].cursor() as cursor:
        cursor.execute(INSIGHT_LATEST_ID, [dimension, member, run])
        row = cursor.fetchone()
    return row[0] if row else None


def insights_history(*, selection: Selection) -> list[Insight]:
    """The selected slice's insights over every run, newest first (the last ``HISTORY``)."""
    return list(
        Insight.objects.filter(dimension=selection.dimension, member=selection.member)
        .select_related("run", "requested_by")
        .order_by("-run__as_of", "-created_at", "-pk")[:HISTORY]
    )
