"""Check the audit journal's hash chain, and optionally the exported day hashes against it.

Exit 0 when every entry's hash covers its content and the hash before it; exit 1 naming the first
entry that does not (an edit or deletion made with the append-only triggers disabled). With
``--exports DIR`` also compare each day's last hash written by the daily export: a rewrite of the
whole chain (by a database superuser who recomputed every hash) no longer matches what left the
database.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from compliance.journal import chain_verify
from compliance.retention import exported_hashes_check


class Command(BaseCommand):
    help = "Verify the audit journal's SHA-256 chain (exit 1 naming the first bad entry)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--exports",
            type=Path,
            help="Also check the day hashes the daily export wrote into this folder.",
        )

    def handle(self, *args, exports: Path | None = None, **options):
        checked, broken = chain_verify(
            progress=lambda n: self.stderr.write(f"{n:,} entries checked ...")
        )
        if broken is not None:
            raise CommandError(f"chain broken at {broken} ({checked:,} entries before it hold)")
        if exports is not None:
            problems = exported_hashes_check(folder=exports)
            if problems:
                raise CommandError("; ".join(problems))
        self.stdout.write(self.style.SUCCESS(f"chain holds: {checked:,} entries"))
