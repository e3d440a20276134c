"""Tasks the cluster runs for the integrations app (schedules name these by dotted path)."""

from __future__ import annotations

import contextlib

from auditlog.context import set_actor
from django_q.tasks import async_task

from integrations.models import PipelineRun
from integrations.pipelines import (
    PipelineBusy,
    book_stale_check,
    pipeline_execute,
    pipeline_start,
    pipelines_overdue,
)


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


def pipeline_queue(name: str, params: dict) -> str:
    """Queue a run of a job another layer asks for by name (kpis, after a load that changed the
    past, for ``kpi_restate``): the run shows as queued on the status page at once, and the
    cluster runs it. One already queued reads what is stale when it starts; one running re-reads
    it before it ends, and kpi_daily restates whatever is still stale."""
    try:
        run = pipeline_start(name=name, trigger=PipelineRun.Trigger.LOAD, params=params)
    except PipelineBusy as busy:
        return str(busy)
    async_task("integrations.tasks.pipeline_run_task", run.pk, task_name=f"{name} #{run.pk}")
    return f"queued run {run.pk}"


def pipelines_watch_task() -> str:
    overdue = pipelines_overdue()
    stale = book_stale_check()
    said = [f"{name} due {due:%H:%M}" for name, due in overdue]
    if stale is not None:
        said.append(f"book stale since {stale.through:%Y-%m-%d}")
    return ", ".join(said) or "all on time"
