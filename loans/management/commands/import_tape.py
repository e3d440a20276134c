"""Load a Cascade loan tape from a folder or ZIP, the way operators and the Cascade job do.

All or nothing: any error leaves the database as it was and exits non-zero with the reasons
(file, row, column). ``--quarantine`` loads the valid rows and holds back exactly the bad ones.
"""

import sys
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from loans.lineage import WARNING, TapeRejected
from loans.services import tape_import


class Command(BaseCommand):
    help = "Import a loan tape (a folder of customers/loans/schedules/transactions CSVs, or a ZIP)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--source", default="cascade", help="Who sent the tape (default: cascade)."
        )
        parser.add_argument(
            "--quarantine", action="store_true", help="Load valid rows, hold back bad ones."
        )
        parser.add_argument(
            "--partial",
            action="store_true",
            help="The tape is not the source's whole book: flag none of its rows missing from it.",
        )
        parser.add_argument(
            "--data-through",
            type=date.fromisoformat,
            metavar="YYYY-MM-DD",
            help="The date the tape's data runs to, when the export says so (default: the "
            "latest transaction or disbursement date in it).",
        )

    def handle(self, *args, path: Path, source: str, quarantine: bool, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        bar = tqdm(
            total=100,
            unit="%",
            disable=not sys.stderr.isatty(),
            bar_format="{l_bar}{bar}| {elapsed}",
        )

        def progress(fraction: float, label: str) -> None:
            bar.set_description(label[:40])
            bar.update(round(fraction * 100) - bar.n)

        try:
            result = tape_import(
                path=path,
                source=source,
                job="import_tape",
                quarantine=quarantine,
                progress=progress,
                full_export=not options["partial"],
                data_through=options["data_through"],
            )
        except TapeRejected as rejected:
            bar.close()
            for problem in rejected.problems:
                style = self.style.WARNING if problem.severity == WARNING else self.style.ERROR
                self.stderr.write(style(str(problem)))
            raise CommandError(
                f"tape rejected, nothing was loaded: {len(rejected.problems)} problem(s) listed above"
            ) from None
        bar.close()
        self.stdout.write(result.summary())
        for problem in result.problems:
            style = self.style.WARNING if problem.severity == WARNING else self.style.ERROR
            self.stdout.write(style(str(problem)))
        if result.errors:
            raise CommandError(
                f"{sum(f.rejected for f in result.files)} row(s) quarantined; the rest loaded"
            )
        self.stdout.write(self.style.SUCCESS("Tape loaded."))
