from __future__ import annotations

import json

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from abaco.roles import role_required
from compliance.exports import csv_response
from compliance.selectors import audit_entries

AUDITED_MODELS = [
    "loans.customer",
    "loans.loan",
    "loans.installment",
    "loans.transaction",
    "auth.user",
    "auth.group",
]


def _filters(request: HttpRequest) -> dict:
    model = request.GET.get("model", "")
    return {
        "model": model if model in AUDITED_MODELS else "",
        "actor": request.GET.get("actor", "")[:150],
        "object_pk": request.GET.get("object", "")[:64],
    }


@role_required("compliance.view_audit")
def audit_history(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    page = Paginator(audit_entries(**filters), 50).get_page(request.GET.get("page"))
    ctx = {"page": page, "filters": filters, "models": AUDITED_MODELS}
    return render(request, "compliance/audit.html", ctx)


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
    return csv_response(filename="audit-history.csv", header=header, rows=rows)
