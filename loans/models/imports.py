"""Import bookkeeping: how each source writes its files, and what each batch changed."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from loans.models.book import Batch


class ColumnMap(models.Model):
    """How one source writes its tape files; kept by the data steward in the admin.

    ``headers`` maps the source's header (any case) to the Cascade tape column, e.g.
    ``{"fecha_desembolso": "disburse_date", "monto_desembolso": "disburse_principal"}``;
    ``file_names`` maps its file names to tape kinds, e.g. ``{"prestamos": "loans"}``.
    """

    class Encoding(models.TextChoices):
        AUTO = "auto", "Detect (UTF-8, with or without BOM, else Latin-1 or Windows-1252)"
        UTF8 = "UTF8", "UTF-8"
        LATIN1 = "LATIN1", "Latin-1 (ISO 8859-1)"
        WIN1252 = "WIN1252", "Windows-1252 (Excel on Windows)"

    source = models.CharField(
        max_length=64, unique=True, help_text="The source name uploads choose, e.g. 'lender-gt'."
    )
    delimiter = models.CharField(
        max_length=1, default=",", help_text="Field separator: ',' or ';' or a tab."
    )
    decimal_comma = models.BooleanField(default=False, help_text="Numbers written 1.234,56.")
    day_first = models.BooleanField(default=False, help_text="Dates written DD/MM/YYYY.")
    encoding = models.CharField(max_length=8, choices=Encoding.choices, default=Encoding.AUTO)
    headers = models.JSONField(default=dict, blank=True)
    file_names = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["source"]

    def __str__(self) -> str:
        return self.source

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from loans.imports.specs import TAPE_SPECS

        # COPY reads CSV with '"' as its quote: a delimiter that is the quote, a line break, a
        # letter or a digit would break every import of this source.
        if self.delimiter in ('"', "\n", "\r", "") or self.delimiter.isalnum():
            raise ValidationError(
                {
                    "delimiter": "Use a separator such as ',' ';' '|' or a tab: not the quote '\"', "
                    "a line break, a letter or a digit."
                }
            )
        columns = {c.name for spec in TAPE_SPECS.values() for c in spec.columns}
        unknown = sorted(v for v in self.headers.values() if v not in columns)
        if unknown:
            raise ValidationError({"headers": f"not tape columns: {', '.join(unknown)}"})
        kinds = sorted(v for v in self.file_names.values() if v not in TAPE_SPECS)
        if kinds:
            raise ValidationError(
                {"file_names": f"not tape files: {', '.join(kinds)} (use {', '.join(TAPE_SPECS)})"}
            )


class BatchChange(models.Model):
    """One row an import changed or found missing, with the fields before and after.

    Bulk loads record history here, per batch, instead of a signal per row. Changes to fields
    that describe the past (disbursement date and principal, past cash flows) and loans that
    vanished from a newer tape are flagged for a steward to accept or reject with a reason.
    """

    class Change(models.TextChoices):
        UPDATED = "updated", "Updated"
        VANISHED = "vanished", "Missing from the newer tape"

    class Review(models.TextChoices):
        NONE = "", "No review needed"
        PENDING = "pending", "Waiting for a steward"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=160, help_text="The row's natural key in the tape.")
    change = models.CharField(max_length=16, choices=Change.choices, default=Change.UPDATED)
    fields = models.JSONField(default=dict, help_text="field -> [before, after]")
    review = models.CharField(
        max_length=16, choices=Review.choices, default=Review.NONE, blank=True
    )
    review_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "kind", "key"]
        indexes = [
            # The tape-diff page: a batch's changes, flagged ones first.
            models.Index(fields=["batch", "review"], name="batchchange_batch_review_idx"),
            # A loan's page: its changes by key ("L1", "L1 due ...", "L1 PAYMENT ...", prefix search).
            models.Index(
                fields=["key"], name="batchchange_key_idx", opclasses=["varchar_pattern_ops"]
            ),
            # Quality gate: is any flag still waiting for a steward?
            models.Index(
                fields=["review"],
                name="batchchange_pending_idx",
                condition=models.Q(review="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.get_change_display()})"


class Upload(models.Model):
    """A file a person uploaded in the admin: previewed (dry run), then loaded by the task cluster.

    The load writes one Batch per file it contains; this record carries the person's choices, the
    live progress the page shows, and the outcome (summary, problems, rejected rows as CSV).
    """

    class Kind(models.TextChoices):
        TAPE = "tape", "Loan tape (CSV files or a ZIP: customers, loans, schedules, transactions)"
        STATEMENTS = "statements", "Financial statements (CSV or XLSX)"
        MARKETING_SPEND = "marketing_spend", "Marketing spend (CSV or XLSX)"

    class Status(models.TextChoices):
        CHECKING = "checking", "Checking the file"
        DRAFT = "draft", "Uploaded, not loaded yet"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Loading"
        LOADED = "loaded", "Loaded"
        FAILED = "failed", "Rejected: nothing loaded"

    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.TAPE)
    source = models.CharField(
        max_length=64, default="cascade", help_text="Who sent the file; picks the column map."
    )
    file = models.FileField(upload_to="uploads/%Y/%m/%d/", max_length=500)
    # The name the person's file had: storage renames a second "loans.csv" of the same day, and
    # a tape file's kind is read from its name.
    original_name = models.CharField(max_length=255, blank=True)
    full_export = models.BooleanField(
        default=False,
        verbose_name="Full export of this source",
        help_text="Tick for the source's whole book: its loans missing from the file are then "
        "flagged as vanished for review. Leave unticked for a partial file (some loans, new "
        "payments): nothing else of the source is flagged.",
    )
    quarantine = models.BooleanField(
        default=False,
        verbose_name="Load the valid rows, quarantine the rest",
        help_text="Otherwise a file with any error loads nothing.",
    )
    data_through = models.DateField(
        null=True,
        blank=True,
        verbose_name="Data through",
        help_text="The date the file's data runs to, when the export says so; otherwise its "
        "latest transaction or disbursement date.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="uploads"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # What the dry run found, as the preview page shows it (loans.services.upload_check): the task
    # cluster writes it, so no request ever waits on a file's validation.
    preview = models.JSONField(null=True, blank=True, editable=False)
    progress = models.FloatField(default=0)
    progress_label = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    rejects = models.FileField(upload_to="rejects/%Y/%m/%d/", max_length=500, blank=True)
    batches = models.ManyToManyField(Batch, blank=True, related_name="uploads")
    # The API client's Idempotency-Key: the same key from the same user answers with this upload
    # instead of creating another.
    idempotency_key = models.CharField(max_length=128, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # An uploader's own uploads, newest first (the admin list for Uploader).
            models.Index(fields=["created_by", "-created_at"], name="upload_by_latest_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="upload_idempotency_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"Upload {self.pk} · {self.get_kind_display().split(' (')[0]} · {self.source}"
