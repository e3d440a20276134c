"""Reads of the audit history (django-auditlog's LogEntry)."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.db.models import QuerySet


def audit_entries(*, model: str = "", actor: str = "", object_pk: str = "") -> QuerySet[LogEntry]:
    """Audit entries newest first, optionally for one model ("loans.loan"), actor or object."""
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")
    if model:
        app_label, _, model_name = model.partition(".")
        entries = entries.filter(content_type__app_label=app_label, content_type__model=model_name)
    if actor:
        entries = entries.filter(actor__username=actor)
    if object_pk:
        entries = entries.filter(object_pk=object_pk)
    return entries
