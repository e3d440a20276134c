"""Why: a restored database is only proven when the numbers it reports come out of it again.
This recomputes one stored KPI snapshot from the book and fails unless every value is the same;
``restore_check`` runs it on the restored copy (it changes that copy: never needed elsewhere)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from abaco.cli import iso_date
from kpis import definitions as d
from kpis.models import KpiValue, SnapshotRun
from kpis.services import snapshots_compute


def _values(run: SnapshotRun) -> dict[tuple[str, str, str], Decimal | None]:
    return {
        (code, dimension, member): value
        for code, dimension, member, value in KpiValue.objects.filter(run=run).values_list(
            "code", "dimension", "member", "value"
        )
    }


class Command(BaseCommand):
    help = (
        "Recompute the latest stored KPI snapshot of the current definition version (or --as-of) "
        "and fail unless every value comes out the same."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", type=iso_date, help="the snapshot date to recompute")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = SnapshotRun.objects.standing().filter(definition_version=d.VERSION)
        if options["as_of"]:
            runs = runs.filter(as_of=options["as_of"])
        stored = runs.order_by("-as_of").first()
        if stored is None:
            self.stdout.write(
                "no stored KPI snapshot of this definition version: nothing to recompute"
            )
            return
        before = _values(stored)
        [run] = snapshots_compute(dates=stored.as_of, job="snapshot_check", jobs=1)
        after = _values(run)
        differ = sorted(
            f"{code} {dimension}:{member or '-'} {before.get(key)} → {after.get(key)}"
            for key in before.keys() | after.keys()
            for code, dimension, member in [key]
            if before.get(key) != after.get(key)
        )
        if differ:
            raise CommandError(
                f"snapshot {stored.as_of} recomputed to different values: " + "; ".join(differ[:10])
            )
        self.stdout.write(
            f"KPI snapshot {stored.as_of} ({stored.get_basis_display()}) recomputed: "
            f"{len(after)} values, {run.loans:,} loans, all the same"
        )
