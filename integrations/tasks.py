"""Tasks the cluster runs for the integrations app (schedules name these by dotted path)."""

from __future__ import annotations

import contextlib

from auditlog.context import set_actor
from django_q.tasks import async_task

from integrations.alerts import alert_send
from integrations.models import PipelineRun
from integrations.pipelines import (
    PipelineBusy,
    book_stale_check,
    pipeline_execute,
    pipeline_start,
    pipelines_overdue,
)
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
    # Loads whose process died are marked failed here too, so nothing spins "running" forever.
    imports_recover()
    overdue = pipelines_overdue()
    stale = book_stale_check()
    said = [f"{name} due {due:%H:%M}" for name, due in overdue]
    if stale is not None:
        said.append(f"book stale since {stale.through:%Y-%m-%d}")
    return ", ".join(said) or "all on time"


def _compliance_job(name: str, run) -> str:
    """Run a compliance job; a failure alerts on every channel and is raised to django-q2."""
    try:
        return run()
    except Exception as exc:
        alert_send(subject=f"{name} failed", body=f"{type(exc).__name__}: {exc}")
        raise


def audit_daily_task() -> str:
    """Verify the audit journal's chain (and the day hashes exported before), then export
    yesterday's journal as JSONL ending with its last hash (AUDIT_EXPORT_DIR)."""
    from compliance.retention import audit_daily

    return _compliance_job("audit_daily", audit_daily)


def retention_daily_task() -> str:
    """Retention: a dry-run report, then the run; customers and loans on legal hold are kept."""
    from compliance.retention import retention_daily

    return _compliance_job("retention_daily", retention_daily)
