"""The compliance records: the append-only journal, the data classification registry, legal holds.

``JournalEntry`` is the tamper-evident record of everything an auditor reads (docs/compliance.md):
each row carries the canonical JSON it was hashed from and a SHA-256 chained to the row before;
PostgreSQL triggers refuse UPDATE, DELETE and TRUNCATE. Actors are kept by value (id and username
as they were), never by foreign key, so attribution survives renames and deactivations.
"""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.db import models


class AuditTrail(models.Model):
    """Holds the auditors' permissions; the history itself is django-auditlog's LogEntry."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_audit", "Can read audit history"),
            ("export_audit", "Can export audit history"),
        ]

    def __str__(self) -> str:
        return "audit trail"


class JournalEntry(models.Model):
    """One event, hashed and chained: a read, an export, a sign-in, a change, an import, a run."""

    class Kind(models.TextChoices):
        ACCESS = "access", "Read or export of book data"
        SIGN_IN = "sign_in", "Sign-in, sign-out and security events"
        CHANGE = "change", "Field edit"
        ROLE = "role", "Role or permission change"
        SETTING = "setting", "Schedule or setting change"
        IMPORT = "import", "Import (batch)"
        REVIEW = "review", "Tape-diff review"
        RETENTION = "retention", "Retention run or legal hold"
        INSIGHT = "insight", "AI insight written or regenerated"

    at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    action = models.CharField(max_length=64)
    actor_id = models.IntegerField(null=True, blank=True, help_text="The user's id at the time.")
    actor = models.CharField(max_length=150, blank=True, help_text="The username at the time.")
    object = models.CharField(max_length=200, blank=True, help_text="app.model:id")
    path = models.CharField(max_length=500, blank=True)
    rows = models.BigIntegerField(null=True, blank=True)
    body = models.TextField(help_text="The canonical JSON the hash covers.")
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "journal entries"
        default_permissions = ("view",)
        indexes = [
            # The workbench: one kind (the access log, imports ...) newest first, by date range.
            models.Index(fields=["kind", "at"], name="journal_kind_at_idx"),
            # The workbench's user filter; and "may this user be deleted?" (never, when present).
            models.Index(fields=["actor_id", "at"], name="journal_actor_at_idx"),
            # The workbench's object filter ("loans.loan:42": who read or changed it).
            models.Index(fields=["object"], name="journal_object_idx"),
        ]
        triggers = [
            pgtrigger.Protect(
                name="journal_append_only",
                operation=pgtrigger.Update | pgtrigger.Delete,
            ),
            pgtrigger.Trigger(
                name="journal_no_truncate",
                operation=pgtrigger.Truncate,
                level=pgtrigger.Statement,
                when=pgtrigger.Before,
                # The test suite's flush between TransactionTestCases truncates every table: it
                # sets abaco.journal_flush for its own connections (tests/conftest.py). A
                # superuser could set it too, as they could disable the trigger: the chain and
                # the exported day hashes, not this trigger, are what catch them.
                func="IF current_setting('abaco.journal_flush', true) = 'on' THEN RETURN NULL; "
                "END IF; RAISE EXCEPTION 'pgtrigger: Cannot truncate the append-only % table', "
                "TG_TABLE_NAME; RETURN NULL;",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.action} by {self.actor or 'system'}"


class FieldClassification(models.Model):
    """How one model field is classified and how it leaves the system (pages, exports, API, AI)."""

    class Level(models.TextChoices):
        PUBLIC = "public", "Public"
        INTERNAL = "internal", "Internal"
        CONFIDENTIAL = "confidential", "Confidential"
        RESTRICTED = "restricted", "Restricted (cleared roles only)"

    class Masking(models.TextChoices):
        NONE = "none", "Shown as is"
        MASK = "mask", "Masked (••••) for roles not cleared"
        REDACT = "redact", "Redacted everywhere outside the form"

    model = models.CharField(max_length=100, help_text="app_label.ModelName")
    field = models.CharField(max_length=100)
    level = models.CharField(max_length=16, choices=Level.choices, default=Level.INTERNAL)
    personal = models.BooleanField(default=False, help_text="Personal data of a natural person.")
    masking = models.CharField(max_length=8, choices=Masking.choices, default=Masking.NONE)
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days after the customer's last loan matured before the value is anonymised "
        "(empty: kept).",
    )
    audit_excluded = models.BooleanField(
        default=False, help_text="Changes are noise in the audit history (timestamps)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "field"]
        constraints = [
            models.UniqueConstraint(fields=["model", "field"], name="classification_field_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model}.{self.field}: {self.level}"

    @property
    def restricted(self) -> bool:
        return self.masking != self.Masking.NONE


class LegalHold(models.Model):
    """A customer or loan that retention must not touch until the hold is released."""

    object = models.CharField(
        max_length=200, help_text="loans.customer:<id> or loans.loan:<id> (the database id)."
    )
    reason = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Retention: is this object held right now?
            models.Index(
                fields=["object"],
                name="legalhold_active_idx",
                condition=models.Q(released_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "released" if self.released_at else "active"
        return f"hold on {self.object} ({state})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        label, _, pk = self.object.partition(":")
        if label not in ("loans.customer", "loans.loan") or not pk.isdigit():
            raise ValidationError({"object": "write loans.customer:<id> or loans.loan:<id>"})
