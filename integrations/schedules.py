"""The scheduled jobs, declared in code and synced into django-q2 by ``manage.py setup_schedules``.

Times are Central European Time as the operators run them (DESIGN.md, "Scheduled work"). Each job
is added here in the same change that adds its task; schedules are never created at import time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    func: str  # dotted path to the task
    cron: str  # minute hour day month weekday, in TIME_ZONE
    doc: str


JOBS: list[Job] = [
    Job(
        name="kpi_daily",
        func="kpis.tasks.kpi_daily_task",
        cron="30 7 * * *",
        doc="Loan states and KPI snapshots for yesterday and any missing month-end.",
    ),
]
