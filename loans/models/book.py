"""The normalized layer: the Cascade tape's customers, loans, schedules and transactions.

Every row points at the batch (file or fetch) that last wrote it. Natural keys from the tape
(``customer_id``, ``loan_id``) are unique; money is ``Decimal`` with two places.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

MONEY = {"max_digits": 18, "decimal_places": 2}
ZERO = Decimal("0.00")
# An ISO 4217 code. USD, the book's own currency, is settled by one comparison before the
# regex: the regex alone cost 1 s per 5M rows a tape import inserts, the test 0.2 s.
CURRENCY_CODE = Q(currency="USD") | Q(currency__regex=r"^[A-Z]{3}$")


def money_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(**MONEY, default=ZERO, **kwargs)


class BatchQuerySet(models.QuerySet):
    def loaded(self) -> BatchQuerySet:
        return self.filter(status=Batch.Status.LOADED)

    def holding(self, sha256: str) -> BatchQuerySet:
        """Batches of these exact bytes (the same SHA-256)."""
        return self.filter(sha256=sha256)


class Batch(models.Model):
    """One file uploaded or one fetch from a provider: the raw layer and its lineage record."""

    class Kind(models.TextChoices):
        TAPE = "tape", "Loan tape (Cascade: any of customers, loans, schedules, transactions)"
        CUSTOMERS = "customers", "Customers"
        LOANS = "loans", "Loans"
        SCHEDULES = "schedules", "Payment schedules"
        TRANSACTIONS = "transactions", "Transactions (disbursements, payments)"
        STATEMENTS = "statements", "Financial statements"
        MARKETING_SPEND = "marketing_spend", "Marketing spend"
        CRM = "crm", "CRM records"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        LOADED = "loaded", "Loaded"
        FAILED = "failed", "Failed"
        DUPLICATE = "duplicate", "Duplicate (same bytes as an earlier batch)"

    source = models.CharField(
        max_length=64, help_text="Who sent the data: cascade, hubspot, meta, a lender's name, demo."
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    file = models.FileField(upload_to="raw/%Y/%m/%d/", max_length=500, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="batches",
    )
    job = models.CharField(
        max_length=64, blank=True, help_text="The scheduled job or command that brought it."
    )
    full_export = models.BooleanField(
        default=True,
        help_text="The source's whole book: its rows missing from the file are flagged as "
        "vanished. A partial file (some loans, a month of payments) flags none.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    rows_read = models.PositiveIntegerField(default=0)
    rows_inserted = models.PositiveIntegerField(default=0)
    rows_updated = models.PositiveIntegerField(default=0)
    rows_unchanged = models.PositiveIntegerField(default=0)
    rows_rejected = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # The data cut-off (docs/design.md, "Data cut-off and restatement"): the date the batch's
    # data runs to (a tape: its latest transaction or disbursement date, or the date the export
    # or the uploader gives), and the earliest date of a row it inserted or changed (a snapshot
    # on or after that date read other data: it is restated).
    data_through = models.DateField(
        null=True, blank=True, help_text="The date this batch's data runs to (its cut-off)."
    )
    changes_from = models.DateField(
        null=True,
        blank=True,
        help_text="The earliest date of a row this batch inserted or changed: snapshots on or "
        "after it are recomputed.",
    )

    objects = BatchQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at"]
        permissions = [("view_raw_file", "Can download a batch's raw file")]
        constraints = [
            # Loading the same bytes twice is a no-op: only one loaded batch per content hash.
            models.UniqueConstraint(
                fields=["sha256"], condition=Q(status="loaded"), name="batch_loaded_sha256_unique"
            ),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="batch_sha256_hex"
            ),
        ]
        indexes = [
            # Data status: the latest batch per source and kind.
            models.Index(
                fields=["source", "kind", "-created_at"], name="batch_source_kind_latest_idx"
            ),
        ]

    def __str__(self) -> str:
        name = self.original_name or self.job or self.kind
        return f"Batch {self.pk} · {self.source} · {name}"


class Segment(models.TextChoices):
    """A borrower's relationship with us at the last refresh, read from their loans."""

    NEW = "new", "New (first loan)"
    RECURRENT = "recurrent", "Recurrent (borrowing again without a break)"
    REACTIVATED = "reactivated", "Reactivated (back after a break)"
    RECOVERED = "recovered", "Recovered (borrowing again after a default)"


class Customer(models.Model):
    """A borrower. Name, national id, e-mail, phone and birth date are personal data (PII)."""

    customer_id = models.CharField(max_length=64, unique=True)
    customer_type = models.CharField(max_length=64, blank=True)
    income = models.DecimalField(**MONEY, null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    gender = models.CharField(max_length=16, blank=True)
    channel_type = models.CharField(max_length=64, blank=True)
    dependents = models.PositiveSmallIntegerField(null=True, blank=True)
    geography_city = models.CharField(max_length=128, blank=True)
    geography_state = models.CharField(max_length=128, blank=True)
    geography_country = models.CharField(max_length=3, blank=True)
    # Segments (KPI dimension "segment"): behaviour from the loan book, sector and size from the
    # CRM; refreshed by the daily_ingest job (loans.segments).
    # db_default: the tape import's set-based INSERT names only the tape's columns.
    segment = models.CharField(max_length=16, choices=Segment.choices, blank=True, db_default="")
    sector = models.CharField(max_length=64, blank=True, db_default="")
    size = models.CharField(max_length=32, blank=True, db_default="")
    # Personal data: masked for roles without loans.view_pii, redacted in the audit log.
    name = models.CharField(max_length=255, blank=True)
    national_id = models.CharField(max_length=64, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    birth_date = models.DateField(null=True, blank=True)

    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_id"]
        permissions = [("view_pii", "Can see borrowers' personal data")]
        constraints = [
            models.CheckConstraint(condition=CURRENCY_CODE, name="customer_currency_iso"),
            models.CheckConstraint(
                condition=Q(income__isnull=True) | Q(income__gte=0),
                name="customer_income_non_negative",
            ),
        ]

    def __str__(self) -> str:
        # The tape's id only: names must not reach the audit log or admin breadcrumbs.
        return self.customer_id


class Loan(models.Model):
    """A loan as the tape describes it; the tape's as-of columns are kept for reconciliation."""

    loan_id = models.CharField(max_length=64, unique=True)
    # Like every link of the bulk-loaded tables, kept without a database FK: the import checks
    # each customer id before merging, and customers are never deleted (PROTECT). A per-row check
    # queued at commit cost 20 s of a million-loan load.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.PROTECT,
        related_name="loans",
        db_index=False,
        db_constraint=False,
    )
    company = models.CharField(max_length=32, help_text="The lending entity.")
    product_type = models.CharField(max_length=64, blank=True)
    loan_grade = models.CharField(max_length=16, blank=True)
    lender = models.CharField(max_length=64, blank=True)
    facility = models.CharField(max_length=64, blank=True)
    application_date = models.DateField(null=True, blank=True)
    disburse_date = models.DateField()
    pledge_date = models.DateField(null=True, blank=True)
    maturity_date = models.DateField(null=True, blank=True)
    disburse_principal = models.DecimalField(**MONEY)
    total_fees = money_field()
    total_other = money_field()
    total_interest = money_field()
    credit_bureau_score = models.PositiveSmallIntegerField(null=True, blank=True)
    term = models.PositiveIntegerField(null=True, blank=True, help_text="Days.")
    frequency = models.CharField(max_length=32, blank=True)
    interest_rate = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="USD")
    # The tape's own as-of view, checked against what the KPI engine computes.
    outstanding_balance = money_field()
    dpd = models.IntegerField(default=0)
    ratio_paid = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    loan_status = models.CharField(max_length=32, blank=True)
    amount_buckets = models.CharField(max_length=32, blank=True)
    loan_counts = models.CharField(
        max_length=16, blank=True, help_text="The tape's loan-count bucket (1, 2-4, 5-10, 11+)."
    )
    term_buckets = models.CharField(max_length=32, blank=True)
    location_state_province = models.CharField(max_length=128, blank=True)
    # Derived by the import: the day payments first covered the disbursed principal. Lets the KPI
    # engine skip repaid loans instead of summing every payment of the book for each date.
    repaid_on = models.DateField(null=True, blank=True, editable=False)

    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["loan_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(disburse_principal__gte=0), name="loan_principal_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(outstanding_balance__gte=0), name="loan_outstanding_non_negative"
            ),
            models.CheckConstraint(condition=CURRENCY_CODE, name="loan_currency_iso"),
            models.CheckConstraint(
                condition=Q(maturity_date__isnull=True) | Q(maturity_date__gte=F("disburse_date")),
                name="loan_matures_after_disbursement",
            ),
            models.CheckConstraint(
                condition=Q(application_date__isnull=True)
                | Q(application_date__lte=F("disburse_date")),
                name="loan_applied_before_disbursement",
            ),
            models.CheckConstraint(
                condition=Q(interest_rate__gte=0), name="loan_rate_non_negative"
            ),
        ]
        indexes = [
            # A customer's loans in disbursement order: repeat borrowers, segments, customer page.
            models.Index(fields=["customer", "disburse_date"], name="loan_customer_disbursed_idx"),
            # Loans disbursed in a period: disbursements, vintages, loan states as of R.
            models.Index(fields=["disburse_date"], name="loan_disbursed_idx"),
            # Filters by lending entity and product on dashboards and the admin.
            models.Index(fields=["company", "product_type"], name="loan_entity_product_idx"),
        ]

    def __str__(self) -> str:
        return self.loan_id


class CashFlowParts(models.Model):
    """The parts every schedule line and transaction of the tape carries."""

    principal = money_field()
    interest = money_field()
    other = money_field()
    fees = money_field()
    to_tax = money_field()
    add_balance = money_field()
    reduce_balance = money_field()
    currency = models.CharField(max_length=3, default="USD")
    # No database FK: millions of rows per tape would each queue a check at commit. Batches are
    # never deleted (PROTECT here, no delete in the admin), so the id always resolves. No index
    # either: nothing looks these rows up by batch, and building it cost a tape's first load
    # 1-1.2 s per 5M rows (every update changes the batch, so it was kept up on re-imports too).
    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )

    class Meta:
        abstract = True

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest + self.fees + self.other


class Installment(CashFlowParts):
    """One line of a loan's expected schedule (what is due, and when)."""

    # No database FK (like ``batch``): the import checks every loan id before merging and
    # loans are never deleted; a per-row check at commit would cost a third of a tape's load time.
    loan = models.ForeignKey(
        Loan,
        on_delete=models.PROTECT,
        related_name="installments",
        db_index=False,
        db_constraint=False,
    )
    due_date = models.DateField()

    class Meta:
        ordering = ["loan", "due_date"]
        constraints = [
            # One line per loan and due date: the tape's natural key for schedules.
            models.UniqueConstraint(
                fields=["loan", "due_date"], name="installment_loan_due_unique"
            ),
            models.CheckConstraint(
                condition=Q(principal__gte=0), name="installment_principal_non_negative"
            ),
            models.CheckConstraint(condition=CURRENCY_CODE, name="installment_currency_iso"),
        ]
        indexes = [
            # Scheduled amounts due in a period: collection rate, maturities due in 30/60/90 days.
            models.Index(fields=["due_date"], name="installment_due_idx"),
        ]
        # The unique (loan, due_date) index serves a loan's schedule in due order (DPD).

    def __str__(self) -> str:
        return f"{self.loan_id} due {self.due_date:%Y-%m-%d}"


class Transaction(CashFlowParts):
    """Money that moved: disbursements, payments, write-offs, reversals and the tape's other types."""

    class Type(models.TextChoices):
        DISBURSEMENT = "DISBURSEMENT", "Disbursement"
        PAYMENT = "PAYMENT", "Payment"
        WRITE_OFF = "WRITE_OFF", "Write-off"
        REVERSAL = "REVERSAL", "Reversal"
        FEE = "FEE", "Fee charged"
        INTEREST = "INTEREST", "Interest accrued"
        ADJUSTMENT = "ADJUSTMENT", "Balance adjustment"
        REFUND = "REFUND", "Refund"

    # No database FK, as for installments: the import checks loan ids; loans are never deleted.
    loan = models.ForeignKey(
        Loan,
        on_delete=models.PROTECT,
        related_name="transactions",
        db_index=False,
        db_constraint=False,
    )
    transaction_type = models.CharField(max_length=16, choices=Type.choices)
    date = models.DateField(help_text="The tape's date_paid.")
    # The tape has no transaction id: the n-th row of the same loan, type and date is its key.
    sequence = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["loan", "date", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["loan", "date", "transaction_type", "sequence"],
                name="transaction_natural_key",
            ),
            models.CheckConstraint(
                condition=Q(principal__gte=0), name="transaction_principal_non_negative"
            ),
            models.CheckConstraint(condition=CURRENCY_CODE, name="transaction_currency_iso"),
        ]
        indexes = [
            # Cash dated in a period across the portfolio: collections, cash split.
            models.Index(fields=["date", "transaction_type"], name="transaction_date_type_idx"),
        ]
        # The natural-key index (loan, date, ...) serves a loan's cash flows up to R (OB, DPD).

    def __str__(self) -> str:
        return f"{self.loan_id} {self.transaction_type} {self.date:%Y-%m-%d}"
