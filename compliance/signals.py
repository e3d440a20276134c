"""Receivers that feed the journal and guard attribution (connected in ``ComplianceConfig``)."""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError

from compliance.journal import journal_append
from compliance.models import JournalEntry

# Where a change recorded by django-auditlog goes in the journal, by the record's app label or
# "app.model"; anything else is a field edit of book data.
CHANGE_KINDS = {
    "auth": JournalEntry.Kind.ROLE,
    "django_q.schedule": JournalEntry.Kind.SETTING,
    "loans.columnmap": JournalEntry.Kind.SETTING,
    "compliance.fieldclassification": JournalEntry.Kind.SETTING,
    "compliance.legalhold": JournalEntry.Kind.RETENTION,
}


def journal_log_entry(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """Every django-auditlog entry (already redacted) is copied into the journal."""
    if not created:
        return
    ct = instance.content_type
    label = f"{ct.app_label}.{ct.model}"
    actor = instance.actor
    journal_append(
        kind=CHANGE_KINDS.get(label) or CHANGE_KINDS.get(ct.app_label) or JournalEntry.Kind.CHANGE,
        action=instance.get_action_display(),
        by=actor,
        object=f"{label}:{instance.object_pk}",
        at=instance.timestamp,
        object_repr=instance.object_repr,
        changes=instance.changes,
        ip=instance.remote_addr or "",
        log_entry=instance.pk,
    )


def user_delete_refuse(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A user who appears in the audit history is deactivated, never deleted: deleting would turn
    their entries into "system" (django-auditlog nulls the actor)."""
    from auditlog.models import LogEntry

    if (
        JournalEntry.objects.filter(actor_id=instance.pk).exists()
        or LogEntry.objects.filter(actor_id=instance.pk).exists()
    ):
        raise ProtectedError(
            f"{instance.get_username()} appears in the audit history: deactivate the user "
            "(untick Active) instead of deleting it.",
            {instance},
        )


def registry_changed(sender: Any, **kwargs: Any) -> None:
    from compliance.classification import refresh

    refresh()


def classification_seed(sender: Any, **kwargs: Any) -> None:
    """After every migrate: new fields get their seed classification (as roles are re-synced)."""
    from django.apps import apps
    from django.db import connection

    from compliance.classification import classification_sync
    from compliance.models import FieldClassification

    if FieldClassification._meta.db_table in connection.introspection.table_names():
        classification_sync(apps)
