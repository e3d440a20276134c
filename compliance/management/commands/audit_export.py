"""Export audit history for an auditor or an archive, streaming (flat memory at any size).

Kinds: ``changes`` (field edits from django-auditlog), ``access`` (reads, exports, sign-ins from
the journal), ``journal`` (every journal entry with its hashes). Times are in TIME_ZONE, named in
each record's ``zone``; ``--since``/``--until`` are dates in that zone, both included.
"""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from compliance.exports import audit_lines


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from exc


class Command(BaseCommand):
    help = "Write the audit history (changes, access or journal) as CSV or JSONL."

    def add_arguments(self, parser):
        parser.add_argument("--kind", choices=["changes", "access", "journal"], required=True)
        parser.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
        parser.add_argument("--since", type=_date, help="First day (YYYY-MM-DD), included.")
        parser.add_argument("--until", type=_date, help="Last day (YYYY-MM-DD), included.")
        parser.add_argument("--output", "-o", help="A file to write (default: standard output).")

    def handle(self, *args, kind, format, since, until, output, **options):
        lines = audit_lines(kind=kind, fmt=format, since=since, until=until)
        count = 0
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                for line in lines:
                    out.write(line)
                    count += 1
            self.stderr.write(f"{count:,} lines written to {output}")
            return
        for line in lines:
            self.stdout.write(line, ending="")
