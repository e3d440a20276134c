"""Health endpoints for App Service and load balancers.

``/healthz`` (and ``/?page=health``, App Service's health-check path) says the web process is up
and touches nothing else, so a database outage does not get instances recycled. ``/readyz`` says
whether this instance can do its work: the database answers and a task cluster is alive; it
also reports the book's data-through date and its age in days.
"""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.status import Stat

DATA_AGE = "loans.selectors.data_age"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_reason() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"database unreachable: {exc.__class__.__name__}"
    return None


def _cluster_reason() -> str | None:
    try:
        clusters = Stat.get_all()
    except (
        Exception
    ) as exc:  # the stats live in the shared cache; any failure there means "unknown"
        return f"task cluster status unavailable: {exc.__class__.__name__}"
    if not any(stat.status not in ("Stopped", "Stopping") for stat in clusters):
        return "no task cluster is running"
    return None


def _data() -> dict:
    """The book's data-through date and age (reported, not a readiness condition: a stale book
    alerts through the pipelines watch). By dotted path: abaco sits below loans."""
    age = import_string(DATA_AGE)()
    return {
        "data_through": age.through.isoformat() if age.through else None,
        "data_age_days": age.days,
        "data_stale": age.stale,
    }


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_reason()}
    checks["task_cluster"] = (
        _cluster_reason() if checks["database"] is None else "skipped: database down"
    )
    data = _data() if checks["database"] is None else {}
    failing = {name: reason for name, reason in checks.items() if reason}
    if failing:
        return JsonResponse({"status": "unavailable", "reasons": failing, **data}, status=503)
    return JsonResponse({"status": "ok", **data})
