"""The pipeline status page: how each job last ran, what failed and why, when it runs next."""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_q.tasks import async_task

from abaco.roles import role_required
from integrations.models import PipelineRun
from integrations.pipelines import PipelineBusy, PipelineUnknown, pipeline_start, pipelines_latest


@role_required("integrations.view_pipelines")
def status(request: HttpRequest) -> HttpResponse:
    ctx = {
        "pipelines": pipelines_latest(),
        "time_zone": settings.TIME_ZONE,
        "slack": bool(settings.SLACK_WEBHOOK_URL),
    }
    return render(request, "integrations/status.html", ctx)


@require_POST
@role_required("kpis.recompute_snapshots")
def recompute(request: HttpRequest) -> HttpResponse:
    """A steward's "Recompute snapshots" for a date range: a ``kpi_restate`` run in the cluster."""
    try:
        start = date.fromisoformat(request.POST.get("from", ""))
        end = date.fromisoformat(request.POST.get("to", ""))
    except ValueError:
        messages.error(request, "Give both dates of the range as YYYY-MM-DD.")
        return redirect("integrations:status")
    if start > end:
        messages.error(request, f"The range starts ({start}) after it ends ({end}).")
        return redirect("integrations:status")
    try:
        run = pipeline_start(
            name="kpi_restate",
            trigger=PipelineRun.Trigger.PAGE,
            by=request.user,
            params={"from": start.isoformat(), "to": end.isoformat()},
        )
    except PipelineBusy as refused:
        messages.warning(request, str(refused))
        return redirect("integrations:status")
    transaction.on_commit(
        lambda: async_task(
            "integrations.tasks.pipeline_run_task", run.pk, task_name=f"kpi_restate #{run.pk}"
        )
    )
    messages.success(
        request,
        f"Recomputing the snapshots from {start} to {end} (run {run.pk}); "
        "its progress shows below under kpi_restate.",
    )
    return redirect("integrations:status")


@require_POST
@role_required("integrations.run_pipelines")
def rerun(request: HttpRequest, name: str) -> HttpResponse:
    try:
        run = pipeline_start(name=name, trigger=PipelineRun.Trigger.PAGE, by=request.user)
    except (PipelineBusy, PipelineUnknown) as refused:
        messages.warning(request, str(refused))
    else:
        transaction.on_commit(
            lambda: async_task(
                "integrations.tasks.pipeline_run_task", run.pk, task_name=f"{name} #{run.pk}"
            )
        )
        messages.success(
            request, f"{name} queued (run {run.pk}); this page shows it when it starts."
        )
    return redirect("integrations:status")
