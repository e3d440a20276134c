"""The audit history over /api/v1/audit/ (scope read:audit, role compliance.view_audit).

It lives in the api package rather than in compliance because compliance sits below the API's
shared base in the layering (docs/architecture.md). The access log's endpoint joins it when the
access log lands (issue 19).
"""

from __future__ import annotations

from auditlog.models import LogEntry
from django.urls import path
from rest_framework import serializers

from api.models import Scope
from api.views import ListApiView, cursor_by, text
from compliance.selectors import audit_entries


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()
    action = serializers.CharField(source="get_action_display", read_only=True)
    model = serializers.SerializerMethodField()
    changes = serializers.JSONField(
        read_only=True, help_text="field -> [before, after]; personal fields show [redacted]."
    )

    class Meta:
        model = LogEntry
        fields = [
            "id",
            "timestamp",
            "actor",
            "action",
            "model",
            "object_pk",
            "object_repr",
            "changes",
        ]
        read_only_fields = fields

    def get_actor(self, entry: LogEntry) -> str:
        return entry.actor.get_username() if entry.actor else "system"

    def get_model(self, entry: LogEntry) -> str:
        return f"{entry.content_type.app_label}.{entry.content_type.model}"


class AuditFilters(serializers.Serializer):
    model = serializers.RegexField(
        r"^[a-z_]+\.[a-z_]+$",
        required=False,
        help_text='An app label and model, e.g. "loans.loan".',
    )
    actor = text(required=False, max_length=150)
    object_pk = text(required=False, max_length=64)


class AuditEntries(ListApiView):
    """Who changed what (django-auditlog), newest first; personal values redacted."""

    scope, permission = Scope.READ_AUDIT, "compliance.view_audit"
    serializer_class = AuditEntrySerializer
    filters_class = AuditFilters
    pagination_class = cursor_by("-timestamp", "-id")

    def rows(self, filters):
        return audit_entries(**filters)


urlpatterns = [path("audit/changes/", AuditEntries.as_view(), name="audit-changes")]
