"""Tasks the cluster runs for the kpis app."""

from kpis.services import kpi_daily


def kpi_daily_task() -> str:
    runs = kpi_daily()
    return ", ".join(str(run) for run in runs)
