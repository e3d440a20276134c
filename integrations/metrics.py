"""Pipeline and load figures for /metrics (abaco.metrics), read from the database at scrape time
so they hold whichever process ran the job."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta

from django.db.models import Count, F, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from integrations.models import PipelineRun
from loans.models import Batch
from loans.selectors import book_data_through


def data_through_age_seconds() -> float | None:
    """Seconds from the end of the book's data-through date (the operators' day) to now: the
    age the "Data through" line and the stale-book alert read, in the unit alerts compare."""
    through = book_data_through()
    if through is None:
        return None
    end = datetime.combine(
        through + timedelta(days=1), time.min, tzinfo=timezone.get_current_timezone()
    )
    return (timezone.now() - end).total_seconds()


class PipelineCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        runs = CounterMetricFamily(
            "abaco_pipeline_runs",
            "Pipeline runs by job and final status.",
            labels=["job", "status"],
        )
        seconds = CounterMetricFamily(
            "abaco_pipeline_duration_seconds",
            "Total seconds pipeline runs took, by job (divide by runs for the mean).",
            labels=["job"],
        )
        last = GaugeMetricFamily(
            "abaco_pipeline_last_duration_seconds",
            "Duration of a job's latest run.",
            labels=["job"],
        )
        failed = GaugeMetricFamily(
            "abaco_pipeline_last_run_failed",
            "1 when a job's latest finished run failed (the pipeline-failure alert).",
            labels=["job"],
        )
        finished = PipelineRun.objects.exclude(
            status__in=[PipelineRun.Status.QUEUED, PipelineRun.Status.RUNNING]
        )
        for job, status, n in (
            finished.values_list("job", "status").annotate(n=Count("id")).order_by("job")
        ):
            runs.add_metric([job, status], n)
        for job, ms in finished.values_list("job").annotate(ms=Sum("duration_ms")).order_by("job"):
            seconds.add_metric([job], (ms or 0) / 1000)
        latest = finished.order_by("job", "-created_at").distinct("job")
        for run in latest.only("job", "status", "duration_ms"):
            last.add_metric([run.job], (run.duration_ms or 0) / 1000)
            failed.add_metric([run.job], 1 if run.status == PipelineRun.Status.FAILED else 0)

        rows = CounterMetricFamily(
            "abaco_rows_loaded",
            "Rows inserted or updated by loaded batches, by source and kind.",
            labels=["source", "kind"],
        )
        loaded = (
            Batch.objects.filter(status=Batch.Status.LOADED)
            .values_list("source", "kind")
            .annotate(n=Sum(F("rows_inserted") + F("rows_updated")))
            .order_by("source", "kind")
        )
        for source, kind, n in loaded:
            rows.add_metric([source, kind], n or 0)
        failed_batches = GaugeMetricFamily(
            "abaco_batches_failed", "Batches whose load failed (refused files: data quality)."
        )
        failed_batches.add_metric([], Batch.objects.filter(status=Batch.Status.FAILED).count())
        yield from (runs, seconds, last, failed, rows, failed_batches)

        age = data_through_age_seconds()
        if age is not None:
            yield GaugeMetricFamily(
                "abaco_data_through_age_seconds",
                "Age of the book's data (stale-data alert).",
                value=age,
            )
