from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from abaco.roles import role_required
from loans.selectors import batches_latest, loan_book_totals


@role_required("kpis.view_dashboard")
def overview(request: HttpRequest) -> HttpResponse:
    ctx = {"totals": loan_book_totals(), "batches": batches_latest()}
    return render(request, "kpis/overview.html", ctx)
