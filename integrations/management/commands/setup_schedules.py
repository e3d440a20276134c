"""Make django-q2's schedules exactly the jobs declared in ``integrations.schedules.JOBS``.

Run by the startup script on every deploy: idempotent (update_or_create by name) and it removes
schedules whose job was taken out of the code, so what runs is always what the code says.
"""

from django.core.management.base import BaseCommand
from django.db import transaction
from django_q.models import Schedule

from integrations import schedules


class Command(BaseCommand):
    help = "Sync django-q2 schedules with the jobs declared in code."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would change; change nothing."
        )

    @transaction.atomic
    def handle(self, *args, dry_run: bool = False, **options):
        # A job without a cron runs only on demand (kpi_restate: queued by a load or a steward).
        timed = [job for job in schedules.JOBS if job.cron]
        declared = {job.name for job in timed}
        for job in timed:
            if dry_run:
                self.stdout.write(f"would sync {job.name}: {job.func} at '{job.cron}'")
                continue
            _, created = Schedule.objects.update_or_create(
                name=job.name,
                defaults={
                    "func": job.func,
                    "args": job.args or None,
                    "schedule_type": Schedule.CRON,
                    "cron": job.cron,
                    "repeats": -1,
                    "kwargs": None,
                    "hook": None,
                },
            )
            self.stdout.write(f"{'created' if created else 'updated'} {job.name}")
        stale = Schedule.objects.exclude(name__in=declared)
        for schedule in stale:
            self.stdout.write(
                self.style.WARNING(
                    f"{'would remove' if dry_run else 'removed'} {schedule.name} (no longer declared)"
                )
            )
        if not dry_run:
            stale.delete()
        self.stdout.write(self.style.SUCCESS(f"{len(declared)} schedule(s) declared."))
