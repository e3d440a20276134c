"""Reads of the audit history: django-auditlog's field edits and the journal (access log,
imports, reviews, role and setting changes, retention)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from auditlog.models import LogEntry
from django.db.models import Q, QuerySet
from django.utils import timezone

from compliance.models import JournalEntry

# What each tab of the workbench reads from the journal.
ACCESS_KINDS = (JournalEntry.Kind.ACCESS, JournalEntry.Kind.SIGN_IN)


def day_start(day: date | None) -> datetime | None:
    """Midnight of ``day`` in the operators' time zone (the zone the workbench names)."""
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day, time.min))


def day_after_start(day: date) -> datetime | None:
    """Midnight after ``day`` (an ``until`` included), or None past the last date there is."""
    return day_start(day + timedelta(days=1)) if day < date.max else None


def audit_entries(
    *,
    model: str = "",
    actor: str = "",
    object_pk: str = "",
    action: str = "",
    since: date | None = None,
    until: date | None = None,
    models: list[str] | None = None,
) -> QuerySet[LogEntry]:
    """Field edits newest first, optionally for one model ("loans.loan"), actor, object, action
    (create, update, delete) and date range (``until`` included), or a set of ``models``."""
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-id")
    if model:
        app_label, _, model_name = model.partition(".")
        entries = entries.filter(content_type__app_label=app_label, content_type__model=model_name)
    if models:
        wanted = Q()
        for label in models:
            app_label, _, model_name = label.partition(".")
            wanted |= Q(content_type__app_label=app_label, content_type__model=model_name)
        entries = entries.filter(wanted)
    if actor:
        entries = entries.filter(actor__username=actor)
    if object_pk:
        entries = entries.filter(object_pk=object_pk)
    if action:
        codes = {label: code for code, label in LogEntry.Action.choices}
        if action in codes:
            entries = entries.filter(action=codes[action])
    if since:
        entries = entries.filter(timestamp__gte=day_start(since))
    if until and (end := day_after_start(until)) is not None:
        entries = entries.filter(timestamp__lt=end)
    return entries


def journal_entries(
    *,
    kinds: tuple[str, ...] | list[str] = (),
    actor: str = "",
    action: str = "",
    object: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[JournalEntry]:
    """Journal entries newest first; ``actor`` is the username as it was written."""
    entries = JournalEntry.objects.order_by("-id")
    if kinds:
        entries = entries.filter(kind__in=list(kinds))
    if actor:
        entries = entries.filter(actor=actor)
    if action:
        entries = entries.filter(action=action)
    if object:
        entries = (
            entries.filter(object=object)
            if ":" in object
            else entries.filter(object__startswith=object)
        )
    if since:
        entries = entries.filter(at__gte=day_start(since))
    if until and (end := day_after_start(until)) is not None:
        entries = entries.filter(at__lt=end)
    return entries
