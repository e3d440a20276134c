"""Manager dashboards: parse the filters, call one selector, render (or export its tables)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from openpyxl import Workbook

from abaco.roles import role_required
from compliance.access import export_recorded
from compliance.exports import cell_safe, csv_response
from kpis import selectors

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _filters(request: HttpRequest) -> dict:
    try:
        as_of = date.fromisoformat(request.GET.get("as_of", ""))
    except ValueError:
        as_of = None
    return {
        "as_of": as_of,
        "basis": request.GET.get("basis", "as_reported"),
        "dimension": request.GET.get("dimension", "portfolio"),
        "member": request.GET.get("member", ""),
    }


def _int(value: str | None, default: int | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _xlsx_response(*, filename: str, header: list[str], rows: Iterable[Iterable[object]]):
    """One sheet, written in streaming mode; text cells escaped like the CSV exports."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet("data")
    sheet.append(header)
    for row in rows:
        sheet.append([cell_safe(value) for value in row])
    response = HttpResponse(content_type=XLSX)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    book.save(response)
    return response


def _export(request: HttpRequest, page: str, result) -> HttpResponse | None:
    """``?format=csv|xlsx&table=<name>``: one of the page's tables as a file (kpis.export_data)."""
    fmt = request.GET.get("format")
    if fmt not in ("csv", "xlsx"):
        return None
    if not request.user.has_perm("kpis.export_data"):
        raise PermissionDenied
    tables = result.tables()
    name = request.GET.get("table") or next(iter(tables))
    if name not in tables:
        raise Http404("No such table")
    header, rows = tables[name]
    as_of = result.selection.as_of
    filename = f"{page}-{name}-{as_of or 'none'}.{fmt}"
    # The access log: format, table, columns, filters (from the query) and the rows that left.
    rows = export_recorded(
        rows, request=request, extra={"format": fmt, "table": name, "columns": header}
    )
    if fmt == "csv":
        return csv_response(filename=filename, header=header, rows=rows)
    return _xlsx_response(filename=filename, header=header, rows=rows)


@role_required("kpis.view_dashboard")
def overview(request: HttpRequest) -> HttpResponse:
    result = selectors.overview_read(**_filters(request))
    if (response := _export(request, "overview", result)) is not None:
        return response
    ctx = {"page": "overview", "o": result, "s": result.selection}
    return render(request, "kpis/overview.html", ctx)


@role_required("kpis.view_dashboard")
def risk(request: HttpRequest) -> HttpResponse:
    result = selectors.risk_read(**_filters(request))
    if (response := _export(request, "risk", result)) is not None:
        return response
    ctx = {"page": "risk", "r": result, "s": result.selection}
    return render(request, "kpis/risk.html", ctx)


@role_required("kpis.view_dashboard")
def concentration(request: HttpRequest) -> HttpResponse:
    result = selectors.concentration_read(
        **_filters(request), can_see_pii=request.user.has_perm("loans.view_pii")
    )
    if (response := _export(request, "concentration", result)) is not None:
        return response
    ctx = {"page": "concentration", "c": result, "s": result.selection}
    return render(request, "kpis/concentration.html", ctx)


@role_required("kpis.view_dashboard")
def collections(request: HttpRequest) -> HttpResponse:
    result = selectors.collections_read(**_filters(request))
    if (response := _export(request, "collections", result)) is not None:
        return response
    ctx = {"page": "collections", "c": result, "s": result.selection}
    return render(request, "kpis/collections.html", ctx)


@role_required("kpis.view_dashboard")
def loans(request: HttpRequest) -> HttpResponse:
    result = selectors.drilldown_read(
        **_filters(request),
        bucket=request.GET.get("bucket", ""),
        min_dpd=_int(request.GET.get("min_dpd"), None),
        sort=request.GET.get("sort", "dpd"),
        page=_int(request.GET.get("page"), 1),
        after=request.GET.get("after", ""),
        before=request.GET.get("before", ""),
    )
    if (response := _export(request, "loans", result)) is not None:
        return response
    ctx = {"page": "loans", "l": result, "s": result.selection}
    return render(request, "kpis/loans.html", ctx)


# Auditors read loan pages too (docs/design.md): the book's read permission, not the dashboards'.
@role_required("loans.view_loan")
def loan(request: HttpRequest, pk: int) -> HttpResponse:
    result = selectors.loan_read(loan_pk=pk, can_see_pii=request.user.has_perm("loans.view_pii"))
    if result is None:
        raise Http404("No such loan")
    return render(request, "kpis/loan.html", {"page": "loan", "h": result})
