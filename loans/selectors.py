"""Reads of the loan book (writes are in services)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum

from loans.demo import DEMO_PREFIX, DEMO_SOURCE
from loans.models import Batch, BatchChange, Loan

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
