"""Rewrite docs/kpis.md from the KPI definitions in code (run after changing a definition)."""

from django.core.management.base import BaseCommand

from kpis.docs import PATH, kpi_docs_render


class Command(BaseCommand):
    help = "Write docs/kpis.md from kpis/definitions.py; --check fails when the file is stale."

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="Change nothing; exit 1 when docs/kpis.md differs."
        )

    def handle(self, *args, check: bool, **options):
        text = kpi_docs_render()
        if check:
            if not PATH.exists() or PATH.read_text() != text:
                self.stderr.write("docs/kpis.md is stale: run `manage.py kpi_docs`")
                raise SystemExit(1)
            self.stdout.write("docs/kpis.md is current.")
            return
        PATH.write_text(text)
        self.stdout.write(self.style.SUCCESS(f"wrote {PATH}"))
