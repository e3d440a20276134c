"""Reads of the loan book (writes are in services)."""

from __future__ import annotations

from django.db.models import Count, Max, Min, Sum

from loans.models import Batch, Customer, Loan


def loan_book_totals() -> dict:
    """Counts and disbursed principal per lending entity, straight from the normalized tables."""
    by_entity = list(
        Loan.objects.values("company")
        .annotate(
            loans=Count("id"),
            disbursed=Sum("disburse_principal"),
            first=Min("disburse_date"),
            last=Max("disburse_date"),
        )
        .order_by("company")
    )
    return {
        "customers": Customer.objects.count(),
        "loans": sum(row["loans"] for row in by_entity),
        "by_entity": by_entity,
    }


def batches_latest(*, limit: int = 10) -> list[Batch]:
    """The most recent batches, newest first, for the data-status panel."""
    return list(Batch.objects.select_related("created_by").order_by("-created_at")[:limit])
