"""Manager dashboards: parse the filters, call one selector, render (or export its tables)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_q.tasks import async_task
from openpyxl import Workbook

from abaco.roles import role_required
from compliance.access import export_recorded
from compliance.exports import cell_safe, csv_response
from kpis import selectors
from loans.selectors import data_age

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _filters(request: HttpRequest | QueryDict) -> dict:
    """The shared filters, from a request's query string (or a posted form's fields)."""
    params = request if isinstance(request, QueryDict) else request.GET
    try:
        as_of = date.fromisoformat(params.get("as_of", ""))
    except ValueError:
        as_of = None
    return {
        "as_of": as_of,
        "basis": params.get("basis", "restated"),
        "dimension": params.get("dimension", "portfolio"),
        "member": params.get("member", ""),
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


def _with_data_age(ctx: dict) -> dict:
    """The page's "Data through" line from the date its selection already read (the context
    processor's own read is lazy and then never made)."""
    return {**ctx, "data_age": data_age(through=ctx["s"].data_through)}


@role_required("kpis.view_dashboard")
def overview(request: HttpRequest) -> HttpResponse:
    result = selectors.overview_read(**_filters(request))
    if (response := _export(request, "overview", result)) is not None:
        return response
    ctx = {
        "page": "overview",
        "o": result,
        "s": result.selection,
        "insight": selectors.insight_latest(selection=result.selection),
    }
    return render(request, "kpis/overview.html", _with_data_age(ctx))


@role_required("kpis.view_dashboard")
def insights(request: HttpRequest) -> HttpResponse:
    """Every insight of the selected slice, newest first, with what each was checked against."""
    selection = selectors.selection_read(**_filters(request))
    ctx = {
        "page": "insights",
        "s": selection,
        "insights": selectors.insights_history(selection=selection),
    }
    return render(request, "kpis/insights.html", _with_data_age(ctx))


@require_POST
@role_required("kpis.regenerate_insight")
def insight_regenerate(request: HttpRequest) -> HttpResponse:
    """Queue a new insight of the posted run and slice; the task cluster writes it."""
    selection = selectors.selection_read(**_filters(request.POST))
    back = f"{reverse('kpis:overview')}?{selection.qs}"
    if selection.run is None:
        messages.warning(request, "There is no snapshot to write an insight for.")
        return redirect(back)
    run_id, dimension, member = selection.run.pk, selection.dimension, selection.member
    transaction.on_commit(
        lambda: async_task(
            "kpis.tasks.insight_regenerate_task",
            run_id,
            dimension,
            member,
            request.user.pk,
            task_name=f"insight {selection.as_of} {dimension} {member}".strip(),
        )
    )
    messages.success(
        request,
        f"A new insight of the snapshot of {selection.as_of} is being written; "
        "reload in a moment to read it.",
    )
    return redirect(back)


@role_required("kpis.view_dashboard")
def risk(request: HttpRequest) -> HttpResponse:
    result = selectors.risk_read(**_filters(request))
    if (response := _export(request, "risk", result)) is not None:
        return response
    ctx = {"page": "risk", "r": result, "s": result.selection}
    return render(request, "kpis/risk.html", _with_data_age(ctx))


@role_required("kpis.view_dashboard")
def concentration(request: HttpRequest) -> HttpResponse:
    result = selectors.concentration_read(
        **_filters(request), can_see_pii=request.user.has_perm("loans.view_pii")
    )
    if (response := _export(request, "concentration", result)) is not None:
        return response
    ctx = {"page": "concentration", "c": result, "s": result.selection}
    return render(request, "kpis/concentration.html", _with_data_age(ctx))


@role_required("kpis.view_dashboard")
def collections(request: HttpRequest) -> HttpResponse:
    result = selectors.collections_read(**_filters(request))
    if (response := _export(request, "collections", result)) is not None:
        return response
    ctx = {"page": "collections", "c": result, "s": result.selection}
    return render(request, "kpis/collections.html", _with_data_age(ctx))


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
    return render(request, "kpis/loans.html", _with_data_age(ctx))


# Auditors read loan pages too (docs/design.md): the book's read permission, not the dashboards'.
@role_required("loans.view_loan")
def loan(request: HttpRequest, pk: int) -> HttpResponse:
    result = selectors.loan_read(loan_pk=pk, can_see_pii=request.user.has_perm("loans.view_pii"))
    if result is None:
        raise Http404("No such loan")
    return render(request, "kpis/loan.html", {"page": "loan", "h": result})


@role_required("kpis.view_dashboard")
def customer(request: HttpRequest, pk: int) -> HttpResponse:
    result = selectors.customer_read(
        customer_pk=pk, can_see_pii=request.user.has_perm("loans.view_pii")
    )
    if result is None:
        raise Http404("No such customer")
    return render(request, "kpis/customer.html", {"page": "customer", "h": result})
