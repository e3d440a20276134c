"""Pipeline runs and what the providers sent: CRM records (HubSpot) and ad insights (Meta).

Raw provider payloads are kept as files on their ``loans.Batch`` (the raw layer); the rows here are
the normalized layer and point at the batch that last wrote them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

MONEY = {"max_digits": 18, "decimal_places": 2}


class PipelineRun(models.Model):
    """One run of a scheduled job (``cascade_ingest``, ``daily_ingest``, ``meta_ingest``, ...)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (integration off)"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        PAGE = "page", "Re-run from the status page"
        COMMAND = "command", "run_pipeline command"
        LOAD = "load", "Queued by a load that changed the past"

    job = models.CharField(max_length=64)
    for_date = models.DateField(help_text="The business date the run is for (usually yesterday).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    rows_in = models.PositiveBigIntegerField(default=0)
    rows_out = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)
    alerted = models.BooleanField(default=False, help_text="An alert was sent for this run.")
    # What a run on demand was asked for (kpi_restate: a date range, or the stale snapshots).
    params = models.JSONField(default=dict, blank=True)
    # Written on a connection of its own while the run goes (the status page shows it).
    progress = models.FloatField(default=0)
    progress_label = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("view_pipelines", "Can see the pipeline status page"),
            ("run_pipelines", "Can re-run a pipeline from the status page"),
        ]
        indexes = [
            # Status page and alerts: a job's latest runs.
            models.Index(fields=["job", "-created_at"], name="pipelinerun_job_latest_idx"),
        ]
        constraints = [
            # At most one run of a job at a time (a second one would double-fetch and double-load).
            models.UniqueConstraint(
                fields=["job"],
                condition=Q(status__in=["queued", "running"]),
                name="pipelinerun_one_active_per_job",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.for_date} ({self.status})"

    @property
    def seconds(self) -> float | None:
        return None if self.duration_ms is None else self.duration_ms / 1000

    @property
    def log(self) -> str:
        return "\n".join(f"[{s.name}] {s.log}".rstrip() for s in self.steps.all() if s.log)


class PipelineStep(models.Model):
    """One step of a run: fetch, land, normalize, segments, quality check..."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=PipelineRun.Status.choices, default=PipelineRun.Status.RUNNING
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    rows_in = models.PositiveBigIntegerField(default=0)
    rows_out = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    # The columns (or properties) the source sent: a change between runs raises a quality alert.
    columns = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["run", "started_at", "pk"]

    def __str__(self) -> str:
        return f"{self.run} · {self.name}"


class CrmRecord(models.Model):
    """A HubSpot contact, company or deal as last fetched, linked to our customer when it names one."""

    class ObjectType(models.TextChoices):
        CONTACT = "contacts", "Contact"
        COMPANY = "companies", "Company"
        DEAL = "deals", "Deal"

    object_type = models.CharField(max_length=16, choices=ObjectType.choices)
    hubspot_id = models.CharField(max_length=32)
    # Only the properties asked for; contacts' names, e-mails and phones are personal data.
    properties = models.JSONField(default=dict)
    customer = models.ForeignKey(
        "loans.Customer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="crm_records",
    )
    hubspot_updated_at = models.DateTimeField(
        help_text="HubSpot's lastmodifieddate / hs_lastmodifieddate."
    )
    archived = models.BooleanField(default=False)
    batch = models.ForeignKey("loans.Batch", on_delete=models.PROTECT, related_name="+")
    synced_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "CRM record"
        ordering = ["object_type", "hubspot_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["object_type", "hubspot_id"], name="crmrecord_natural_key"
            ),
        ]
        indexes = [
            # Incremental sync: the newest change already held, per object type.
            models.Index(
                fields=["object_type", "-hubspot_updated_at"], name="crmrecord_watermark_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_object_type_display()} {self.hubspot_id}"


class AdInsight(models.Model):
    """One day of one Meta campaign: spend and delivery (Marketing API insights, level=campaign)."""

    account_id = models.CharField(max_length=32)
    date = models.DateField()
    campaign_id = models.CharField(max_length=32)
    campaign_name = models.CharField(max_length=255, blank=True)
    spend = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="USD")
    impressions = models.PositiveBigIntegerField(default=0)
    clicks = models.PositiveBigIntegerField(default=0)
    actions = models.JSONField(
        default=dict, help_text="action_type -> count, as Meta reports them."
    )
    batch = models.ForeignKey("loans.Batch", on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-date", "campaign_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account_id", "date", "campaign_id"], name="adinsight_natural_key"
            ),
            models.CheckConstraint(condition=Q(spend__gte=0), name="adinsight_spend_non_negative"),
        ]
        # The natural key leads with account and date: it serves "a month's spend" (roll-up to
        # marketing spend) without a second index.

    def __str__(self) -> str:
        return f"{self.date} {self.campaign_name or self.campaign_id}"
