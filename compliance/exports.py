"""Tabular exports that are safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator

from auditlog.models import LogEntry
from django.http import StreamingHttpResponse

# A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def cell_safe(value: object) -> object:
    """Neutralize spreadsheet formula injection (OWASP: prefix a single quote)."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(
    *, filename: str, header: list[str], rows: Iterable[Iterable[object]]
) -> StreamingHttpResponse:
    """Stream rows as CSV without building the file in memory."""
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([cell_safe(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Audit exports: the same rows for the workbench's downloads and `manage.py audit_export` ---

AUDIT_FIELDS = {
    # JSONL keys (and CSV columns) per kind; ``at`` is in the named ``zone``.
    "changes": [
        "at",
        "zone",
        "user",
        "user_id",
        "action",
        "object",
        "object_repr",
        "changes",
        "ip",
        "path",
        "filters",
        "rows",
    ],
    "access": [
        "at",
        "zone",
        "user",
        "user_id",
        "roles",
        "ip",
        "request_id",
        "token_id",
        "kind",
        "action",
        "object",
        "path",
        "filters",
        "rows",
        "extra",
    ],
}
AUDIT_FIELDS["journal"] = [*AUDIT_FIELDS["access"], "changes", "id", "prev_hash", "hash", "body"]


def _local(at) -> str:
    from django.utils import timezone

    return timezone.localtime(at).isoformat()


def audit_records(*, kind: str, **filters) -> Iterator[dict]:
    """One dict per entry, oldest first, read through a server-side cursor (flat memory)."""
    from django.utils import timezone

    from compliance.selectors import ACCESS_KINDS, audit_entries, journal_entries

    zone = timezone.get_current_timezone_name()
    if kind == "changes":
        entries = (
            audit_entries(**filters)
            .order_by("timestamp", "id")
            .values_list(
                "timestamp",
                "actor__username",
                "actor_id",
                "action",
                "content_type__app_label",
                "content_type__model",
                "object_pk",
                "object_repr",
                "changes",
                "remote_addr",
            )
            .iterator(chunk_size=5000)
        )
        actions = dict(LogEntry.Action.choices)
        for at, user, user_id, action, app, model, pk, text, changes, ip in entries:
            yield {
                "at": _local(at),
                "zone": zone,
                "user": user or ("system" if user_id is None else ""),
                "user_id": user_id,
                "action": actions.get(action, str(action)),
                "object": f"{app}.{model}:{pk}",
                "object_repr": text,
                "changes": changes if isinstance(changes, dict) else json.loads(changes or "{}"),
                "ip": ip or "",
                "path": "",
                "filters": {},
                "rows": None,
            }
        return
    kinds = ACCESS_KINDS if kind == "access" else filters.pop("kinds", ())
    entries = (
        journal_entries(kinds=kinds, **filters)
        .order_by("id")
        .values_list("id", "at", "prev_hash", "hash", "body")
        .iterator(chunk_size=5000)
    )
    for entry_id, at, prev_hash, hash_, body in entries:
        data = json.loads(body)
        record = {
            "at": _local(at),
            "zone": zone,
            "user": data.get("actor") or "",
            "user_id": data.get("actor_id"),
            "roles": data.get("roles", []),
            "ip": data.get("ip", ""),
            "request_id": data.get("request_id", ""),
            "token_id": data.get("token_id", ""),
            "kind": data.get("kind"),
            "action": data.get("action"),
            "object": data.get("object", ""),
            "path": data.get("path", ""),
            "filters": data.get("filters", {}),
            "rows": data.get("rows"),
            "extra": data.get("extra", {}),
        }
        if kind == "journal":
            record.update(
                changes=data.get("changes", {}),
                id=entry_id,
                prev_hash=prev_hash,
                hash=hash_,
                body=body,
            )
        yield record


def audit_lines(*, kind: str, fmt: str, **filters) -> Iterator[str]:
    """The export as text lines: CSV (nested values as JSON cells, formula-safe) or JSONL."""
    fields = AUDIT_FIELDS[kind]
    records = audit_records(kind=kind, **filters)
    if fmt == "jsonl":
        for record in records:
            yield json.dumps(record, ensure_ascii=False, default=str) + "\n"
        return
    writer = csv.writer(_Echo())
    yield writer.writerow(fields)
    for record in records:
        yield writer.writerow(
            [
                cell_safe(
                    json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
                    if isinstance(value, (dict, list))
                    else ""
                    if value is None
                    else value
                )
                for value in (record.get(name) for name in fields)
            ]
        )


def audit_response(*, kind: str, fmt: str, **filters) -> StreamingHttpResponse:
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(
        audit_lines(kind=kind, fmt=fmt, **filters), content_type=content_type
    )
    response["Content-Disposition"] = f'attachment; filename="audit-{kind}.{fmt}"'
    return response
