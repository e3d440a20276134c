"""Tasks the cluster runs for the kpis app: they take plain values, load, and call a service.

Views and schedules queue them by dotted path; lower layers must (``async_task("kpis.tasks....")``),
since ``loans`` may not import ``kpis``."""

from __future__ import annotations

import contextlib

from auditlog.context import set_actor
from django.contrib.auth.models import User

from kpis.insights.services import insight_generate
from kpis.models import SnapshotRun


def insight_regenerate_task(run_id: int, dimension: str, member: str, user_id: int | None) -> str:
    """A manager asked for a new insight of one slice at one run: write, check and store it, as
    that manager, under a run's limits of its own."""
    run = SnapshotRun.objects.get(pk=run_id)
    user = User.objects.filter(pk=user_id).first() if user_id else None
    with set_actor(user) if user else contextlib.nullcontext():
        insight = insight_generate(
            run=run, dimension=dimension, member=member, job="regenerate", by=user
        )
    return f"insight {insight.pk}: {insight.get_source_display()}"
