"""The auditors' workbench: field edits, the journal (access log, imports, reviews, role and
setting changes, retention), import batches with what they changed, and streaming exports."""

from __future__ import annotations

import json
from datetime import date

from django.apps import apps
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_safe

from abaco.roles import role_required
from compliance.access import export_recorded
from compliance.classification import mask, restricted_fields
from compliance.exports import audit_response, csv_response
from compliance.models import JournalEntry
from compliance.selectors import ACCESS_KINDS, audit_entries, journal_entries

# Field edits, by what was edited: the workbench's "Record type" filter and its categories.
AUDITED_MODELS = [
    "loans.customer",
    "loans.loan",
    "loans.installment",
    "loans.transaction",
    "loans.columnmap",
    "auth.user",
    "auth.group",
    "django_q.schedule",
    "compliance.fieldclassification",
    "compliance.legalhold",
]
CATEGORIES = {
    "book": ["loans.customer", "loans.loan", "loans.installment", "loans.transaction"],
    "roles": ["auth.user", "auth.group"],
    "settings": ["django_q.schedule", "loans.columnmap", "compliance.fieldclassification"],
    "holds": ["compliance.legalhold"],
}


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value or "")
    except ValueError:
        return None


def _filters(request: HttpRequest) -> dict:
    model = request.GET.get("model", "")
    category = request.GET.get("category", "")
    return {
        "model": model if model in AUDITED_MODELS else "",
        "models": CATEGORIES.get(category),
        "actor": request.GET.get("actor", "")[:150],
        "object_pk": request.GET.get("object", "")[:64],
        "action": request.GET.get("action", "")[:16],
        "since": _date(request.GET.get("since")),
        "until": _date(request.GET.get("until")),
    }


def _journal_filters(request: HttpRequest, *, kind: str | None = None) -> dict:
    """The journal page's filters; ``kind`` is the entry kind (the page's ``kind`` parameter
    unless given: an export's ``kind`` names the export, its entry kind comes as ``entry``)."""
    if kind is None:
        kind = request.GET.get("kind", "")
    # The access log tab: reads and exports, with sign-ins and the other security events.
    kinds = (
        list(ACCESS_KINDS)
        if kind == "access"
        else [kind]
        if kind in JournalEntry.Kind.values
        else []
    )
    return {
        "kinds": kinds,
        "actor": request.GET.get("user", "")[:150],
        "action": request.GET.get("action", "")[:64],
        "object": request.GET.get("object", "")[:200],
        "since": _date(request.GET.get("since")),
        "until": _date(request.GET.get("until")),
    }


def change_lines(changes: dict) -> list[tuple[str, str]]:
    """A LogEntry's changes as (field, text): "old → new", or for roles and permissions (many-to-
    many) "add: Manager, Auditor"."""
    lines = []
    for field, change in (changes or {}).items():
        if isinstance(change, dict) and change.get("type") == "m2m":
            lines.append(
                (field, f"{change.get('operation')}: {', '.join(change.get('objects', []))}")
            )
        elif isinstance(change, list | tuple) and len(change) == 2:
            lines.append((field, f"{change[0]} → {change[1]}"))
        else:
            lines.append((field, str(change)))
    return lines


def _zone() -> str:
    return timezone.get_current_timezone_name()


@require_safe
@role_required("compliance.view_audit")
def audit_history(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    page = Paginator(audit_entries(**filters), 50).get_page(request.GET.get("page"))
    for entry in page:
        entry.lines = change_lines(entry.changes_dict)
    ctx = {
        "page": page,
        "filters": filters,
        "models": AUDITED_MODELS,
        "categories": CATEGORIES,
        "category": request.GET.get("category", ""),
        "tab": "changes",
        "zone": _zone(),
    }
    return render(request, "compliance/audit.html", ctx)


@require_safe
@role_required("compliance.view_audit")
def journal(request: HttpRequest) -> HttpResponse:
    filters = _journal_filters(request)
    entries = journal_entries(**filters)
    # Newest first by id, counted only up to what the pager shows: the journal grows to millions.
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    for entry in page:
        entry.data = json.loads(entry.body)
        entry.lines = change_lines(entry.data.get("changes"))
    ctx = {
        "page": page,
        "filters": filters,
        "kinds": JournalEntry.Kind.choices,
        "kind": request.GET.get("kind", ""),
        "tab": "access" if request.GET.get("kind") == "access" else "journal",
        "export_query": _export_query(request),
        "zone": _zone(),
    }
    return render(request, "compliance/journal.html", ctx)


@require_safe
@role_required("compliance.view_audit")
def imports(request: HttpRequest) -> HttpResponse:
    Batch = apps.get_model("loans", "Batch")
    batches = Batch.objects.select_related("created_by").order_by("-created_at", "-id")
    if request.GET.get("user"):
        batches = batches.filter(created_by__username=request.GET["user"][:150])
    page = Paginator(batches, 50).get_page(request.GET.get("page"))
    return render(
        request, "compliance/imports.html", {"page": page, "tab": "imports", "zone": _zone()}
    )


@require_safe
@role_required("compliance.view_audit")
def batch(request: HttpRequest, pk: int) -> HttpResponse:
    """One import: who, when, which file (SHA-256), what it counted, then each change it made."""
    Batch = apps.get_model("loans", "Batch")
    found = get_object_or_404(Batch.objects.select_related("created_by"), pk=pk)
    changes = found.changes.select_related("reviewed_by").order_by("kind", "key")
    page = Paginator(changes, 100).get_page(request.GET.get("page"))
    if not request.user.has_perm("loans.view_pii"):
        restricted = set(restricted_fields("loans.Customer"))
        for change in page:
            if change.kind == "customers":
                change.fields = {
                    f: [mask(v) for v in pair] if f in restricted else pair
                    for f, pair in change.fields.items()
                }
    ctx = {"batch": found, "page": page, "tab": "imports", "zone": _zone()}
    return render(request, "compliance/batch.html", ctx)


def _export_query(request: HttpRequest) -> str:
    """The journal page's filters for its export links: the export's own ``kind`` names the
    export, so the page's entry kind goes as ``entry``."""
    query = request.GET.copy()
    kind = query.pop("kind", [""])[-1]
    query.pop("page", None)
    query.pop("format", None)
    if kind in JournalEntry.Kind.values:
        query["entry"] = kind
    return query.urlencode()


@role_required("compliance.export_audit")
def audit_export(request: HttpRequest) -> HttpResponse:
    """``?kind=changes|access|journal&format=csv|jsonl`` with the page's filters, streamed."""
    kind = request.GET.get("kind", "changes")
    fmt = request.GET.get("format", "csv")
    if kind not in ("changes", "access", "journal") or fmt not in ("csv", "jsonl"):
        raise Http404("No such export")
    if kind == "changes":
        filters = _filters(request)
    else:
        filters = _journal_filters(request, kind=request.GET.get("entry", "") or kind)
        if kind == "access":
            filters.pop("kinds")
    response = audit_response(kind=kind, fmt=fmt, **filters)
    response.streaming_content = export_recorded(
        response.streaming_content,
        request=request,
        action=f"export audit {kind}",
        extra={"format": fmt},
    )
    return response


@role_required("compliance.export_audit")
def audit_history_export(request: HttpRequest) -> HttpResponse:
    entries = audit_entries(**_filters(request)).iterator(chunk_size=2000)
    rows = (
        (
            e.timestamp.isoformat(),
            e.actor.get_username() if e.actor else "system",
            e.get_action_display(),
            f"{e.content_type.app_label}.{e.content_type.model}",
            e.object_pk,
            e.object_repr,
            json.dumps(e.changes, sort_keys=True, default=str),
            e.remote_addr or "",
        )
        for e in entries
    )
    header = [
        "timestamp",
        "actor",
        "action",
        "model",
        "object_id",
        "object",
        "changes",
        "remote_addr",
    ]
    rows = export_recorded(rows, request=request, action="export audit changes")
    return csv_response(filename="audit-history.csv", header=header, rows=rows)
