"""Tasks the cluster runs for the integrations app (schedules name these by dotted path)."""

from __future__ import annotations

import contextlib

from auditlog.context import set_actor

from integrations.models import PipelineRun
from integrations.pipelines import PipelineBusy, pipeline_execute, pipeline_start, pipelines_overdue
from loans.services import imports_recover


def pipeline_task(name: str) -> str:
    """A schedule fired: run the job now (a run still going is left alone, not doubled)."""
    try:
        run = pipeline_start(name=name, trigger=PipelineRun.Trigger.SCHEDULE)
    except PipelineBusy as busy:
        return str(busy)
    return str(pipeline_execute(run))


def pipeline_run_task(run_id: int) -> str:
    """Run a run queued from the status page or the command, as the person who asked for it."""
    run = PipelineRun.objects.select_related("created_by").get(pk=run_id)
    if run.status != PipelineRun.Status.QUEUED:
        return f"run {run_id} is {run.status}: nothing to do"
    with set_actor(run.created_by) if run.created_by else contextlib.nullcontext():
        return str(pipeline_execute(run))


def pipelines_watch_task() -> str:
    # Loads whose process died are marked failed here too, so nothing spins "running" forever.
    imports_recover()
    overdue = pipelines_overdue()
    return ", ".join(f"{name} due {due:%H:%M}" for name, due in overdue) or "all on time"
