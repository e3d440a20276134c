"""Restatement after a changed tape (issue 17): on a book whose month-ends are stored, 1% of the
loans' payments change (their interest, so that repaid dates stay as they are) as a correcting
load would write them (new values, the rows pointing at a new loaded batch whose earliest changed
row is the first such payment), then every snapshot that load touched is recomputed as
``kpi_restate`` does it: the stale dates (kpis.selectors.restatement), ``KPI_JOBS`` at once,
each kept as restated beside its as-reported run.

The load itself is the tape benchmark's "re-import with 1% of loans changed"; this measures what
follows it. Printed beside the book-pass yardstick of kpi_snapshots.py (same run), as a ratio.
Target: 36 month-ends of the 1M-loan book in under 3 minutes with KPI_JOBS=2."""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from benchmarks.kpi_snapshots import _against, _book_pass
from kpis.models import SnapshotRun
from kpis.selectors.restatement import stale_dates
from kpis.services import snapshot_series
from loans.models import Batch, Loan


def run() -> None:
    stored = SnapshotRun.objects.count()
    if not stored or not Loan.objects.exists():
        print("restatement: no stored snapshots; run kpi_snapshots first")
        return
    floor = _book_pass()
    started = time.perf_counter()
    changed, changes_from = _payments_change()
    print(
        f"restatement: 1% of loans' payments changed ({changed:,} rows, from {changes_from}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    days = stale_dates()
    print(
        f"stale snapshots found: {len(days)} ({days[0]} … {days[-1]}) "
        f"in {time.perf_counter() - started:.2f} s"
    )
    started = time.perf_counter()
    runs = snapshot_series(days, job="bench-restate")
    seconds = time.perf_counter() - started
    restated = sum(1 for run in runs if run.basis == SnapshotRun.Basis.RESTATED)
    print(
        f"restating {len(days)} dates after a 1%-changed tape ({restated} restated, "
        f"KPI_JOBS={settings.KPI_JOBS}): {seconds:.0f} s (target < 180 s){_against(seconds, floor)}"
    )
    print(f"stale snapshots left: {len(stale_dates())}")


def _payments_change() -> tuple[int, object]:
    """Every PAYMENT of 1% of the loans (id divisible by 100) gets 1.00 more interest, written
    by a new loaded batch, as a correcting tape's merge leaves them."""
    with transaction.atomic():
        batch = Batch.objects.create(
            source="bench",
            kind=Batch.Kind.TRANSACTIONS,
            original_name="transactions-1pct-changed.csv",
            sha256=hashlib.sha256(f"bench-restate-{timezone.now()}".encode()).hexdigest(),
            status=Batch.Status.LOADED,
            job="bench",
            finished_at=timezone.now(),
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE loans_transaction SET interest = interest + 1.00, batch_id = %s "
                "WHERE transaction_type = 'PAYMENT' AND loan_id %% 100 = 0",
                [batch.pk],
            )
            changed = cursor.rowcount
            cursor.execute(
                "SELECT min(date) FROM loans_transaction WHERE batch_id = %s", [batch.pk]
            )
            changes_from = cursor.fetchone()[0]
        batch.changes_from = changes_from
        batch.save(update_fields=["changes_from"])
    return changed, changes_from
