"""Snapshot figures for /metrics (abaco.metrics), read from the stored runs at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kpis.models import SnapshotRun


class SnapshotCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        latest = (
            SnapshotRun.objects.order_by("-computed_at")
            .only("as_of", "duration_ms", "loans", "provisional")
            .first()
        )
        if latest is None:
            return
        yield GaugeMetricFamily(
            "abaco_snapshot_compute_seconds",
            "Seconds the latest computed KPI snapshot took.",
            value=latest.duration_ms / 1000,
        )
        yield GaugeMetricFamily(
            "abaco_snapshot_loans",
            "Loans with a balance in the latest computed snapshot.",
            value=latest.loans,
        )
        yield GaugeMetricFamily(
            "abaco_snapshot_provisional",
            "1 when the latest computed snapshot is provisional (an import failed or waits for review).",
            value=1 if latest.provisional else 0,
        )
