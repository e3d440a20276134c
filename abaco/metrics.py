"""Prometheus metrics at ``/metrics`` (docs/operations.md, "Metrics and alerts").

Two kinds of figures:
- **Per request** (latency histogram and responses by view, method and status), counted by
  ``RequestMetricsMiddleware`` in whichever gunicorn worker served the request. With
  ``PROMETHEUS_MULTIPROC_DIR`` set (infra/gunicorn.conf.py sets it) prometheus-client's
  multiprocess mode keeps each worker's values in files there and ``/metrics`` adds them up, so
  a scrape that lands on any worker sees the whole instance. We use prometheus-client directly
  rather than django-prometheus: the figures we need are a handful, django-prometheus would
  wrap the database engine and cache for metrics nobody asked for, and under gunicorn it relies
  on the same multiprocess mode anyway.
- **From the database** (pipeline runs and durations by job, rows loaded, data-through age,
  snapshot compute time): read at scrape time by the collectors of ``COLLECTORS``, so they are
  right whichever process ran the job (the task cluster, a command, another instance) and
  survive restarts. Each lives in the app that owns its tables (named by dotted path, as the
  jobs registry names tasks: abaco sits below them).

Reachable only with ``Authorization: Bearer <METRICS_TOKEN>`` or from ``METRICS_ALLOWED_IPS``
(addresses or networks); with neither set it answers 403 to everyone.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# The design's response-time alert is at 5 s: buckets resolve around it.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "abaco_http_request_duration_seconds",
    "Time to answer a request, by Django view.",
    ["view", "method"],
    buckets=LATENCY_BUCKETS,
)
RESPONSES = Counter(
    "abaco_http_responses",
    "Responses by Django view, method and status code.",
    ["view", "method", "status"],
)

COLLECTORS = [
    "integrations.metrics.PipelineCollector",
    "kpis.metrics.SnapshotCollector",
]


def _view_name(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unresolved>"  # a 404 that matched no URL: one label, not one per path
    return match.view_name or match._func_path


class RequestMetricsMiddleware:
    """Counts every request by the view that served it (never by path: paths carry ids)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        view = _view_name(request)
        if view != "metrics":  # the scraper's own requests would only measure the scraper
            method = request.method if request.method in _METHODS else "other"
            REQUEST_SECONDS.labels(view, method).observe(time.perf_counter() - started)
            RESPONSES.labels(view, method, str(response.status_code)).inc()
        return response


_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:], token):
        return True
    address = request.META.get("REMOTE_ADDR", "")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(
        ip in ipaddress.ip_network(allowed, strict=False)
        for allowed in settings.METRICS_ALLOWED_IPS
    )


def registry() -> CollectorRegistry:
    """This instance's figures: every worker's (multiprocess mode) or this process', plus the
    database collectors."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        target = CollectorRegistry()
        MultiProcessCollector(target)
    else:
        target = CollectorRegistry()
        target.register(_Process())
    for path in COLLECTORS:
        target.register(import_string(path)())
    return target


class _Process(Collector):
    """This process' own metrics (the default registry), when there is one process."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
