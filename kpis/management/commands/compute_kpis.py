"""Compute loan states and KPI snapshots: one date, or every month-end since the first
disbursement plus the latest day (``--backfill``). Operators run it by hand after corrections;
the scheduled ``kpi_daily`` job runs it for yesterday and any missing month-end."""

import json
import sys
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone
from tqdm import tqdm

from abaco.cli import iso_date
from kpis import definitions as d
from kpis.models import KpiValue, RollRate, SnapshotRun, VintagePoint
from kpis.services import snapshots_compute

# Roll-rate cells in the buckets' order, then "repaid".
BUCKET_ORDER = {code: n for n, code in enumerate([*(code for code, *_ in d.BUCKETS), "repaid"])}
TEN_PLACES = Decimal("1e-10")  # shares computed here are stored ones' precision


class Command(BaseCommand):
    help = "Compute and store loan states and KPI values for a date (--as-of) or all month-ends (--backfill)."

    def add_arguments(self, parser):
        parser.add_argument("--as-of", type=iso_date, help="End of day R to compute (YYYY-MM-DD).")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the portfolio-level values as one JSON object, with the roll-rate matrix "
            "from the previous month-end and the vintage points up to the date.",
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
            "--full",
            action="store_true",
            help="Compute every loan from the book, not carried forward from a run of the days "
            "before (KPI_CARRY_DAYS).",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="With --backfill: only when no snapshot exists yet (make run).",
        )

    def handle(
        self,
        *args,
        as_of,
        json: bool,
        backfill: bool,
        if_empty: bool,
        jobs: int | None,
        full: bool,
        **options,
    ):
        if bool(as_of) == bool(backfill):
            raise CommandError("give either --as-of YYYY-MM-DD or --backfill")
        if as_of:
            started = timezone.now()
            (run,) = snapshots_compute(dates=as_of, job="compute_kpis", carry=not full)
            if json:
                self.stdout.write(_portfolio_json(run))
            else:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"{run}: {run.loans:,} loans with a balance, {run.duration_ms:,} ms "
                        f"({run.computation})"
                        + (
                            # Recomputed with the same numbers: the stored run stands.
                            f"; recomputed, numbers unchanged: the run of "
                            f"{timezone.localtime(run.computed_at):%Y-%m-%d %H:%M %Z} stands"
                            if run.computed_at < started
                            else ""
                        )
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
                carry=not full,
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
    """Ratios as fractions, money and counts as decimal strings (exact, no floats); with the
    roll-rate matrix and the vintage points."""
    values = KpiValue.objects.filter(run=run).portfolio().order_by("code")
    payload: dict[str, object] = {v.code: _decimal(v.value) for v in values}
    payload["roll_rates"] = _roll_rates(run)
    payload["vintages"] = _vintages(run)
    payload["_as_of"] = run.as_of.isoformat()
    payload["_basis"] = run.basis
    payload["_provisional"] = run.provisional
    payload["_definition_version"] = run.definition_version
    return json.dumps(payload, sort_keys=True)


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _roll_rates(run) -> list[dict]:
    """The run's roll-rate matrix (the whole portfolio, from the previous month-end), bucket codes
    as stored, in the buckets' order."""
    cells = sorted(
        RollRate.objects.filter(run=run),
        key=lambda c: (BUCKET_ORDER.get(c.from_bucket, 99), BUCKET_ORDER.get(c.to_bucket, 99)),
    )
    return [
        {
            "from": c.from_bucket,
            "to": c.to_bucket,
            "balance": _decimal(c.balance),
            "share": _decimal(c.share),
        }
        for c in cells
    ]


def _share(part: Decimal, whole: Decimal) -> str | None:
    return _decimal((part / whole).quantize(TEN_PLACES)) if whole else None


def _vintages(run) -> list[dict]:
    """Every vintage point of the month-ends up to the run's date (each date's restatement when it
    has one, as the engine reads them; the run itself for its own date), by cohort and months on
    book. Shares of the cohort's disbursed principal, to ten places."""
    earlier = SnapshotRun.objects.filter(as_of__lt=run.as_of).standing()
    points = VintagePoint.objects.filter(Q(run__in=earlier) | Q(run=run)).order_by(
        "cohort", "months_on_book"
    )
    return [
        {
            "cohort": f"{p.cohort:%Y-%m}",
            "months_on_book": p.months_on_book,
            "written_off_share": _share(p.written_off, p.disbursed),
            "ever_30_share": _share(p.ever_30, p.disbursed),
        }
        for p in points
    ]
