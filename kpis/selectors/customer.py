"""Customer page: a borrower's loans, exposure at each snapshot and change history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Max, Sum

from compliance.classification import RESTRICTED_FIELDS, mask
from kpis.models import LoanState, SnapshotRun
from loans.models import Batch, BatchChange, Customer, Loan

PII = RESTRICTED_FIELDS["loans.Customer"]


@dataclass
class Exposure:
    as_of: date
    basis: str
    outstanding: Decimal
    written_off: Decimal
    loans: int
    worst_dpd: int


@dataclass
class CustomerHistory:
    customer: Customer
    personal: list[tuple[str, str]]  # label, value (masked without loans.view_pii)
    loans: list[Loan]
    exposure: list[Exposure]
    changes: list[BatchChange]
    log_entries: list[LogEntry]
    batches: list[Batch]
    can_see_pii: bool


def _masked_fields(fields: dict, can_see_pii: bool) -> dict:
    if can_see_pii:
        return fields
    return {name: [mask(v) for v in pair] if name in PII else pair for name, pair in fields.items()}


def customer_read(*, customer_pk: int, can_see_pii: bool) -> CustomerHistory | None:
    """A customer with their loans, their exposure summed per snapshot, their tape changes and
    edits; personal data masked unless ``can_see_pii``."""
    customer = Customer.objects.filter(pk=customer_pk).first()
    if customer is None:
        return None
    loans = list(customer.loans.order_by("disburse_date", "loan_id"))
    loan_ids = [loan.pk for loan in loans]
    # Per (run, loan) index probes: the runs' ids times this customer's loans, never a scan.
    runs = list(SnapshotRun.objects.values_list("pk", flat=True))
    exposure = (
        [
            Exposure(
                row["run__as_of"],
                SnapshotRun.Basis(row["run__basis"]).label,
                row["outstanding"] or Decimal("0"),
                row["written_off"] or Decimal("0"),
                row["loans"],
                row["worst_dpd"] or 0,
            )
            for row in LoanState.objects.filter(run_id__in=runs, loan_id__in=loan_ids)
            .values("run__as_of", "run__basis")
            .annotate(
                outstanding=Sum("outstanding_principal"),
                written_off=Sum("written_off_balance"),
                loans=Count("id"),
                worst_dpd=Max("dpd"),
            )
            .order_by("-run__as_of", "run__basis")
        ]
        if loan_ids and runs
        else []
    )
    changes = list(
        BatchChange.objects.filter(kind="customers", key=customer.customer_id)
        .select_related("batch", "reviewed_by")
        .order_by("-batch__created_at")
    )
    for change in changes:
        change.fields = _masked_fields(change.fields, can_see_pii)
    log_entries = list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Customer), object_pk=str(customer.pk)
        )
        .select_related("actor")
        .order_by("-timestamp")
    )
    for entry in log_entries:
        entry.shown_changes = _masked_fields(entry.changes_dict, can_see_pii)
    batch_ids = {customer.batch_id, *(loan.batch_id for loan in loans)}
    batch_ids |= {change.batch_id for change in changes}
    batches = list(Batch.objects.filter(pk__in=batch_ids).order_by("-created_at"))
    personal: list[tuple[str, str]] = []
    for name in PII:
        value = getattr(customer, name)
        if value in (None, ""):
            continue  # an empty field is left out, not shown as a bare label
        label = name.replace("_", " ")
        personal.append((label, str(value) if can_see_pii else mask(value)))
    return CustomerHistory(
        customer,
        personal,
        loans,
        exposure,
        changes,
        log_entries,
        batches,
        can_see_pii,
    )
