"""Loan page: one loan's schedule, cash flows, state per snapshot and change history."""

from __future__ import annotations

from dataclasses import dataclass

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q

from kpis.models import LoanState, SnapshotRun
from loans.models import Batch, BatchChange, Loan


@dataclass
class LoanHistory:
    loan: Loan
    installments: list
    transactions: list
    states: list[LoanState]
    log_entries: list[LogEntry]
    changes: list[BatchChange]
    batches: list[Batch]
    can_see_pii: bool
    customer_name: str


def loan_read(*, loan_pk: int, can_see_pii: bool) -> LoanHistory | None:
    """A loan with its schedule, cash flows, state per snapshot, change history and batches."""
    from compliance.classification import mask

    loan = Loan.objects.select_related("customer", "batch").filter(pk=loan_pk).first()
    if loan is None:
        return None
    installments = list(loan.installments.order_by("due_date"))
    transactions = list(loan.transactions.order_by("date", "sequence"))
    states = list(
        # Per run (the index is run first): a probe per snapshot, not a scan of every state.
        LoanState.objects.filter(loan=loan, run__in=SnapshotRun.objects.values("pk"))
        .select_related("run")
        .order_by("-run__as_of", "run__basis")
    )
    log_entries = list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Loan), object_pk=str(loan.pk)
        )
        .select_related("actor")
        .order_by("-timestamp")
    )
    # BatchChange keys are the tape's natural keys: "L1", "L1 due 2025-01-31", "L1 PAYMENT ...".
    changes = list(
        BatchChange.objects.filter(Q(key=loan.loan_id) | Q(key__startswith=f"{loan.loan_id} "))
        .select_related("batch", "reviewed_by")
        .order_by("-batch__created_at", "kind", "key")
    )
    batch_ids = {loan.batch_id, loan.customer.batch_id}
    batch_ids |= {row.batch_id for row in installments} | {row.batch_id for row in transactions}
    batch_ids |= {change.batch_id for change in changes}
    batches = list(Batch.objects.filter(pk__in=batch_ids).order_by("-created_at"))
    name = loan.customer.name
    return LoanHistory(
        loan,
        installments,
        transactions,
        states,
        log_entries,
        changes,
        batches,
        can_see_pii,
        name if can_see_pii else mask(name),
    )
