"""Why: a backup nobody restored is a hope. This restores the latest one into a scratch
database and proves it (checksums, row counts, the audit chain, a KPI snapshot recomputed);
scheduled weekly as ``restore_check_weekly`` (a failure alerts) and run in .ci/run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.backups import BackupError, restore_check


class Command(BaseCommand):
    help = (
        "Restore the latest backup (or --backup ID) into a scratch database on the same server, "
        "verify checksums, row counts, the audit chain and one KPI snapshot, then drop it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backup", help="the backup id (default: the latest complete one)")
        parser.add_argument(
            "--keep", action="store_true", help="leave the scratch database for inspection"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = restore_check(
                backup_id=options["backup"], keep=options["keep"], log=self.stdout.write
            )
        except BackupError as exc:
            raise CommandError(f"restore check failed: {exc}") from exc
        for line in report.checks:
            self.stdout.write(f"  ✓ {line}")
        self.stdout.write(
            self.style.SUCCESS(
                f"restore check of {report.backup_id} passed: download {report.download_seconds:.1f} s, "
                f"restore {report.restore_seconds:.1f} s"
                + (f"; scratch database {report.scratch} kept" if options["keep"] else "")
            )
        )
