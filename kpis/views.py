"""Manager dashboards: parse the filters, call one selector, render (or export its tables)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django_q.tasks import async_task
from openpyxl import Workbook

from abaco.roles import role_required
from compliance.access import access_shown, export_recorded
from compliance.exports import cell_safe, csv_response
from kpis import selectors
from kpis.pagecache import INSIGHT_SLOT, PageBody, Shown, cached_page, page_render, served_part
from loans.selectors import book_data_through, data_age

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


def _with_data_age(ctx: dict, request: HttpRequest) -> dict:
    """The page's "Data through" line from the date its selection already read (the context
    processor's own read is lazy and then never made); its age is today's, so per request.
    The access log records the snapshot the page showed (its as-of and basis), asked for or
    not."""
    selection = ctx["s"]
    _access_shown(request, selection)
    return {**ctx, "data_age": data_age(through=selection.data_through)}


def _access_shown(request: HttpRequest, shown: selectors.Selection | Shown) -> None:
    """The access log's note of the snapshot a page showed (its as-of and basis)."""
    if shown.as_of is not None:
        access_shown(request, as_of=shown.as_of.isoformat(), basis=shown.basis)


def _render(request: HttpRequest, page: str, body: PageBody) -> str:
    """A page rendered once (kpis.pagecache) inside this user's chrome, with its data age (a
    dashboard's from its selection, a loan or customer page's from the date kept with it). The
    page cache keeps this for the user's next request of the day."""
    ctx = {
        "page": page,
        # HTML the page template rendered (and escaped) once: kept as it is.
        "title": mark_safe(body.title),
        "content": mark_safe(body.content),
        "s": body.shown,
    }
    through = body.shown.data_through if body.shown is not None else body.data_through
    if body.shown is not None or through is not None:  # else the processor reads it
        ctx["data_age"] = data_age(through=through)
    return render_to_string("kpis/_cached_page.html", ctx, request)


def _finish(request: HttpRequest, html: str, body: PageBody) -> str:
    """What each request adds to a page: the overview's insight (a regenerated one shows at
    once; its button is the user's) and the access log's note of the snapshot the page showed
    (its as-of and basis), asked for or not."""
    shown = body.shown
    if shown is None:
        return html
    _access_shown(request, shown)
    if INSIGHT_SLOT in html:
        slice_ = {"run": shown.run, "dimension": shown.dimension, "member": shown.member}
        insight_html = served_part(
            request,
            # Written once and never changed: the newest one's id names what is shown.
            lambda: (
                "insight",
                selectors.insight_latest_id(**slice_),
                shown,
                request.user.has_perm("kpis.regenerate_insight"),
            ),
            lambda: render_to_string(
                "kpis/_insight.html",
                {"insight": selectors.insight_latest(**slice_), "s": shown},
                request,
            ),
        )
        html = html.replace(INSIGHT_SLOT, insight_html, 1)
    return html


def _page(request: HttpRequest, page: str, read, params: dict, context) -> HttpResponse:
    """A dashboard page: an export of its tables (computed now), or the page rendered once
    from its selector's result and kept in the page cache (kpis.pagecache), with this
    request's parts around it."""
    if request.GET.get("format") in ("csv", "xlsx"):
        response = _export(request, page, read(**params))
        if response is not None:
            return response
    return cached_page(
        request,
        page=page,
        params=params,
        compute=lambda: page_render(request, f"kpis/{page}.html", context(read(**params))),
        render=lambda body: _render(request, page, body),
        finish=lambda html, body: _finish(request, html, body),
    )


def _dashboard(page: str, read, name: str, *, pii: bool = False):
    """A dashboard page's view: its selector's result as ``name`` (and its selection as ``s``);
    with ``pii``, the selector learns whether the user is cleared for personal data."""

    @role_required("kpis.view_dashboard")
    def view(request: HttpRequest) -> HttpResponse:
        params = _filters(request)
        if pii:
            params["can_see_pii"] = request.user.has_perm("loans.view_pii")
        return _page(
            request,
            page,
            read,
            params,
            lambda result: {"page": page, name: result, "s": result.selection},
        )

    view.__name__ = view.__qualname__ = page
    return view


# The insight is read per request (kpis/overview.html leaves its slot; _finish fills it).
overview = _dashboard("overview", selectors.overview_read, "o")
risk = _dashboard("risk", selectors.risk_read, "r")
concentration = _dashboard("concentration", selectors.concentration_read, "c", pii=True)
collections = _dashboard("collections", selectors.collections_read, "c")


@role_required("kpis.view_dashboard")
def insights(request: HttpRequest) -> HttpResponse:
    """Every insight of the selected slice, newest first, with what each was checked against."""
    selection = selectors.selection_read(**_filters(request))
    ctx = {
        "page": "insights",
        "s": selection,
        "insights": selectors.insights_history(selection=selection),
    }
    return render(request, "kpis/insights.html", _with_data_age(ctx, request))


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
def loans(request: HttpRequest) -> HttpResponse:
    # The loan states of a stored run do not change: a drill-down page is cached like the others.
    params = {
        **_filters(request),
        "bucket": request.GET.get("bucket", ""),
        "min_dpd": _int(request.GET.get("min_dpd"), None),
        "sort": request.GET.get("sort", "dpd"),
        "page": _int(request.GET.get("page"), 1),
        "after": request.GET.get("after", ""),
        "before": request.GET.get("before", ""),
    }
    return _page(
        request,
        "loans",
        selectors.drilldown_read,
        params,
        lambda drill: {"page": "loans", "l": drill, "s": drill.selection},
    )


def _record_page(request: HttpRequest, page: str, pk: int, read) -> HttpResponse:
    """A loan or customer page: rendered once per data version and clearance and kept in the
    page cache like the dashboards (the viewer's clearance for personal data is in the key)."""

    def compute() -> PageBody:
        result = read(pk, request.user.has_perm("loans.view_pii"))
        if result is None:
            raise Http404(f"No such {page}")
        body = page_render(request, f"kpis/{page}.html", {"page": page, "h": result})
        return replace(body, data_through=book_data_through())

    return cached_page(
        request,
        page=page,
        params={"pk": pk},
        compute=compute,
        render=lambda body: _render(request, page, body),
        finish=lambda html, body: _finish(request, html, body),
    )


# Auditors read loan pages too (docs/design.md): the book's read permission, not the dashboards'.
@role_required("loans.view_loan")
def loan(request: HttpRequest, pk: int) -> HttpResponse:
    return _record_page(
        request, "loan", pk, lambda pk, pii: selectors.loan_read(loan_pk=pk, can_see_pii=pii)
    )


# Auditors read customer pages too, like loan pages: the book's read permission.
@role_required("loans.view_customer")
def customer(request: HttpRequest, pk: int) -> HttpResponse:
    return _record_page(
        request,
        "customer",
        pk,
        lambda pk, pii: selectors.customer_read(customer_pk=pk, can_see_pii=pii),
    )
