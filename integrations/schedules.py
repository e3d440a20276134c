"""The scheduled jobs: one registry that both the pipelines and django-q2's schedules read.

A job is declared once here: when it runs (cron, in Central European Time as the operators run
them, docs/design.md, "Scheduled work") and, for a pipeline, what runs and which setting turns it on.
``integrations.pipelines`` runs the pipelines of this list; ``manage.py setup_schedules`` syncs the
whole list into django-q2. Each job is added here in the same change that adds its code; schedules
are never created at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

PIPELINE_TASK = "integrations.tasks.pipeline_task"


@dataclass(frozen=True)
class Job:
    name: str
    cron: str  # minute hour day month weekday, in TIME_ZONE; "" for a job run only on demand
    doc: str  # shown on the pipeline status page
    # A pipeline: the dotted path of its function, (ctx: RunContext) -> None, run through
    # ``PIPELINE_TASK`` and recorded as a ``PipelineRun``.
    run: str = ""
    setting: str = ""  # the *_ENABLED setting that turns the pipeline on ("" = always on)
    ingest: bool = False  # fetches from a provider: ``run_pipeline ingest`` runs these at once
    # Any other job: the dotted path of the task the schedule calls, with no arguments.
    task: str = ""

    @property
    def is_pipeline(self) -> bool:
        return bool(self.run)

    @property
    def func(self) -> str:
        """The task django-q2 calls."""
        return PIPELINE_TASK if self.is_pipeline else self.task

    @property
    def args(self) -> str:
        """The task's arguments as django-q2 stores them (a Python literal)."""
        return repr(self.name) if self.is_pipeline else ""

    def enabled(self) -> bool:
        return not self.setting or bool(getattr(settings, self.setting))


# Catch-up is off (Q_CLUSTER["catch_up"]): a cluster that was down runs each job once when it
# comes back, not once per missed day; kpi_daily fills missing month-ends itself.
JOBS: list[Job] = [
    Job(
        "cascade_ingest",
        "0 6 * * *",
        "Fetch the Cascade loan-tape export, keep it raw, import it.",
        run="integrations.cascade.ingest.cascade_ingest",
        setting="CASCADE_ENABLED",
        ingest=True,
    ),
    Job(
        "daily_ingest",
        "0 7 * * *",
        "HubSpot contacts, companies and deals (incremental), then customer segments.",
        run="integrations.hubspot.sync.hubspot_ingest",
        setting="HUBSPOT_ENABLED",
        ingest=True,
    ),
    Job(
        "kpi_daily",
        "30 7 * * *",
        "Customer segments from the book, then loan states and KPI snapshots up to the earlier of "
        "yesterday and the book's data-through date, and any missing month-end.",
        run="kpis.services.kpi_daily_pipeline",
    ),
    Job(
        "kpi_restate",
        "",
        "Recompute the snapshots a load changed (queued by the load) or a steward's date range, "
        "as restated beside the as-reported numbers.",
        run="kpis.services.kpi_restate_pipeline",
    ),
    Job(
        "meta_ingest",
        "0 8 * * *",
        "Meta ad insights: daily rows per campaign, rolled up to monthly marketing spend.",
        run="integrations.meta.sync.meta_ingest",
        setting="META_ENABLED",
        ingest=True,
    ),
    Job(
        "audit_daily",
        "30 2 * * *",
        "Verify the audit journal's hash chain (and the day hashes exported before), then "
        "export yesterday's journal as JSONL with its last hash. A broken chain alerts.",
        task="integrations.tasks.audit_daily_task",
    ),
    Job(
        "retention_daily",
        "0 3 * * *",
        "Anonymise personal data past its retention period, except customers and loans on legal "
        "hold (see manage.py retention --dry-run first).",
        task="integrations.tasks.retention_daily_task",
    ),
    Job(
        "backup_daily",
        "0 2 * * *",
        "Database dump and the raw files it references, with checksums; then retention.",
        run="compliance.backups.backup_pipeline",
    ),
    Job(
        "restore_check_weekly",
        "0 4 * * 0",
        "Restore the latest backup into a scratch database and prove it (docs/runbooks/restore.md).",
        run="compliance.backups.restore_check_pipeline",
    ),
    Job(
        "pipelines_watch",
        "*/15 * * * *",
        "Alert once when a job has not finished a run within PIPELINE_OVERDUE_HOURS of its time.",
        task="integrations.tasks.pipelines_watch_task",
    ),
]


def schedule_refusal(
    *, name: str, func: str, args: str | None, kwargs: str | None, hook: str | None
) -> str:
    """Why a django-q2 schedule is not one of ``JOBS`` (then the cluster must not run it), or "".

    A schedule is code the cluster runs with its own rights: only the declared job of that name,
    with exactly its function and arguments and nothing hooked on, may exist.
    """
    job = next((j for j in JOBS if j.name == name), None)
    if job is None:
        return f"schedule {name!r} is not a declared job (integrations/schedules.py)"
    if func != job.func or (args or "") != job.args or (kwargs or "") or hook:
        return f"schedule {name!r} must call {job.func}({job.args}) and nothing else"
    return ""


def schedule_save_refuse(sender: object, instance: Any, **kwargs: Any) -> None:
    """pre_save of django-q2's Schedule: an undeclared schedule is refused, whoever saves it."""
    from django.core.exceptions import ValidationError

    why = schedule_refusal(
        name=instance.name or "",
        func=instance.func or "",
        args=instance.args,
        kwargs=instance.kwargs,
        hook=instance.hook,
    )
    if why:
        raise ValidationError(why)


def schedules_flag() -> list[str]:
    """At cluster start: switch off (``repeats=0``) and report every stored schedule that is not a
    declared job, one made before this check existed or written to the table directly."""
    import logging

    from django_q.models import Schedule

    flagged = []
    for s in Schedule.objects.exclude(repeats=0):
        why = schedule_refusal(
            name=s.name or "", func=s.func, args=s.args, kwargs=s.kwargs, hook=s.hook
        )
        if why:
            flagged.append(why)
            Schedule.objects.filter(pk=s.pk).update(repeats=0)  # update(): no pre_save refusal
    if flagged:
        logging.getLogger(__name__).error(
            "undeclared schedules switched off", extra={"schedules": flagged}
        )
    return flagged
