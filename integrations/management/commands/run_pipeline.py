"""Run a pipeline now, the way its schedule would, and say how it went.

Operators use it to re-run a failed day (``--date``) or to ingest all sources at once
(``run_pipeline ingest``: Cascade, HubSpot and Meta in parallel threads, one database connection
each). Every run is recorded like a scheduled one and alerts the same way when it fails.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from abaco.cli import iso_date
from integrations.models import PipelineRun
from integrations.pipelines import INGEST, PIPELINES, PipelineBusy, pipeline_run


class Command(BaseCommand):
    help = "Run one pipeline now (or 'ingest': the three ingestion pipelines in parallel)."

    def add_arguments(self, parser):
        parser.add_argument("name", choices=[*PIPELINES, "ingest"])
        parser.add_argument(
            "--date", type=iso_date, help="Business date of the run (default: yesterday)."
        )

    def handle(self, *args, name: str, date=None, **options):
        names = INGEST if name == "ingest" else [name]
        if len(names) == 1:
            runs = [self._run(names[0], date)]
        else:
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                runs = list(pool.map(lambda n: self._run_in_thread(n, date), names))
        failed = []
        for run in runs:
            if isinstance(run, str):
                failed.append(run)
                self.stderr.write(self.style.ERROR(run))
                continue
            line = (
                f"{run.job} {run.for_date}: {run.status} in {(run.duration_ms or 0) / 1000:.1f} s, "
                f"{run.rows_in:,} rows in, {run.rows_out:,} out"
            )
            if run.status == PipelineRun.Status.FAILED:
                failed.append(run.job)
                self.stderr.write(self.style.ERROR(f"{line}\n  {run.error}"))
            elif run.status == PipelineRun.Status.SKIPPED:
                self.stdout.write(self.style.WARNING(f"{line} ({run.error})"))
            else:
                self.stdout.write(self.style.SUCCESS(line))
        if failed:
            raise CommandError(f"failed: {', '.join(failed)}")

    def _run(self, name: str, date) -> PipelineRun | str:
        try:
            return pipeline_run(name=name, for_date=date, trigger=PipelineRun.Trigger.COMMAND)
        except PipelineBusy as busy:
            return str(busy)

    def _run_in_thread(self, name: str, date) -> PipelineRun | str:
        try:
            return self._run(name, date)
        finally:
            connections.close_all()  # this thread's own connection
