from __future__ import annotations

from django.conf import settings
from django.db import models

from kpis.definitions import BUCKETS


class Dashboard(models.Model):
    """Holds the dashboard permissions; KPI snapshots arrive with the KPI engine."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can read dashboards and drill down to loans"),
            ("export_data", "Can export tables and reports"),
            ("recompute_snapshots", "Can recompute KPI snapshots for a date range"),
        ]

    def __str__(self) -> str:
        return "dashboards"


class SnapshotRunQuerySet(models.QuerySet):
    def of_date(self, as_of) -> SnapshotRunQuerySet:
        """The runs of one as-of date (as reported, and restated if it was)."""
        return self.filter(as_of=as_of)

    def restated(self) -> SnapshotRunQuerySet:
        return self.filter(basis=SnapshotRun.Basis.RESTATED)

    def standing(self) -> SnapshotRunQuerySet:
        """The run that stands for each date: its restatement when it has one, else as reported
        (what the engine reads as history: roll rates, vintages)."""
        restatement = SnapshotRun.objects.restated().filter(as_of=models.OuterRef("as_of"))
        return self.exclude(
            models.Q(basis=SnapshotRun.Basis.AS_REPORTED) & models.Exists(restatement)
        )

    def as_of_dates(self) -> set:
        """The as-of dates that have a run."""
        return set(self.values_list("as_of", flat=True))


class SnapshotRun(models.Model):
    """One computation of loan states and KPI values for an as-of date (end of day R).

    A date keeps its first computation as *as reported*; recomputing it after the data changed
    (a late correction), or under a later definition version, writes a *restated* run beside it,
    replacing an earlier restatement, and says why (``restatement_reason``).
    Recomputing on the same data replaces the run in place.
    """

    class Basis(models.TextChoices):
        AS_REPORTED = "as_reported", "As reported"
        RESTATED = "restated", "Restated"

    as_of = models.DateField()
    basis = models.CharField(max_length=16, choices=Basis.choices, default=Basis.AS_REPORTED)
    definition_version = models.PositiveSmallIntegerField()
    computed_at = models.DateTimeField()
    computed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    job = models.CharField(
        max_length=64, blank=True, help_text="The command or scheduled job that computed it."
    )
    batches = models.ManyToManyField(
        "loans.Batch", blank=True, related_name="+", help_text="The loaded batches it read."
    )
    data_fingerprint = models.CharField(
        max_length=64, help_text="Hash of the batches read: equal means same inputs."
    )
    provisional = models.BooleanField(default=False)
    provisional_reasons = models.JSONField(default=list, blank=True)
    restatement_reason = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why a restated run restates its date (a definition version change, or changed numbers).",
    )
    loans = models.PositiveIntegerField(default=0, help_text="Loans with a balance at R.")
    duration_ms = models.PositiveIntegerField(default=0)
    # The incremental daily snapshot (kpis.engine.incremental): the run whose loan states it
    # carried forward, recomputing only the loans touched since; null for a full computation.
    carried_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The earlier run whose loan states it carried forward (empty: computed in full).",
    )
    touched_loans = models.PositiveIntegerField(
        null=True, blank=True, help_text="Loans recomputed from the book when carried forward."
    )
    engine_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="The engine settings it was computed with (write-off DPD, residual tolerance): "
        "a later run carries its states forward only under the same ones.",
    )
    opening_kept = models.BooleanField(
        default=False,
        help_text="It left its month's openings (MonthOpening) true for every loan that paid in "
        "the month through its date: a run carried from it reads them.",
    )

    objects = SnapshotRunQuerySet.as_manager()

    class Meta:
        ordering = ["-as_of", "basis"]
        constraints = [
            models.UniqueConstraint(
                fields=["as_of", "basis"], name="snapshot_one_per_date_and_basis"
            )
        ]

    def __str__(self) -> str:
        return f"{self.as_of:%Y-%m-%d} ({self.get_basis_display()})"

    @property
    def computation(self) -> str:
        """How its loan states were computed, as the job logs and the command print it."""
        if self.touched_loans is None:
            return "every loan computed from the book"
        base = self.carried_from  # None once that run was replaced by a recomputation
        source = f"carried from {base.as_of}" if base else "carried from a run since recomputed"
        return f"{source}, {self.touched_loans:,} loans recomputed from the book"


class LoanState(models.Model):
    """A loan's state at a run's as-of date: only loans with a balance (live or written off)."""

    # No database FKs: a quarter of a million rows per date are written in one statement, by the
    # engine, for the run it has just created and loans it has just read; a reference check per
    # row at commit would only repeat that (see docs/data-model.md). Django still cascades.
    run = models.ForeignKey(
        SnapshotRun,
        on_delete=models.CASCADE,
        related_name="loan_states",
        db_constraint=False,
        db_index=False,
    )
    loan = models.ForeignKey(
        "loans.Loan",
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    customer_id = models.BigIntegerField()
    company = models.CharField(max_length=32)
    product_type = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    # The customer's segment when the snapshot was taken (loans.segments); "" when unsegmented.
    segment = models.CharField(max_length=16, db_default="")
    interest_rate = models.DecimalField(max_digits=12, decimal_places=6)
    outstanding_principal = models.DecimalField(max_digits=18, decimal_places=2)
    dpd = models.IntegerField()
    bucket = models.CharField(max_length=16)
    written_off = models.BooleanField()
    written_off_balance = models.DecimalField(max_digits=18, decimal_places=2)

    class Meta:
        indexes = [
            # Drill-down: a run's live loans behind a bucket or PAR number (a DPD range), or its
            # written-off ones, worst first and paged by (dpd, id) keyset. written_off comes before
            # dpd: the worst DPDs are written-off loans, which a live list would otherwise skip
            # one by one. Also the run's rows for the engine's per-run reads.
            models.Index(
                fields=["run", "written_off", "dpd", "id"], name="loanstate_run_wo_dpd_id_idx"
            ),
            # A run's state of one loan: the loan page (one probe per run), roll rates and newly
            # written-off loans against the previous month-end. Run first, so a snapshot's
            # inserts land together at the index's end instead of at a million scattered leaves.
            models.Index(fields=["run", "loan"], name="loanstate_run_loan_idx"),
            # Vintages' ever-30+: the loans at 30+ DPD in every earlier run, a fifth of the rows.
            models.Index(
                fields=["run", "loan"],
                condition=models.Q(dpd__gte=30),
                name="loanstate_run_loan_30dpd_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"loan {self.loan_id} at run {self.run_id}"

    @property
    def bucket_label(self) -> str:
        return next((label for code, label, *_ in BUCKETS if code == self.bucket), self.bucket)


class LoanResidual(models.Model):
    """A loan repaid but for a residual at or below RESIDUAL_TOLERANCE at a run's date: no state,
    counted on its own (definitions.RESIDUAL_RULE); kept so the next day's run can carry it
    forward like a state."""

    run = models.ForeignKey(
        SnapshotRun, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    loan = models.ForeignKey(
        "loans.Loan",
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    balance = models.DecimalField(max_digits=18, decimal_places=2)

    class Meta:
        indexes = [models.Index(fields=["run", "loan"], name="loanresidual_run_loan_idx")]

    def __str__(self) -> str:
        return f"loan {self.loan_id} residual at run {self.run_id}"


class MonthOpening(models.Model):
    """A loan's principal paid and principal due before a month began: what the month's
    collections split needs of a payer's history (kpis.engine.book.MONTH_LOANS). The daily runs
    of the month keep them for the loans that paid (kpis.engine.incremental), so a carried run
    reads them instead of every payer's whole history. Depends on the book and the month alone,
    not on a run: written by the runs that compute a payer's cash, read by the runs carried from
    one that kept them (``SnapshotRun.opening_kept``)."""

    month = models.DateField(help_text="The month's first day.")
    loan_id = models.BigIntegerField()  # no foreign key: a loan removed leaves a row never read
    paid_before_month = models.DecimalField(max_digits=18, decimal_places=2)
    due_before_month = models.DecimalField(max_digits=18, decimal_places=2)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["month", "loan_id"], name="monthopening_month_loan")
        ]

    def __str__(self) -> str:
        return f"loan {self.loan_id} opening {self.month:%Y-%m}"


class KpiValueQuerySet(models.QuerySet):
    def portfolio(self) -> KpiValueQuerySet:
        """The whole portfolio's values."""
        return self.filter(dimension="portfolio")

    def slices(self) -> KpiValueQuerySet:
        """Every slice's values but the whole portfolio's."""
        return self.exclude(dimension="portfolio")


class KpiValue(models.Model):
    """One KPI for one slice of the portfolio at a run's date (ratios as fractions)."""

    run = models.ForeignKey(SnapshotRun, on_delete=models.CASCADE, related_name="values")
    as_of = models.DateField()
    code = models.CharField(max_length=64)
    dimension = models.CharField(max_length=16, help_text="portfolio, company, product or currency")
    member = models.CharField(
        max_length=64,
        blank=True,
        help_text="The slice: an entity, product or currency; '' for the portfolio.",
    )
    value = models.DecimalField(max_digits=28, decimal_places=10, null=True)
    numerator = models.DecimalField(max_digits=28, decimal_places=10, null=True)
    denominator = models.DecimalField(max_digits=28, decimal_places=10, null=True)
    definition_version = models.PositiveSmallIntegerField()

    objects = KpiValueQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "code", "dimension", "member"], name="kpivalue_one_per_slice"
            ),
        ]
        indexes = [
            # Trends: a KPI's values over dates for one slice.
            models.Index(
                fields=["code", "dimension", "member", "as_of"], name="kpivalue_trend_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.dimension}:{self.member or '-'} @ {self.as_of:%Y-%m-%d}"


class TopBorrower(models.Model):
    """One of the customers with the largest outstanding principal in a slice at a run's date.

    Ranking customers reads every loan state of the run, too slow for a request at a million
    loans, so the engine keeps the concentration page's list with the snapshot.
    """

    run = models.ForeignKey(
        SnapshotRun, on_delete=models.CASCADE, related_name="top_borrowers", db_index=False
    )
    dimension = models.CharField(max_length=16)
    member = models.CharField(max_length=64, blank=True)
    rank = models.PositiveSmallIntegerField()
    customer_id = models.BigIntegerField()
    outstanding_principal = models.DecimalField(max_digits=18, decimal_places=2)
    loans = models.PositiveIntegerField(
        help_text="The customer's loans with a balance in the slice."
    )

    class Meta:
        constraints = [
            # Its index serves the concentration page: a slice's rows of one run in rank order.
            models.UniqueConstraint(
                fields=["run", "dimension", "member", "rank"], name="topborrower_one_per_rank"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.rank} {self.dimension}:{self.member or '-'} @ run {self.run_id}"


class RollRate(models.Model):
    """Balance-weighted move of loans between DPD buckets from the previous month-end to R."""

    run = models.ForeignKey(SnapshotRun, on_delete=models.CASCADE, related_name="roll_rates")
    from_bucket = models.CharField(max_length=16)
    to_bucket = models.CharField(
        max_length=16, help_text="A bucket, or 'repaid' when the loan has no balance left."
    )
    balance = models.DecimalField(
        max_digits=18, decimal_places=2, help_text="Balance at the previous month-end."
    )
    share = models.DecimalField(
        max_digits=12, decimal_places=10, help_text="balance / the from-bucket's balance"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "from_bucket", "to_bucket"], name="rollrate_one_per_cell"
            )
        ]

    def __str__(self) -> str:
        return f"{self.from_bucket} → {self.to_bucket} @ run {self.run_id}"


class VintagePoint(models.Model):
    """One cohort (disbursement month) at a month-end: how much of it went bad so far."""

    run = models.ForeignKey(SnapshotRun, on_delete=models.CASCADE, related_name="vintage_points")
    cohort = models.DateField(help_text="First day of the disbursement month.")
    months_on_book = models.PositiveSmallIntegerField()
    disbursed = models.DecimalField(max_digits=18, decimal_places=2)
    written_off = models.DecimalField(
        max_digits=18, decimal_places=2, help_text="Written-off balance of the cohort at R."
    )
    ever_30 = models.DecimalField(
        max_digits=18,
        decimal_places=2,
        help_text="Principal of cohort loans 30+ DPD at any month-end up to R.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "cohort"], name="vintage_one_per_cohort")
        ]
        indexes = [
            # Vintage curves: a cohort's points over months on book.
            models.Index(fields=["cohort", "months_on_book"], name="vintage_curve_idx"),
        ]

    def __str__(self) -> str:
        return f"cohort {self.cohort:%Y-%m} at {self.months_on_book} months"


class Insight(models.Model):
    """What changed in one slice at one snapshot run, in a few checked sentences (kpis.insights).

    Written by the model and verified against the snapshot, or by the deterministic summary when
    the model is off, failing or unverifiable. Every generation is kept (the history page); the
    newest of a run and slice is the one shown.
    """

    class Source(models.TextChoices):
        MODEL = "model", "AI-written"
        SUMMARY = "summary", "Deterministic summary"

    class Verification(models.TextChoices):
        PASSED = "passed", "Every statement passed its checks"
        PARTIAL = "partial", "Statements that failed their checks were dropped"

    run = models.ForeignKey(SnapshotRun, on_delete=models.CASCADE, related_name="insights")
    dimension = models.CharField(max_length=16, default="portfolio")
    member = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    verification = models.CharField(max_length=16, choices=Verification.choices)
    fallback_reason = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the summary stands in for the model (off, failing, unverifiable, over limits).",
    )
    headline = models.TextField(help_text="Rendered from the stored values.")
    statements = models.JSONField(
        default=list, help_text="The published statements: rendered text and what each cites."
    )
    checks = models.JSONField(
        default=list, help_text="Every check of every answer asked for, passed or failed."
    )
    digest = models.JSONField(default=dict, help_text="What the model was given.")
    digest_chars = models.PositiveIntegerField(default=0)
    model = models.CharField(max_length=100, blank=True, help_text="The model that answered.")
    api = models.CharField(max_length=16, blank=True, help_text="responses or chat")
    prompt_version = models.PositiveSmallIntegerField()
    prompt_hash = models.CharField(max_length=64)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Answers asked for.")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0, help_text="USD")
    latency_ms = models.PositiveIntegerField(
        default=0, help_text="Time spent waiting on the model."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    job = models.CharField(max_length=64, blank=True, help_text="kpi_daily, or regenerate.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [("regenerate_insight", "Can regenerate an AI insight")]
        indexes = [
            # The overview's insight and the history page: a slice's insights, newest first.
            models.Index(
                fields=["dimension", "member", "run", "-created_at"], name="insight_slice_idx"
            ),
        ]

    def __str__(self) -> str:
        where = "portfolio" if self.dimension == "portfolio" else f"{self.dimension} {self.member}"
        return f"insight {where} @ {self.run}"

    @property
    def is_model(self) -> bool:
        return self.source == self.Source.MODEL
