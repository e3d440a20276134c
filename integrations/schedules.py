"""The scheduled jobs, declared in code and synced into django-q2 by ``manage.py setup_schedules``.

Times are Central European Time as the operators run them (docs/design.md, "Scheduled work"). Each job
is added here in the same change that adds its task; schedules are never created at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    cron: str  # minute hour day month weekday, in TIME_ZONE
    doc: str
    func: str = "integrations.tasks.pipeline_task"  # dotted path to the task
    args: str = ""  # the task's arguments as django-q2 stores them (a Python literal)


def _pipeline(name: str, cron: str, doc: str) -> Job:
    return Job(name=name, cron=cron, doc=doc, args=repr(name))


# Catch-up is off (Q_CLUSTER["catch_up"]): a cluster that was down runs each job once when it
# comes back, not once per missed day; kpi_daily fills missing month-ends itself.
JOBS: list[Job] = [
    _pipeline(
        "cascade_ingest", "0 6 * * *", "Fetch the Cascade loan-tape export, land raw, normalize."
    ),
    _pipeline(
        "daily_ingest", "0 7 * * *", "HubSpot contacts/companies/deals (incremental), segments."
    ),
    _pipeline(
        "kpi_daily",
        "30 7 * * *",
        "Loan states and KPI snapshots for yesterday and missing month-ends.",
    ),
    _pipeline("meta_ingest", "0 8 * * *", "Meta ad insights, daily rows per campaign."),
    Job(
        name="pipelines_watch",
        cron="*/15 * * * *",
        doc="Alert once when a job has not finished a run within PIPELINE_OVERDUE_HOURS of its time.",
        func="integrations.tasks.pipelines_watch_task",
    ),
]
