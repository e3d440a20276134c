"""Pipeline runs, their schedules, alerts, the run_pipeline command and the status page."""

from __future__ import annotations

import ast
import json
from datetime import date, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import httpx
import pytest
import time_machine
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from integrations.alerts import alert_send
from integrations.models import PipelineRun, PipelineStep
from integrations.pipelines import (
    PIPELINES,
    PipelineBusy,
    RunContext,
    pipeline_run,
    pipeline_start,
    pipelines_overdue,
)
from integrations.schedules import JOBS
from loans.models import Batch, Loan
from tests.base import CastTestCase
from tests.integrations.cascade_tape import cascade_on, fake_cascade
from tests.integrations.fakes.server import serve

MADRID = ZoneInfo("Europe/Madrid")
ALERTS = override_settings(ADMINS=[("Ops", "ops@abaco.example")])


# --- schedules ------------------------------------------------------------------------------------


def test_the_jobs_of_the_design_run_at_their_times_through_the_pipeline_task():
    declared = {job.name: (job.cron, job.func, job.args) for job in JOBS}
    task = "integrations.tasks.pipeline_task"
    assert declared == {
        "cascade_ingest": ("0 6 * * *", task, "'cascade_ingest'"),
        "daily_ingest": ("0 7 * * *", task, "'daily_ingest'"),
        "kpi_daily": ("30 7 * * *", task, "'kpi_daily'"),
        # On demand only: queued by a load that changed the past, or a steward's date range.
        "kpi_restate": ("", task, "'kpi_restate'"),
        "meta_ingest": ("0 8 * * *", task, "'meta_ingest'"),
        "backup_daily": ("0 2 * * *", task, "'backup_daily'"),
        "restore_check_weekly": ("0 4 * * 0", task, "'restore_check_weekly'"),
        "pipelines_watch": ("*/15 * * * *", "integrations.tasks.pipelines_watch_task", ""),
        "audit_daily": ("30 2 * * *", "integrations.tasks.audit_daily_task", ""),
        "retention_daily": ("0 3 * * *", "integrations.tasks.retention_daily_task", ""),
    }
    assert all(ast.literal_eval(args) in PIPELINES for _, f, args in declared.values() if f == task)


@pytest.mark.django_db
def test_setup_schedules_syncs_every_job_and_removes_one_no_longer_declared():
    # Stored before undeclared schedules were refused at save (bulk_create sends no pre_save).
    Schedule.objects.bulk_create(
        [Schedule(name="old_hubspot_script", func="scripts.hubspot.run", schedule_type="D")]
    )
    out = StringIO()
    call_command("setup_schedules", stdout=out)
    call_command("setup_schedules", stdout=StringIO())
    assert "removed old_hubspot_script (no longer declared)" in out.getvalue()
    assert sorted(Schedule.objects.values_list("name", "cron", "args")) == [
        ("audit_daily", "30 2 * * *", None),
        ("backup_daily", "0 2 * * *", "'backup_daily'"),
        ("cascade_ingest", "0 6 * * *", "'cascade_ingest'"),
        ("daily_ingest", "0 7 * * *", "'daily_ingest'"),
        ("kpi_daily", "30 7 * * *", "'kpi_daily'"),
        ("meta_ingest", "0 8 * * *", "'meta_ingest'"),
        ("pipelines_watch", "*/15 * * * *", None),
        ("restore_check_weekly", "0 4 * * 0", "'restore_check_weekly'"),
        ("retention_daily", "0 3 * * *", None),
    ]


# --- runs -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_run_of_a_job_is_refused_while_one_is_running():
    pipeline_start(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)
    with pytest.raises(PipelineBusy, match="kpi_daily is already queued or running"):
        pipeline_start(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)


@pytest.mark.django_db
def test_a_run_killed_with_its_worker_is_closed_so_the_job_can_run_again():
    with time_machine.travel(timezone.now() - timedelta(hours=2)):
        killed = pipeline_start(name="kpi_daily", trigger=PipelineRun.Trigger.SCHEDULE)
    again = pipeline_run(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)
    killed.refresh_from_db()
    assert (killed.status, killed.error) == (
        "failed",
        "abandoned: the worker stopped before the run finished",
    )
    assert again.status == "succeeded"


@ALERTS
@cascade_on()
@pytest.mark.django_db
def test_a_killed_cascade_run_run_again_leaves_no_duplicates():
    fake = fake_cascade(4)
    transport = httpx.MockTransport(fake)
    with time_machine.travel(timezone.now() - timedelta(hours=2)):
        pipeline_start(
            name="cascade_ingest", trigger=PipelineRun.Trigger.SCHEDULE
        )  # never finished
    first = pipeline_run(
        name="cascade_ingest", trigger=PipelineRun.Trigger.COMMAND, transport=transport
    )
    second = pipeline_run(
        name="cascade_ingest", trigger=PipelineRun.Trigger.COMMAND, transport=transport
    )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert Loan.objects.count() == 4
    assert Batch.objects.filter(status="loaded").count() == 4


@ALERTS
@pytest.mark.django_db
def test_a_source_whose_rows_fall_or_columns_change_raises_a_data_quality_alert():
    def ran(rows: int, columns: list[str]) -> RunContext:
        run = PipelineRun.objects.create(
            job="daily_ingest", for_date=date(2025, 4, 9), trigger="command"
        )
        ctx = RunContext(run)
        with ctx.step("contacts") as step:
            step.rows_in, step.columns = rows, columns
            ctx.quality_check(step)
        run.status = PipelineRun.Status.SUCCEEDED
        run.save()
        return ctx

    ran(1000, ["email", "lastmodifieddate", "sector"])
    assert not mail.outbox
    ran(700, ["email", "lastmodifieddate", "industry"])
    (alert,) = mail.outbox
    assert alert.subject == "[abaco] data quality: daily_ingest · contacts"
    assert "rows fell from 1,000 to 700 (more than 20%)" in alert.body
    assert "columns changed: missing sector; new industry" in alert.body
    step = PipelineStep.objects.latest("pk")
    assert "data quality: rows fell from 1,000 to 700" in step.log


def finished_backups() -> None:
    """The always-on backup jobs ran (these tests are about the others)."""
    for job in ("backup_daily", "restore_check_weekly"):
        PipelineRun.objects.create(
            job=job, for_date=timezone.localdate(), trigger="schedule", status="succeeded"
        )


@ALERTS
@pytest.mark.django_db
def test_an_overdue_job_alerts_once_per_due_time():
    cache.clear()
    with time_machine.travel(datetime(2025, 4, 9, 7, 35, tzinfo=MADRID)):
        pipeline_run(name="kpi_daily", trigger="schedule")  # yesterday's kpi_daily ran on time
    with (
        override_settings(CASCADE_ENABLED=True),
        time_machine.travel(datetime(2025, 4, 10, 9, 0, tzinfo=MADRID)),
    ):
        finished_backups()
        overdue = pipelines_overdue()
        pipelines_overdue()
    # cascade_ingest was due at 06:00 and nothing finished by 08:00; today's kpi_daily (07:30) is
    # within its two hours and yesterday's finished; daily_ingest and meta_ingest are off.
    assert [(name, due.astimezone(MADRID).strftime("%m-%d %H:%M")) for name, due in overdue] == [
        ("cascade_ingest", "04-10 06:00")
    ]
    (alert,) = mail.outbox
    assert alert.subject == "[abaco] cascade_ingest is overdue"


@pytest.mark.django_db
def test_a_job_that_ran_after_its_due_time_is_not_overdue():
    with (
        override_settings(CASCADE_ENABLED=True),
        time_machine.travel(datetime(2025, 4, 10, 6, 5, tzinfo=MADRID)),
    ):
        # Both finished after their last due times (kpi_daily 04-09 07:30, cascade 04-10 06:00).
        pipeline_run(name="kpi_daily", trigger="schedule")
        PipelineRun.objects.create(
            job="cascade_ingest", for_date=date(2025, 4, 9), trigger="schedule", status="succeeded"
        )
    with (
        override_settings(CASCADE_ENABLED=True),
        time_machine.travel(datetime(2025, 4, 10, 9, 0, tzinfo=MADRID)),
    ):
        finished_backups()
        assert pipelines_overdue() == []


def test_a_slack_alert_posts_the_subject_and_body_to_the_webhook_without_logging_its_url(caplog):
    hook = "https://hooks.slack.com/services/T000/B000/s3cr3tpath"
    posted = []

    def slack(request: httpx.Request) -> httpx.Response:
        posted.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, text="ok")

    with override_settings(SLACK_WEBHOOK_URL=hook, ADMINS=[]):
        sent = alert_send(
            subject="meta_ingest failed",
            body="code 190",
            transport=httpx.MockTransport(slack),
        )
    assert sent == ["slack"]
    assert posted == [(hook, {"text": "*meta_ingest failed*\ncode 190"})]
    assert "s3cr3tpath" not in caplog.text


# --- run_pipeline ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_run_pipeline_runs_one_job_now_and_reports_it():
    out = StringIO()
    call_command("run_pipeline", "kpi_daily", "--date", "2025-04-09", stdout=out)
    assert out.getvalue().startswith("kpi_daily 2025-04-09: succeeded in ")
    run = PipelineRun.objects.get()
    assert (run.trigger, run.for_date) == ("command", date(2025, 4, 9))


@pytest.mark.django_db(transaction=True)
def test_run_pipeline_ingest_runs_the_three_sources_in_parallel_and_fails_when_one_fails():
    fake = fake_cascade(2, fail_with=[401])
    out, err = StringIO(), StringIO()

    with (
        serve(fake) as url,
        cascade_on(base_url=url),
        pytest.raises(CommandError, match="failed: cascade_ingest"),
    ):
        call_command("run_pipeline", "ingest", stdout=out, stderr=err)
    assert sorted(PipelineRun.objects.values_list("job", "status")) == [
        ("cascade_ingest", "failed"),
        ("daily_ingest", "skipped"),
        ("meta_ingest", "skipped"),
    ]
    assert "HUBSPOT_ENABLED is off" in out.getvalue()


# --- status page ----------------------------------------------------------------------------------


class StatusPageTests(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.failed = PipelineRun.objects.create(
            job="cascade_ingest",
            for_date=date(2025, 4, 9),
            trigger="schedule",
            status="failed",
            error="cascade: gave up after 5 attempts; last: GET /api/v1/portfolios/pf/tape/export answered 503",
            duration_ms=4200,
        )
        PipelineStep.objects.create(
            run=cls.failed, name="fetch", status="failed", started_at=timezone.now(), error="503"
        )

    def test_a_manager_sees_each_job_its_last_failure_and_next_time_but_cannot_rerun(self):
        self.client.force_login(self.manager)
        # session, user, permissions, the data-through line (3 with no batch cut-off), one per job
        with self.assertNumQueries(14):
            response = self.client.get(reverse("integrations:status"))
        assert response.status_code == 200
        page = response.content.decode()
        for name in PIPELINES:
            assert f'id="{name}"' in page
        assert "gave up after 5 attempts" in page
        assert "4.2 s" in page
        assert "Next run:" in page
        assert "Run now" not in page

    def test_staff_rerun_a_job_from_the_page_through_the_cluster(self):
        self.client.force_login(self.uploader)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(reverse("integrations:rerun", args=["kpi_daily"]))
        assert response.status_code == 302
        run = PipelineRun.objects.get(job="kpi_daily")
        assert (run.status, run.trigger, run.created_by) == ("succeeded", "page", self.uploader)

    def test_roles_without_pipelines_get_403_and_strangers_the_login_page(self):
        for user in (self.auditor, self.outsider):
            self.client.force_login(user)
            assert self.client.get(reverse("integrations:status")).status_code == 403
        self.client.force_login(self.manager)
        assert (
            self.client.post(reverse("integrations:rerun", args=["kpi_daily"])).status_code == 403
        )
        self.client.logout()
        assert self.client.get(reverse("integrations:status")).url.startswith("/login/")
