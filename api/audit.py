"""The audit history over /api/v1/audit/ (scope read:audit, role compliance.view_audit): the
field edits (``changes/``, django-auditlog) and the access log (``access/``: the journal's reads,
exports and sign-in events, as the workbench's Access log tab lists them).

It lives in the api package rather than in compliance because compliance sits below the API's
shared base in the layering (docs/architecture.md).
"""

from __future__ import annotations

import json

from auditlog.models import LogEntry
from django.urls import path
from rest_framework import serializers

from api.models import Scope
from api.views import ListApiView, cursor_by, text
from compliance.models import JournalEntry
from compliance.selectors import ACCESS_KINDS, audit_entries, journal_entries


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


class AccessEntrySerializer(serializers.Serializer):
    """One access-log entry: when, who (user and roles), what (action, object, path, filters,
    rows) and from where (IP, request id, API token)."""

    # The journal row's columns, and from its hashed body the rest; named as the workbench's
    # export names them (compliance.exports.AUDIT_FIELDS["access"]).

    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    kind = serializers.ChoiceField(
        choices=[(kind.value, kind.label) for kind in ACCESS_KINDS],
        help_text="access: a read or export of book data; sign_in: a sign-in or security event.",
    )
    action = serializers.CharField(help_text='e.g. "view", "api list", "export", "sign in failed"')
    user = serializers.CharField(help_text="The username at the time (empty: nobody signed in).")
    user_id = serializers.IntegerField(allow_null=True, help_text="The user's id at the time.")
    roles = serializers.ListField(child=serializers.CharField(), help_text="The user's roles.")
    object = serializers.CharField(help_text='What was read, "app.model:id" (empty for lists).')
    path = serializers.CharField()
    filters = serializers.DictField(help_text="The filters of the read, as asked.")
    rows = serializers.IntegerField(
        allow_null=True, help_text="Rows sent; -1 for a streamed CSV; null for sign-in events."
    )
    ip = serializers.CharField()
    request_id = serializers.CharField()
    token_id = serializers.CharField(help_text="The API token's id (empty: a browser session).")
    extra = serializers.DictField(help_text="Anything else the entry recorded (status, format).")

    def to_representation(self, entry: JournalEntry) -> dict:
        detail = json.loads(entry.body)
        return super().to_representation(
            {
                "id": entry.pk,
                "at": entry.at,
                "kind": entry.kind,
                "action": entry.action,
                "user": entry.actor,
                "user_id": entry.actor_id,
                "roles": detail.get("roles") or [],
                "object": entry.object,
                "path": entry.path,
                "filters": detail.get("filters") or {},
                "rows": entry.rows,
                "ip": detail.get("ip") or "",
                "request_id": detail.get("request_id") or "",
                "token_id": detail.get("token_id") or "",
                "extra": detail.get("extra") or {},
            }
        )


class AccessFilters(serializers.Serializer):
    """The workbench's Access log filters (compliance.views), by the same names."""

    kind = serializers.ChoiceField(
        choices=[(kind.value, kind.value) for kind in ACCESS_KINDS],
        required=False,
        help_text="Default: both.",
    )
    user = text(required=False, max_length=150, help_text="The username as it was written.")
    action = text(required=False, max_length=64, help_text='e.g. "api list", "export".')
    object = text(
        required=False,
        max_length=200,
        help_text='"loans.loan:42" for one object; "loans.loan" for every loan.',
    )
    since = serializers.DateField(
        required=False, help_text="From this day (in the operators' time zone, TIME_ZONE)."
    )
    until = serializers.DateField(required=False, help_text="To this day, included.")


class AccessEntries(ListApiView):
    """Who read or exported which book data, and every sign-in event (the access log), newest
    first: user, roles, action, object, filters, rows, IP, request id and API token."""

    scope, permission = Scope.READ_AUDIT, "compliance.view_audit"
    serializer_class = AccessEntrySerializer
    filters_class = AccessFilters
    pagination_class = cursor_by("-id")

    def rows(self, filters):
        wanted = {k: v for k, v in filters.items() if k not in ("kind", "user")}
        kinds = [filters["kind"]] if "kind" in filters else list(ACCESS_KINDS)
        return journal_entries(kinds=kinds, actor=filters.get("user", ""), **wanted)


urlpatterns = [
    path("audit/changes/", AuditEntries.as_view(), name="audit-changes"),
    path("audit/access/", AccessEntries.as_view(), name="audit-access"),
]
