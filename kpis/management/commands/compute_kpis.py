"""Compute loan states and KPI snapshots: one date, or every month-end since the first
disbursement plus the latest day (``--backfill``). Operators run it by hand after corrections;
the scheduled ``kpi_daily`` job runs it for yesterday and any missing month-end."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from abaco.cli import iso_date
from kpis.models import KpiValue, SnapshotRun
from kpis.services import snapshots_compute


class Command(BaseCommand):
    help = "Compute and store loan states and KPI values for a date (--as-of) or all month-ends (--backfill)."

    def add_arguments(self, parser):
        parser.add_argument("--as-of", type=iso_date, help="End of day R to compute (YYYY-MM-DD).")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the portfolio-level values as one JSON object.",
        )
        parser.add_argument(
            "--backfill",
            action="store_true",
            help="Every month-end since the first disbursement, and the latest day.",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            help="With --backfill: dates computed at once, each on two database connections of "
            "its own (default KPI_JOBS, 2).",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="With --backfill: only when no snapshot exists yet (make run).",
        )

    def handle(
        self, *args, as_of, json: bool, backfill: bool, if_empty: bool, jobs: int | None, **options
    ):
        if bool(as_of) == bool(backfill):
            raise CommandError("give either --as-of YYYY-MM-DD or --backfill")
        if as_of:
            (run,) = snapshots_compute(dates=as_of, job="compute_kpis")
            if json:
                self.stdout.write(_portfolio_json(run))
            else:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"{run}: {run.loans:,} loans with a balance, {run.duration_ms:,} ms"
                    )
                )
                for reason in run.provisional_reasons:
                    self.stdout.write(self.style.WARNING(f"provisional: {reason}"))
            return
        if if_empty and SnapshotRun.objects.exists():
            self.stdout.write("Snapshots exist: nothing to backfill.")
            return
        bar = None

        def planned(dates):
            nonlocal bar
            bar = tqdm(total=len(dates), unit="date", disable=not sys.stderr.isatty())

        def done(run):
            self.stdout.write(f"{run}: {run.loans:,} loans, {run.duration_ms:,} ms")
            bar.update()

        try:
            runs = snapshots_compute(
                dates="backfill",
                job="compute_kpis --backfill",
                jobs=jobs,
                planned=planned,
                done=done,
            )
        finally:
            if bar is not None:
                bar.close()
        if not runs:
            raise CommandError("no loans yet: nothing to backfill")
        self.stdout.write(self.style.SUCCESS(f"{len(runs)} snapshot(s) computed."))


def _portfolio_json(run) -> str:
    """Ratios as fractions, money and counts as decimal strings (exact, no floats)."""
    values = KpiValue.objects.filter(run=run).portfolio().order_by("code")
    payload = {
        v.code: (None if v.value is None else format(v.value.normalize(), "f")) for v in values
    }
    payload["_as_of"] = run.as_of.isoformat()
    payload["_basis"] = run.basis
    payload["_provisional"] = run.provisional
    payload["_definition_version"] = run.definition_version
    return json.dumps(payload, sort_keys=True)
