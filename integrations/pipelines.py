"""Pipeline runs: every scheduled job is a ``PipelineRun`` with steps, and a failure alerts.

A job is declared once, in ``integrations.schedules.JOBS`` (what runs, when, and which setting
turns it on); ``PIPELINES`` are the jobs of that list that are pipelines. ``pipeline_run`` is the
one way a job runs: from its schedule, from ``manage.py run_pipeline`` or from the status page.

Runs are at-least-once safe: every step writes by natural key inside its own transaction, raw
files are recognized by SHA-256, so a run killed midway and run again leaves no duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import httpx
from croniter import croniter
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from integrations.alerts import alert_send
from integrations.http import ProviderError
from integrations.models import PipelineRun, PipelineStep
from integrations.schedules import JOBS, Job
from loans.imports.files import TapeFile
from loans.lineage import batch_for
from loans.models import Batch
from loans.selectors import DataAge, data_age, source_cutoffs

logger = logging.getLogger(__name__)

MAX_LOG = 20_000  # characters of a step's log kept on the row


class PipelineBusy(Exception):
    """The job already has a queued or running run."""


class PipelineUnknown(Exception):
    pass


PIPELINES: dict[str, Job] = {job.name: job for job in JOBS if job.is_pipeline}
INGEST = [job.name for job in PIPELINES.values() if job.ingest]  # run in parallel on demand


@dataclass
class StepLog:
    """What a step counts and says while it runs; saved on its ``PipelineStep`` at the end."""

    name: str
    rows_in: int = 0
    rows_out: int = 0
    columns: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        logger.info("pipeline step", extra={"step": self.name, "detail": message})
        self.lines.append(message)


@dataclass
class RunContext:
    """Handed to a pipeline's function: the run, its date, and steps to record work in."""

    run: PipelineRun
    transport: httpx.BaseTransport | None = None  # tests and end-to-end runs: fake providers
    sleep: Callable[[float], None] = time.sleep

    @property
    def for_date(self) -> date:
        return self.run.for_date

    @property
    def by(self) -> User | None:
        return self.run.created_by

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepLog]:
        """Record one step; an exception marks it (and then the run) failed and propagates."""
        row = PipelineStep.objects.create(run=self.run, name=name, started_at=timezone.now())
        started = time.perf_counter()
        step = StepLog(name)
        try:
            yield step
        except BaseException as exc:
            row.status, row.error = PipelineRun.Status.FAILED, error_text(exc)
            raise
        else:
            row.status = PipelineRun.Status.SUCCEEDED
        finally:
            row.finished_at = timezone.now()
            row.duration_ms = round((time.perf_counter() - started) * 1000)
            row.rows_in, row.rows_out = step.rows_in, step.rows_out
            row.columns = step.columns
            row.log = "\n".join(step.lines)[-MAX_LOG:]
            row.save()
            self.run.rows_in += step.rows_in
            self.run.rows_out += step.rows_out

    def progress(self, fraction: float, label: str) -> None:
        """Say how far the run is, on a connection of its own: the status page sees it while
        the run's own transactions are still open."""
        PipelineRun.objects.using("progress").filter(pk=self.run.pk).update(
            progress=round(fraction, 3), progress_label=label[:200]
        )
        self.run.progress, self.run.progress_label = round(fraction, 3), label[:200]

    def alert(self, *, subject: str, body: str) -> list[str]:
        """An alert on the run's behalf (pipelines that may not import this module call it)."""
        return alert_send(subject=subject, body=body)

    def quality_check(self, step: StepLog) -> None:
        """Alert when this step's rows fell by more than the set share, or its columns changed,
        against the same step of the job's previous successful run."""
        previous = (
            PipelineStep.objects.filter(
                run__job=self.run.job,
                run__status=PipelineRun.Status.SUCCEEDED,
                name=step.name,
                status=PipelineRun.Status.SUCCEEDED,
                rows_in__gt=0,  # a no-op run (unchanged export) is no baseline
            )
            .exclude(run=self.run)
            .order_by("-run__created_at")
            .first()
        )
        if previous is None:
            return
        problems = []
        drop = settings.PIPELINE_ROW_DROP_ALERT
        if previous.rows_in and step.rows_in < previous.rows_in * (1 - drop):
            problems.append(
                f"rows fell from {previous.rows_in:,} to {step.rows_in:,} "
                f"(more than {drop:.0%}) against run {previous.run_id}"
            )
        if previous.columns and step.columns and previous.columns != step.columns:
            gone = sorted(set(previous.columns) - set(step.columns))
            new = sorted(set(step.columns) - set(previous.columns))
            problems.append(
                "columns changed: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(gone)}" if gone else "",
                        f"new {', '.join(new)}" if new else "",
                        "same columns in another order" if not gone and not new else "",
                    )
                    if part
                )
            )
        for problem in problems:
            step.log(f"data quality: {problem}")
        if problems:
            alert_send(
                subject=f"data quality: {self.run.job} · {step.name}",
                body="\n".join(problems) + f"\n\nRun {self.run.pk} for {self.run.for_date}.",
            )


def error_text(exc: BaseException) -> str:
    """An exception as a person reads it; provider errors are already free of secrets."""
    if isinstance(exc, ProviderError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


def raw_land(
    *, content: bytes, name: str, source: str, kind: str, job: str, by: User | None = None
) -> Batch:
    """Keep a provider payload unchanged in the raw layer (``loans.lineage.batch_for``, as for
    uploads): the same bytes twice are a duplicate of the first batch.

    The batch stays ``running`` until the caller finishes it with ``loans.lineage.batch_finish``.
    """
    payload = TapeFile(
        name=name,
        kind=kind,
        opener=lambda: io.BytesIO(content),
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        encoding="UTF8",
        has_bom=False,
        binary=False,
    )
    batch = batch_for(payload, kind=kind, source=source, by=by, job=job)
    if batch.status == Batch.Status.PENDING:
        batch.status, batch.started_at = Batch.Status.RUNNING, timezone.now()
        batch.save(update_fields=["status", "started_at"])
    return batch


def _abandoned_close(job: str) -> None:
    """A run still 'running' past the cluster's timeout was killed with its worker: close it so
    the job can run again (its steps were transactional, so nothing half-written remains)."""
    cutoff = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"])
    stale = PipelineRun.objects.filter(
        job=job,
        status__in=[PipelineRun.Status.QUEUED, PipelineRun.Status.RUNNING],
        created_at__lt=cutoff,
    )
    for run in stale:
        run.status = PipelineRun.Status.FAILED
        run.error = "abandoned: the worker stopped before the run finished"
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])


def pipeline_start(
    *,
    name: str,
    for_date: date | None = None,
    trigger: str,
    by: User | None = None,
    params: dict[str, object] | None = None,
) -> PipelineRun:
    """Open a queued run of ``name`` (raises ``PipelineBusy`` when one is queued or running)."""
    if name not in PIPELINES:
        raise PipelineUnknown(f"no pipeline named {name!r}; known: {', '.join(PIPELINES)}")
    _abandoned_close(name)
    for_date = for_date or timezone.localdate() - timedelta(days=1)
    try:
        with transaction.atomic():
            return PipelineRun.objects.create(
                job=name, for_date=for_date, trigger=trigger, created_by=by, params=params or {}
            )
    except IntegrityError as exc:
        raise PipelineBusy(f"{name} is already queued or running") from exc


def pipeline_execute(
    run: PipelineRun,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PipelineRun:
    """Run a queued run to its end: succeeded, skipped (integration off) or failed with an alert."""
    pipeline = PIPELINES[run.job]
    run.status, run.started_at = PipelineRun.Status.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    started = time.perf_counter()
    try:
        if not pipeline.enabled():
            run.status = PipelineRun.Status.SKIPPED
            run.error = f"{pipeline.setting} is off or its credentials are not set"
        else:
            import_string(pipeline.run)(RunContext(run, transport=transport, sleep=sleep))
            run.status = PipelineRun.Status.SUCCEEDED
    except Exception as exc:
        logger.exception("pipeline failed", extra={"job": run.job, "run": run.pk})
        run.status, run.error = PipelineRun.Status.FAILED, error_text(exc)
    finally:
        run.finished_at = timezone.now()
        run.duration_ms = round((time.perf_counter() - started) * 1000)
        run.save()
    if run.status == PipelineRun.Status.FAILED:
        run.alerted = bool(
            alert_send(
                subject=f"{run.job} failed for {run.for_date}",
                body=f"Run {run.pk} ({run.get_trigger_display()}) failed after "
                f"{run.duration_ms / 1000:.1f} s:\n\n{run.error}\n\n{run.log}",
            )
        )
        run.save(update_fields=["alerted"])
    return run


def pipeline_run(
    *,
    name: str,
    for_date: date | None = None,
    trigger: str,
    by: User | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PipelineRun:
    """Start and execute one run now, in this process."""
    run = pipeline_start(name=name, for_date=for_date, trigger=trigger, by=by)
    return pipeline_execute(run, transport=transport, sleep=sleep)


def pipelines_overdue(*, now: datetime | None = None) -> list[tuple[str, datetime]]:
    """Scheduled jobs whose last due time is more than ``PIPELINE_OVERDUE_HOURS`` ago with no
    run that finished since; each is alerted once per due time."""
    now = now or timezone.now()
    grace = timedelta(hours=settings.PIPELINE_OVERDUE_HOURS)
    overdue = []
    for job in PIPELINES.values():
        if not job.enabled() or not job.cron:
            continue
        due = croniter(job.cron, timezone.localtime(now - grace)).get_prev(datetime)
        finished = PipelineRun.objects.filter(
            job=job.name,
            created_at__gte=due,
            status__in=[
                PipelineRun.Status.SUCCEEDED,
                PipelineRun.Status.SKIPPED,
                PipelineRun.Status.FAILED,
            ],
        ).exists()
        if finished:
            continue
        overdue.append((job.name, due))
        # cache.add is set-if-absent: one alert per job and due time across workers.
        if cache.add(f"pipeline-overdue:{job.name}:{due.isoformat()}", 1, timeout=7 * 86400):
            alert_send(
                subject=f"{job.name} is overdue",
                body=f"{job.name} was due at {due:%Y-%m-%d %H:%M %Z} and no run has finished "
                f"{settings.PIPELINE_OVERDUE_HOURS:g} h later. Check the task cluster (/readyz) "
                "and the pipeline status page.",
            )
    return overdue


def book_stale_check(*, today: date | None = None) -> DataAge | None:
    """Alert, once per data-through date, when the book has had no new data for
    ``DATA_STALE_DAYS`` (like a failed pipeline: the numbers managers read stop moving)."""
    age = data_age(today=today)
    if age.through is None or not age.stale:
        return None
    if cache.add(f"book-stale:{age.through.isoformat()}", 1, timeout=30 * 86400):
        alert_send(
            subject=f"no new loan data since {age.through:%Y-%m-%d}",
            body=f"The book's data runs to {age.through:%Y-%m-%d}, {age.days} days ago "
            f"(DATA_STALE_DAYS is {settings.DATA_STALE_DAYS}). Latest cut-off per source: "
            + ", ".join(f"{s} {d:%Y-%m-%d}" for s, d in sorted(source_cutoffs().items()))
            + ". Check cascade_ingest and the uploads; snapshots after that date are not "
            "computed by kpi_daily.",
        )
    return age


def pipelines_latest() -> list[tuple[Job, list[PipelineRun], datetime | None]]:
    """For the status page: each pipeline, its latest runs and its next scheduled time."""
    now = timezone.localtime()
    rows = []
    for pipeline in PIPELINES.values():
        runs = list(
            PipelineRun.objects.filter(job=pipeline.name)
            .select_related("created_by")
            .prefetch_related("steps")
            .order_by("-created_at")[:10]
        )
        next_at = croniter(pipeline.cron, now).get_next(datetime) if pipeline.cron else None
        rows.append((pipeline, runs, next_at))
    return rows
