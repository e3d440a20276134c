"""Why: the design's RPO is 4 hours and its backups are pg_dump with a restore check; this is
the backup half, run daily by the ``backup_daily`` job and by hand before risky work."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.backups import BackupError, backup_create, backups_prune


class Command(BaseCommand):
    help = (
        "Dump the database (pg_dump -Fc, the server's own version) and the raw files it "
        "references, with a manifest of checksums, into the backups storage; then apply "
        "retention (BACKUP_KEEP_DAILY/WEEKLY/MONTHLY)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-prune", action="store_true", help="keep every older backup")
        parser.add_argument(
            "--prune-only",
            action="store_true",
            help="make no backup; only delete what retention no longer keeps",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="with --prune-only: say what would go"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if not options["prune_only"]:
                manifest = backup_create(log=self.stdout.write)
                self.stdout.write(
                    self.style.SUCCESS(
                        f"backup {manifest.id}: dump {manifest.dump['size']:,} bytes "
                        f"(pg_dump {manifest.dump_seconds:.1f} s), {len(manifest.files)} raw "
                        f"file(s), {sum(manifest.tables.values()):,} rows in "
                        f"{len(manifest.tables)} tables, {manifest.seconds:.1f} s in all"
                    )
                )
            if not options["no_prune"]:
                gone = backups_prune(dry_run=options["dry_run"], log=self.stdout.write)
                self.stdout.write(
                    f"retention: {len(gone)} backup(s) {'to delete' if options['dry_run'] else 'deleted'}"
                )
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
