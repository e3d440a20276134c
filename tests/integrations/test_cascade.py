"""The cascade_ingest pipeline against a fake Cascade workspace: fetch, keep raw, import."""

from __future__ import annotations

import logging

import httpx
import pytest
from django.core import mail
from django.test import override_settings
from django_q.models import Task
from django_q.tasks import async_task

from integrations.models import PipelineRun
from integrations.pipelines import pipeline_run
from loans.models import Batch, Loan, Transaction
from tests.integrations.cascade_tape import TOKEN, cascade_on, fake_cascade, tape_texts
from tests.integrations.fakes.server import serve
from tests.loans.tape_files import tape_valid

pytestmark = pytest.mark.django_db
ALERTS = override_settings(ADMINS=[("Ops", "ops@abaco.example")])


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run_with(fake, sleep=None) -> PipelineRun:
    return pipeline_run(
        name="cascade_ingest",
        trigger=PipelineRun.Trigger.COMMAND,
        transport=httpx.MockTransport(fake),
        sleep=Sleeps() if sleep is None else sleep,
    )


@cascade_on()
def test_it_fetches_the_export_keeps_each_file_raw_and_imports_the_tape():
    fake = fake_cascade(4)
    run = run_with(fake)
    assert run.status == "succeeded", run.error
    assert Loan.objects.count() == 4
    batches = Batch.objects.filter(source="cascade", status="loaded")
    assert sorted(b.original_name for b in batches) == [
        "cascade-tape.zip:customers.csv",
        "cascade-tape.zip:loans.csv",
        "cascade-tape.zip:schedules.csv",
        "cascade-tape.zip:transactions.csv",
    ]
    assert all(b.job == "cascade_ingest" and b.file.size == b.size for b in batches)
    # The export's cut-off is the run's date, quiet days included: the book's data-through date.
    loans = batches.get(kind="loans")
    assert loans.data_through == run.for_date
    fetch, load = run.steps.all()
    assert (fetch.name, load.name) == ("fetch", "import")
    # 2 customers + 4 loans + 8 installments + 8 transactions
    assert (load.rows_in, load.rows_out, run.rows_in) == (22, 22, 22)
    assert "loans.disburse_principal" in load.columns
    assert fake.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


@cascade_on()
def test_an_unchanged_export_is_a_no_op_and_a_changed_one_updates_only_what_changed():
    fake = fake_cascade(4)
    run_with(fake)
    again = run_with(fake)
    assert again.status == "succeeded"
    assert again.steps.get(name="import").log.endswith("unchanged export: nothing to load")
    assert Batch.objects.filter(source="cascade", status="duplicate").count() == 4
    assert (Loan.objects.count(), Transaction.objects.count()) == (4, 8)

    tape = tape_valid(4)
    tape["loans"][0]["interest_rate"] = "0.30"
    fake.files = tape_texts(tape)
    changed = run_with(fake)
    load = changed.steps.get(name="import")
    assert "loans.csv: 4 read, 0 inserted, 1 updated, 3 unchanged" in load.log
    assert str(Loan.objects.get(loan_id="L00001").interest_rate) == "0.300000"


@cascade_on()
def test_it_reads_an_export_served_as_a_manifest_of_csv_files():
    fake = fake_cascade(3, manifest=True)
    run = run_with(fake)
    assert run.status == "succeeded", run.error
    assert Loan.objects.count() == 3
    assert [r.url.path.rsplit("/", 1)[1] for r in fake.requests] == [
        "export",
        "customers.csv",
        "loans.csv",
        "schedules.csv",
        "transactions.csv",
    ]


@cascade_on(CASCADE_TOKEN="", CASCADE_SESSION_COOKIE="sess-cookie-s3cr3t")
def test_it_signs_in_with_the_session_cookie_when_there_is_no_token():
    fake = fake_cascade(2, token="", cookie="sess-cookie-s3cr3t")
    assert run_with(fake).status == "succeeded"
    assert "Authorization" not in fake.requests[0].headers


@cascade_on()
def test_it_waits_as_told_on_429_and_backs_off_on_5xx_then_succeeds():
    fake = fake_cascade(2, fail_with=[429, 503, 502], retry_after="7")
    sleeps = Sleeps()
    run = run_with(fake, sleep=sleeps)
    assert run.status == "succeeded", run.error
    assert sleeps[0] == 7.0  # Retry-After honoured
    # Then exponential backoff with jitter: attempt 2 waits 1-2 s, attempt 3 waits 2-4 s.
    assert 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0
    assert len(fake.requests) == 4


@ALERTS
@cascade_on()
def test_5xx_until_retries_run_out_fails_the_run_writes_nothing_and_alerts(caplog):
    fake = fake_cascade(2, fail_with=[500, 500, 500, 500])
    with caplog.at_level(logging.INFO):
        run = run_with(fake)
    assert run.status == "failed"
    assert run.error == (
        "cascade: gave up after 4 attempts; last: GET /api/v1/portfolios/pf-abaco/tape/export "
        "answered 500: upstream says 500"
    )
    assert run.steps.get().status == "failed"
    assert Loan.objects.count() == 0 and not Batch.objects.exists()
    assert run.alerted
    (alert,) = mail.outbox
    assert alert.subject.endswith("cascade_ingest failed for " + str(run.for_date))
    assert "gave up after 4 attempts" in alert.body
    assert TOKEN not in caplog.text and TOKEN not in alert.body


@ALERTS
@cascade_on()
def test_timeouts_are_retried_and_named_when_they_do_not_stop():
    fake = fake_cascade(2, timeouts=10)
    run = run_with(fake)
    assert run.status == "failed"
    assert run.error.endswith("last: GET /api/v1/portfolios/pf-abaco/tape/export: ReadTimeout")
    assert len(fake.requests) == 4


@ALERTS
@cascade_on()
def test_an_export_that_is_neither_zip_nor_manifest_fails_clearly_and_writes_nothing():
    run = run_with(fake_cascade(2, garbage=b"<html>Sign in to Cascade</html>"))
    assert run.status == "failed"
    assert run.error == (
        "cascade: GET /api/v1/portfolios/pf-abaco/tape/export: expected a ZIP or a JSON manifest, "
        "got text/html"
    )
    assert not Batch.objects.exists()


@ALERTS
@cascade_on()
def test_a_tape_with_errors_fails_the_run_naming_file_row_and_column_and_loads_nothing():
    tape = tape_valid(3)
    tape["loans"][2]["disburse_principal"] = "-5"
    fake = fake_cascade(3)
    fake.files = tape_texts(tape)
    run = run_with(fake)
    assert run.status == "failed"
    assert run.error.startswith(
        "TapeRefused: the tape was refused, nothing was written: 1 error(s):"
    )
    assert "cascade-tape.zip:loans.csv, row 4, column disburse_principal" in run.error
    assert Loan.objects.count() == 0
    assert set(Batch.objects.values_list("status", flat=True)) == {"failed"}


@ALERTS
@cascade_on()
def test_a_wrong_token_fails_fast_without_retrying_and_without_the_token_in_the_error():
    fake = fake_cascade(2, token="another-token")
    run = run_with(fake)
    assert run.status == "failed"
    assert len(fake.requests) == 1
    assert "answered 401" in run.error and TOKEN not in run.error


def test_it_is_skipped_not_failed_while_cascade_is_not_configured():
    run = pipeline_run(name="cascade_ingest", trigger=PipelineRun.Trigger.COMMAND)
    assert (run.status, run.error) == (
        "skipped",
        "CASCADE_ENABLED is off or its credentials are not set",
    )
    assert not mail.outbox


def test_the_schedule_runs_the_real_client_against_a_local_server_through_the_cluster():
    fake = fake_cascade(3)
    with serve(fake) as url, cascade_on(base_url=url):
        task_id = async_task("integrations.tasks.pipeline_task", "cascade_ingest")
    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    run = PipelineRun.objects.get()
    assert (run.status, run.trigger) == ("succeeded", "schedule")
    assert Loan.objects.count() == 3
