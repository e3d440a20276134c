"""Reads of the loan book (writes are in services)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from loans.demo import DEMO_PREFIX, DEMO_SOURCE
from loans.models import Batch, BatchChange, Loan, Transaction

TAPE_KINDS = [Batch.Kind.CUSTOMERS, Batch.Kind.LOANS, Batch.Kind.SCHEDULES, Batch.Kind.TRANSACTIONS]


def batches_latest_per_source(*, kinds: Iterable[str] | None = None) -> list[Batch]:
    """The newest batch of each source and kind (duplicates of earlier bytes left out): the data
    status managers read, and what the KPI quality gate checks."""
    batches = Batch.objects.exclude(status=Batch.Status.DUPLICATE)
    if kinds is not None:
        batches = batches.filter(kind__in=list(kinds))
    return list(batches.order_by("source", "kind", "-created_at").distinct("source", "kind"))


def batches_visible_to(user) -> QuerySet[Batch]:
    """The batches a person may open: stewards, auditors and admins all; an uploader the ones
    they brought (the admin's batch list applies the same rule)."""
    batches = Batch.objects.all()
    if user.has_perm("loans.change_loan") or user.has_perm("compliance.view_audit"):
        return batches
    return batches.filter(created_by=user)


@dataclass(frozen=True)
class BookSources:
    """Whether the book holds demo data, real data, or both (the dashboards' data-status panel)."""

    demo: bool
    real: bool
    demo_prefix: str = DEMO_PREFIX

    @property
    def mixed(self) -> bool:
        return self.demo and self.real


def book_sources_read() -> BookSources:
    """One query over the (small) batch table: loaded tape batches of the demo source and of any
    other."""
    counts = (
        Batch.objects.loaded()
        .filter(kind__in=TAPE_KINDS)
        .aggregate(
            demo=Count("pk", filter=Q(source=DEMO_SOURCE)),
            real=Count("pk", filter=~Q(source=DEMO_SOURCE)),
        )
    )
    return BookSources(demo=bool(counts["demo"]), real=bool(counts["real"]))


@dataclass(frozen=True)
class LoadEffect:
    """What a batch did to the book's outstanding, as the tape states it (loans files only)."""

    new_loans: int
    new_principal: Decimal
    new_outstanding: Decimal
    changed_loans: int
    outstanding_change: Decimal


def batch_load_effect(*, batch: Batch) -> LoadEffect | None:
    """New loans (inserted by this batch and not rewritten since) with their principal and tape
    outstanding, and the net change in tape outstanding of the loans it updated (from its change
    log). Two indexed queries: loans by batch, the batch's change records."""
    if batch.kind != Batch.Kind.LOANS or batch.status != Batch.Status.LOADED:
        return None
    # The loans this batch last wrote are the ones it inserted or updated; the updated ones are
    # in its change log.
    updated = BatchChange.objects.filter(
        batch=batch, kind="loans", change=BatchChange.Change.UPDATED, key=OuterRef("loan_id")
    )
    new = Loan.objects.filter(batch=batch).exclude(Exists(updated))
    added = new.aggregate(
        count=Count("pk"),
        principal=Sum("disburse_principal"),
        outstanding=Sum("outstanding_balance"),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), COALESCE(sum((fields->'outstanding_balance'->>1)::numeric "
            "- (fields->'outstanding_balance'->>0)::numeric), 0) FROM loans_batchchange "
            "WHERE batch_id = %s AND kind = 'loans' AND change = 'updated' "
            "AND fields ? 'outstanding_balance'",
            [batch.pk],
        )
        changed, delta = cursor.fetchone()
    return LoadEffect(
        new_loans=added["count"],
        new_principal=added["principal"] or Decimal("0"),
        new_outstanding=added["outstanding"] or Decimal("0"),
        changed_loans=changed,
        outstanding_change=Decimal(delta),
    )


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
