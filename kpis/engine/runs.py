"""Run bookkeeping: a snapshot's SnapshotRun row, the batches it read and their fingerprint,
why it is provisional, and deleting a run with its rows."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from psycopg import sql

from kpis import definitions as d
from kpis.models import SnapshotRun
from loans.models import Batch, BatchChange
from loans.selectors import batches_latest_per_source

if TYPE_CHECKING:
    from django.contrib.auth.models import User

BOOK_KINDS = [Batch.Kind.CUSTOMERS, Batch.Kind.LOANS, Batch.Kind.SCHEDULES, Batch.Kind.TRANSACTIONS]

# A run's rows, deleted set-based: the ORM's cascade would load a million loan states to delete them.
RUN_TABLES = (
    "kpis_loanstate",
    "kpis_loanresidual",
    "kpis_kpivalue",
    "kpis_rollrate",
    "kpis_vintagepoint",
    "kpis_topborrower",
)


def snapshot_quality(*, as_of: date) -> list[str]:
    """Why a snapshot would be provisional: a source whose latest import failed, or tape-diff
    flags still waiting for a steward."""
    reasons = [
        f"the latest {batch.kind} import from {batch.source} (batch {batch.pk}) failed with errors"
        for batch in batches_latest_per_source(kinds=BOOK_KINDS)
        if batch.status == Batch.Status.FAILED
    ]
    pending = BatchChange.objects.filter(review=BatchChange.Review.PENDING).count()
    if pending:
        reasons.append(f"{pending} tape-diff change(s) wait for a steward's review")
    return reasons


def fingerprint(batch_ids: list[int]) -> str:
    """The hash of the batches a run read (``SnapshotRun.data_fingerprint``)."""
    return hashlib.sha256(",".join(map(str, sorted(batch_ids))).encode()).hexdigest()


def run_delete(cursor: CursorWrapper, run: SnapshotRun) -> None:
    for table in RUN_TABLES:
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE run_id = %s").format(sql.Identifier(table)), [run.pk]
        )
    run.batches.clear()
    run.delete()


def run_open(
    cursor: CursorWrapper, *, as_of: date, by: User | None, job: str
) -> tuple[SnapshotRun, SnapshotRun | None, list[int], list[str]]:
    """A new run of ``as_of`` (restated when the date has an as-reported one), after withdrawing
    an earlier restatement; with the as-reported run, the batches read and why it is provisional.
    The date's runs stay locked until the transaction ends."""
    existing = {run.basis: run for run in SnapshotRun.objects.select_for_update().of_date(as_of)}
    reported = existing.get(SnapshotRun.Basis.AS_REPORTED)
    if SnapshotRun.Basis.RESTATED in existing:
        run_delete(cursor, existing[SnapshotRun.Basis.RESTATED])
    batch_ids = list(
        Batch.objects.loaded().filter(kind__in=BOOK_KINDS).values_list("pk", flat=True)
    )
    reasons = snapshot_quality(as_of=as_of)
    run = SnapshotRun.objects.create(
        as_of=as_of,
        basis=SnapshotRun.Basis.RESTATED if reported else SnapshotRun.Basis.AS_REPORTED,
        definition_version=d.VERSION,
        computed_at=timezone.now(),
        computed_by=by,
        job=job,
        data_fingerprint=fingerprint(batch_ids),
        provisional=bool(reasons),
        provisional_reasons=reasons,
        engine_settings=engine_settings(),
    )
    return run, reported, batch_ids, reasons


def engine_settings() -> dict[str, Any]:
    """The settings a run's loan states depend on, beside the definitions' version
    (``SnapshotRun.engine_settings``: kpis.engine.incremental carries states only under the same)."""
    return {
        "write_off_dpd": settings.WRITE_OFF_DPD,
        "residual_tolerance": str(settings.RESIDUAL_TOLERANCE),
    }
