"""Issue 18, item 2: no page runs code of its choosing in the cluster. django-q's admin is
read-only, and a schedule that is not a declared job is refused at save and switched off at
cluster start."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django_q.models import Schedule
from django_q.signals import post_spawn

from integrations.schedules import JOBS
from tests.base import CastTestCase


class TaskAdminTests(CastTestCase):
    def test_the_schedule_add_page_of_the_issue_is_gone_for_everyone_even_the_admin(self):
        self.client.force_login(self.admin)
        response = self.client.post(
            "/admin/django_q/schedule/add/",
            {"name": "x", "func": "os.system", "args": "'touch /tmp/pwned'", "schedule_type": "O"},
        )
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Schedule.objects.filter(func="os.system").exists())
        for url in (
            "/admin/django_q/schedule/",
            "/admin/django_q/success/",
            "/admin/django_q/failure/",
            "/admin/django_q/ormq/",
        ):
            page = self.client.get(url)
            with self.subTest(url=url):
                self.assertEqual(page.status_code, 200)
                self.assertNotContains(page, "Resubmit")
                self.assertNotContains(page, f"{url}add/")

    def test_a_schedule_that_is_not_a_declared_job_is_refused_at_save(self):
        for fields in (
            {"name": "evil", "func": "os.system", "args": "'id'"},
            {"name": "kpi_daily", "func": "os.system", "args": "'id'"},
            {"name": "kpi_daily", "func": JOBS[2].func, "args": "'kpi_daily'", "hook": "os.system"},
        ):
            with self.subTest(fields=fields), self.assertRaises(ValidationError):
                Schedule.objects.create(schedule_type=Schedule.DAILY, **fields)
        job = next(j for j in JOBS if j.name == "kpi_daily")
        Schedule.objects.create(
            name=job.name, func=job.func, args=job.args, schedule_type="C", cron=job.cron
        )

    def test_a_stored_undeclared_schedule_is_switched_off_when_a_cluster_worker_starts(self):
        # Written to the table directly (bulk_create sends no pre_save), e.g. before this check.
        Schedule.objects.bulk_create(
            [Schedule(name="evil", func="os.system", args="'id'", schedule_type="I", minutes=1)]
        )
        with self.assertLogs("integrations.schedules", "ERROR") as logs:
            post_spawn.send(sender="django_q", proc_name="Process-1")
        self.assertEqual(Schedule.objects.get(name="evil").repeats, 0)  # the scheduler skips it
        self.assertIn("undeclared schedules switched off", logs.output[0])
