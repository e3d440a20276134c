"""Reads of the loan book (writes are in services)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from loans.models import Batch, Loan, Transaction


def batches_latest_per_source(*, kinds: Iterable[str] | None = None) -> list[Batch]:
    """The newest batch of each source and kind (duplicates of earlier bytes left out): the data
    status managers read, and what the KPI quality gate checks."""
    batches = Batch.objects.exclude(status=Batch.Status.DUPLICATE)
    if kinds is not None:
        batches = batches.filter(kind__in=list(kinds))
    return list(batches.order_by("source", "kind", "-created_at").distinct("source", "kind"))


# The kinds of batch whose rows feed loans: their cut-offs make the book's data-through date.
LOAN_FEEDING_KINDS = (Batch.Kind.LOANS, Batch.Kind.TRANSACTIONS)


def source_cutoffs() -> dict[str, date]:
    """Each source that feeds loans and its latest cut-off (the newest ``data_through`` of its
    loaded loan and transaction batches)."""
    rows = (
        Batch.objects.loaded()
        .filter(kind__in=LOAN_FEEDING_KINDS, data_through__isnull=False)
        .values("source")
        .annotate(latest=Max("data_through"))
        .values_list("source", "latest")
    )
    return dict(rows)


def book_data_through() -> date | None:
    """The book's data-through date: the earliest of the latest cut-offs of the sources that
    feed loans (docs/design.md, "Data cut-off and restatement"). A book loaded before batches
    recorded their cut-off reads it from its rows: the latest transaction or disbursement."""
    cutoffs = source_cutoffs()
    if cutoffs:
        return min(cutoffs.values())
    latest = [
        Transaction.objects.aggregate(last=Max("date"))["last"],
        Loan.objects.aggregate(last=Max("disburse_date"))["last"],
    ]
    found = [day for day in latest if day is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class DataAge:
    """How old the book's data is, as every page's "Data through" line shows it."""

    through: date | None
    days: int | None
    level: str  # "", "amber" or "red" (DATA_AGE_AMBER_DAYS, DATA_AGE_RED_DAYS)
    stale: bool  # no new data for DATA_STALE_DAYS: alerts like a failed pipeline


def data_age(*, today: date | None = None, through: date | None = None) -> DataAge:
    """The book's data-through date and its age in days at ``today`` (local date)."""
    through = through if through is not None else book_data_through()
    if through is None:
        return DataAge(None, None, "", False)
    days = ((today or timezone.localdate()) - through).days
    level = (
        "red"
        if days >= settings.DATA_AGE_RED_DAYS
        else "amber"
        if days >= settings.DATA_AGE_AMBER_DAYS
        else ""
    )
    return DataAge(through, days, level, days >= settings.DATA_STALE_DAYS)
