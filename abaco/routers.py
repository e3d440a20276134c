"""Reads for dashboards and the API from a read replica (``DATABASE_REPLICA_URL``).

Only what cannot go wrong on a replica goes there: the book and its snapshots (apps in
``REPLICA_APPS``) read during a GET or HEAD of a view in ``REPLICA_NAMESPACES``, outside any
write transaction. Everything else reads the primary: sessions, users and permissions (a login
just written must be seen), the task queue, the audit log, commands and tasks (they write, and
read what they wrote). A replica lags its primary by a moment; pages that read snapshots can
afford that, the admin and the upload flow cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.db import connections
from django.db.models import Model
from django.http import HttpRequest, HttpResponse

REPLICA = "replica"
REPLICA_APPS = {"kpis", "loans"}
# The dashboards (kpis) and the REST API when it is served under the "api" namespace.
REPLICA_NAMESPACES = {"kpis", "api"}

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)


class ReplicaRouter:
    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if (
            _replica_reads.get()
            and model._meta.app_label in REPLICA_APPS
            and not connections["default"].in_atomic_block  # a write transaction reads its writes
        ):
            return REPLICA
        return "default"

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return "default"

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        return True  # the same data on both

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db != REPLICA  # a replica follows its primary's schema


class ReplicaReadsMiddleware:
    """Marks the requests whose reads may go to the replica (see the module's docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _replica_reads.set(False)
        try:
            return self.get_response(request)
        finally:
            _replica_reads.reset(token)

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> None:
        match = request.resolver_match
        if (
            request.method in ("GET", "HEAD")
            and match is not None
            and REPLICA_NAMESPACES.intersection(match.namespaces)
            and REPLICA in connections.settings
        ):
            _replica_reads.set(True)
