"""Write the insights of one snapshot run now: the whole portfolio and each entity.

kpi_daily writes them after its snapshots; this is for a backfilled date, a demo book, or after
turning the model on, without waiting for tomorrow's run. Each insight is a new row (the history
keeps the earlier ones); the run's token and cost limits apply to the command as to one run.
"""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from kpis.insights.services import insights_for_run
from kpis.models import SnapshotRun


class Command(BaseCommand):
    help = "Write (model or summary), check and store the insights of a snapshot run."

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of", type=date.fromisoformat, help="The run's date (default: the latest)."
        )
        parser.add_argument(
            "--basis", choices=SnapshotRun.Basis.values, default=SnapshotRun.Basis.AS_REPORTED
        )

    def handle(self, *args, as_of: date | None, basis: str, **options):
        runs = SnapshotRun.objects.filter(basis=basis)
        run = runs.filter(as_of=as_of).first() if as_of else runs.order_by("-as_of").first()
        if run is None:
            raise CommandError(f"no {basis} snapshot run{f' at {as_of}' if as_of else ''}")
        for insight in insights_for_run(run=run, job="write_insights"):
            self.stdout.write(
                f"{run.as_of} {insight.member or 'portfolio'}: {insight.get_source_display()}, "
                f"{insight.get_verification_display().lower()}"
                + (f" ({insight.fallback_reason})" if insight.fallback_reason else "")
                + f"; {insight.input_tokens:,} in / {insight.output_tokens:,} out tokens, "
                f"USD {insight.cost}, {insight.latency_ms} ms"
            )
            self.stdout.write(f"  {insight.headline}")
