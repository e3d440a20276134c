"""Anonymise personal data past its retention period (FieldClassification.retention_days).

Run with ``--dry-run`` first: it reports, per field, how many rows are past their period and how
many of those a legal hold protects, and changes nothing. Both kinds of run are journaled.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from compliance.retention import retention_run


class Command(BaseCommand):
    help = "Apply the retention periods of the classification registry (legal holds respected)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Report only; change nothing.")

    def handle(self, *args, dry_run: bool, **options):
        lines = retention_run(dry_run=dry_run)
        if not lines:
            self.stdout.write("No personal field has a retention period: nothing to do.")
        for line in lines:
            done = "would anonymise" if dry_run else "anonymised"
            count = line.due - line.held if dry_run else line.anonymised
            self.stdout.write(
                f"{line.model}.{line.field} (kept {line.retention_days} days, before "
                f"{line.cutoff}): {count} {done}, {line.held} on legal hold"
            )
