"""The meta_ingest pipeline against a fake Meta Graph API: insights per campaign and day, kept raw,
loaded, and rolled up to the monthly marketing spend that CAC reads."""

from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal

import httpx
import pytest
from django.core import mail
from django.test import override_settings

from integrations.meta.client import Fetch, Page, graph_classify, insights_parse
from integrations.meta.sync import insights_window
from integrations.models import AdInsight, PipelineRun
from integrations.pipelines import pipeline_run
from loans.models import Batch, MarketingSpend
from tests.factories import batch_create
from tests.integrations.fakes import meta
from tests.integrations.fakes.meta import ACCOUNT, TOKEN, FakeMeta
from tests.integrations.fakes.server import serve

pytestmark = pytest.mark.django_db

BACKFILL_DAY = date(2025, 6, 10)  # first run: 2025-03-01 to 2025-06-10, through a report run
PYME, FACTORING = "120210000000001", "120210000000002"
EDGE = f"/v21.0/{ACCOUNT}/insights"
ALERTS = override_settings(ADMINS=[("Ops", "ops@abaco.example")])


def meta_on(**extra) -> override_settings:
    values = {
        "META_ENABLED": True,
        "META_GRAPH_URL": "https://graph.facebook.test",
        "META_GRAPH_VERSION": "v21.0",
        "META_ACCESS_TOKEN": TOKEN,
        "META_AD_ACCOUNT_ID": ACCOUNT,
        "META_RATE_PER_SECOND": 0,  # the seam's own tests cover the limiter
        "META_ASYNC_AFTER_DAYS": 31,
        "META_LOOKBACK_DAYS": 3,
        "HTTP_BACKOFF_BASE": 1.0,
        "HTTP_MAX_ATTEMPTS": 4,
    }
    return override_settings(**(values | extra))


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def ad_account() -> FakeMeta:
    """Two campaigns: one all spring at 12.34 a day, one since mid-May at 7.5 a day."""
    fake = FakeMeta()
    actions = {"link_click": "30", "lead": "2"}
    fake.campaign(PYME, "Créditos PyME", date(2025, 3, 1), date(2025, 6, 30), spend="12.34",
                  impressions="1500", clicks="37", actions=actions)  # fmt: skip
    fake.campaign(FACTORING, "Factoring Q2", date(2025, 5, 15), date(2025, 6, 30), spend="7.5",
                  impressions="800", clicks="11")  # fmt: skip
    return fake


def run_with(fake, for_date: date, sleep=None, transport="mock") -> PipelineRun:
    return pipeline_run(
        name="meta_ingest",
        for_date=for_date,
        trigger=PipelineRun.Trigger.COMMAND,
        transport=httpx.MockTransport(fake) if transport == "mock" else transport,
        sleep=sleep if sleep is not None else Sleeps(),
    )


def spend_by_month() -> dict[str, Decimal]:
    return {
        f"{s.month:%Y-%m}": s.spend
        for s in MarketingSpend.objects.filter(channel="meta", segment="")
    }


def param(request: httpx.Request, name: str) -> str | None:
    return request.url.params.get(name)


BACKFILL_SPEND = {
    "2025-03": Decimal("382.54"),  # 31 x 12.34
    "2025-04": Decimal("370.20"),  # 30 x 12.34
    "2025-05": Decimal("510.04"),  # 31 x 12.34 + 17 x 7.50
    "2025-06": Decimal("198.40"),  # 10 x 12.34 + 10 x 7.50
}


# ---------------------------------------------------------------------------- happy paths


@meta_on()
def test_the_first_run_reads_whole_months_through_a_report_run_and_sets_monthly_meta_spend():
    fake, sleeps = ad_account(), Sleeps()
    run = run_with(fake, BACKFILL_DAY, sleeps)
    assert run.status == "succeeded", run.error
    assert [s.name for s in run.steps.all()] == ["fetch report run", "land raw", "load"]

    start, *polls, rows = fake.requests
    assert (start.method, start.url.path) == ("POST", EDGE)
    asked = dict(httpx.QueryParams(start.content.decode()))
    assert json.loads(asked["time_range"]) == {"since": "2025-03-01", "until": "2025-06-10"}
    assert [r.url.path for r in polls] == ["/v21.0/6023920149050"] * 3
    assert rows.url.path == "/v21.0/6023920149050/insights"
    assert sleeps == [2.0, 4.0]  # "Job Not Started", "Job Running", then "Job Completed" at 100 %

    assert AdInsight.objects.count() == 102 + 27
    row = AdInsight.objects.get(date=date(2025, 5, 20), campaign_id=PYME)
    assert (row.account_id, row.campaign_name, row.currency) == (ACCOUNT, "Créditos PyME", "USD")
    assert (row.spend, row.impressions, row.clicks) == (Decimal("12.34"), 1500, 37)
    assert row.actions == {"lead": 2, "link_click": 30}
    assert AdInsight.objects.get(date=date(2025, 5, 20), campaign_id=FACTORING).actions == {}
    assert spend_by_month() == BACKFILL_SPEND

    batch = Batch.objects.get(source="meta")
    assert (batch.kind, batch.status, batch.job) == ("marketing_spend", "loaded", "meta_ingest")
    assert (batch.rows_read, batch.rows_inserted) == (129, 129)
    assert batch.original_name == f"meta-insights-{ACCOUNT}-2025-03-01-2025-06-10.jsonl"
    assert set(MarketingSpend.objects.values_list("batch", flat=True)) == {batch.pk}
    assert json.loads(batch.file.read().decode().splitlines()[0])["data"][0] == {
        "campaign_id": PYME,
        "campaign_name": "Créditos PyME",
        "spend": "12.34",
        "impressions": "1500",
        "clicks": "37",
        "actions": [
            {"action_type": "lead", "value": "2"},
            {"action_type": "link_click", "value": "30"},
        ],
        "account_currency": "USD",
        "date_start": "2025-03-01",
        "date_stop": "2025-03-01",
    }


@ALERTS
@meta_on()
def test_a_daily_run_reads_the_lookback_days_with_one_get_and_takes_meta_revisions():
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    fake.day(date(2025, 6, 9), PYME).spend = "15.00"  # Meta revised a recent day
    fake.requests.clear()

    run = run_with(fake, date(2025, 6, 11))
    assert run.status == "succeeded", run.error
    (request,) = fake.requests
    assert (request.method, request.url.path) == ("GET", EDGE)
    assert json.loads(param(request, "time_range")) == {
        "since": "2025-06-08",
        "until": "2025-06-11",
    }
    assert (param(request, "level"), param(request, "time_increment")) == ("campaign", "1")
    assert param(request, "fields") == (
        "campaign_id,campaign_name,spend,impressions,clicks,actions,account_currency,"
        "date_start,date_stop"
    )
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url) and param(request, "access_token") is None

    load = run.steps.get(name="load")
    assert load.log.splitlines()[0] == "8 rows: 2 inserted, 1 updated, 5 unchanged"
    assert AdInsight.objects.get(date=date(2025, 6, 9), campaign_id=PYME).spend == Decimal("15.00")
    # June: 198.40 + 2.66 revision + 12.34 + 7.50 for the 11th; earlier months untouched.
    assert spend_by_month() == BACKFILL_SPEND | {"2025-06": Decimal("220.90")}
    assert (run.steps.get(name="fetch").rows_in, run.rows_in, run.rows_out) == (8, 8, 3)
    assert not mail.outbox  # the backfill's 129 rows are not this daily fetch's yardstick


@meta_on()
def test_it_follows_the_after_cursor_until_a_page_has_no_next():
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    fake.page_cap, fake.requests[:] = 3, []
    run = run_with(fake, date(2025, 6, 11))
    assert run.status == "succeeded", run.error
    assert [param(r, "after") for r in fake.requests] == [None, meta._cursor(2), meta._cursor(5)]
    assert [param(r, "limit") for r in fake.requests] == ["500"] * 3
    assert "8 rows in 3 page(s), 3 request(s)" in run.steps.get(name="fetch").log
    assert AdInsight.objects.filter(date=date(2025, 6, 11)).count() == 2
    lines = Batch.objects.filter(source="meta").latest("pk").file.read().splitlines()
    assert [len(json.loads(line)["data"]) for line in lines] == [3, 3, 2]


@meta_on()
def test_an_identical_rerun_writes_no_duplicates_and_keeps_one_copy_of_the_same_bytes():
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    again = run_with(fake, BACKFILL_DAY)  # the lookback days, all as held
    assert again.status == "succeeded", again.error
    assert again.steps.get(name="load").log.startswith("6 rows: 0 inserted, 0 updated, 6 unchanged")
    third = run_with(fake, BACKFILL_DAY)  # byte for byte the second fetch
    assert third.steps.get(name="land raw").log.endswith("checked against what is held")
    assert third.steps.get(name="load").log.startswith("6 rows: 0 inserted, 0 updated, 6 unchanged")
    assert AdInsight.objects.count() == 129
    assert spend_by_month() == BACKFILL_SPEND
    assert MarketingSpend.objects.count() == 4
    statuses = Batch.objects.filter(source="meta").order_by("pk").values_list("status", flat=True)
    assert list(statuses) == ["loaded", "loaded", "duplicate"]


@meta_on()
def test_a_revision_meta_undid_comes_back_even_when_the_bytes_were_seen_before():
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    run_with(fake, BACKFILL_DAY)  # fetches 2025-06-08 to 2025-06-10 as first sent
    fake.day(date(2025, 6, 9), PYME).spend = "99.00"
    run_with(fake, BACKFILL_DAY)
    fake.day(date(2025, 6, 9), PYME).spend = "12.34"
    undone = run_with(fake, BACKFILL_DAY)
    assert undone.steps.get(name="load").log.startswith(
        "6 rows: 0 inserted, 1 updated, 5 unchanged"
    )
    row = AdInsight.objects.get(date=date(2025, 6, 9), campaign_id=PYME)
    first_bytes = Batch.objects.filter(source="meta", status="loaded").order_by("pk")[1]
    assert (row.spend, row.batch) == (Decimal("12.34"), first_bytes)
    assert spend_by_month() == BACKFILL_SPEND


@meta_on(META_GRAPH_VERSION="v22.0")
def test_the_graph_api_version_comes_from_settings():
    fake = ad_account()
    fake.version = "v22.0"
    run = run_with(fake, BACKFILL_DAY)
    assert run.status == "succeeded", run.error
    assert {r.url.path.split("/")[1] for r in fake.requests} == {"v22.0"}


# ---------------------------------------------------------------------------- throttling, failures


@meta_on()
def test_it_waits_as_meta_says_when_throttled_and_on_429_then_succeeds():
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    fake.script = [meta.throttled(17, minutes=2), meta.plain(429, headers={"Retry-After": "7"})]
    sleeps = Sleeps()
    run = run_with(fake, date(2025, 6, 11), sleeps)
    assert run.status == "succeeded", run.error
    assert sleeps == [120.0, 7.0]  # estimated_time_to_regain_access is in minutes
    assert len(fake.requests) == 5 + 3  # backfill: POST, 3 polls, 1 page; then 3 tries
    assert "waited 127.0 s" in run.steps.get(name="fetch").log


@pytest.mark.parametrize(
    ("answer", "retry", "delay"),
    [
        (meta.throttled(4, subcode=1504022), True, None),
        (meta.throttled(613, subcode=1487742, minutes=5), True, 300.0),
        (meta.throttled(80000, subcode=None, minutes=1), True, 60.0),
        (meta.error(500, 2, "Service temporarily unavailable", subcode=1504043), True, None),
        (meta.error(500, 1, "An unknown error occurred"), True, None),
        (meta.error(400, 190, "Error validating access token: Session has expired"), False, None),
        (meta.error(400, 100, "(#100) Invalid parameter", subcode=1504018), False, None),
        (meta.error(500, 2, "No data for these breakdowns", subcode=1504041), False, None),
        (meta.plain(503, "<html>Bad gateway</html>"), None, None),
    ],
    ids=["4", "613", "80000", "2-intermittent", "1", "190", "100", "2-breakdowns", "proxy"],
)
def test_meta_error_codes_say_whether_to_wait_and_how_long(answer, retry, delay):
    verdict = graph_classify(answer(httpx.Request("GET", "https://graph.facebook.test" + EDGE)))
    if retry is None:
        assert verdict is None  # not Graph's envelope: the seam retries 429/5xx by status
    else:
        assert (verdict.retry, verdict.delay) == (retry, delay)
        assert "fbtrace_id AbCdEfGh123" in verdict.reason


@ALERTS
@meta_on()
def test_5xx_until_retries_run_out_fails_the_run_writes_nothing_and_alerts(caplog):
    unknown = meta.error(500, 1, "An unknown error occurred", subcode=99)
    fake = ad_account()
    fake.script = [unknown] * 4
    sleeps = Sleeps()
    with caplog.at_level(logging.DEBUG):
        run = run_with(fake, BACKFILL_DAY, sleeps)
    assert run.status == "failed"
    assert run.error == (
        f"meta: gave up after 4 attempts; last: POST {EDGE} answered 500: An unknown error "
        "occurred (code 1, subcode 99, OAuthException, fbtrace_id AbCdEfGh123)"
    )
    assert (
        0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2 and 2 <= sleeps[2] <= 4 and len(sleeps) == 3
    )
    assert not AdInsight.objects.exists() and not Batch.objects.exists()
    assert not MarketingSpend.objects.exists()
    (alert,) = mail.outbox
    assert alert.subject == f"[abaco] meta_ingest failed for {BACKFILL_DAY}"
    assert "gave up after 4 attempts" in alert.body
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    assert "provider request" in logged and TOKEN not in logged and TOKEN not in alert.body


@ALERTS
@meta_on()
def test_timeouts_are_retried_and_a_run_that_only_times_out_fails_naming_it():
    fake = ad_account()
    fake.script = [meta.timeout(), meta.timeout()]
    assert run_with(fake, BACKFILL_DAY).status == "succeeded"
    AdInsight.objects.all().delete()
    fake.script = [meta.timeout()] * 4
    run = run_with(fake, BACKFILL_DAY)
    assert run.status == "failed"
    assert run.error.endswith(f"last: POST {EDGE}: ReadTimeout")
    assert run.alerted


@ALERTS
@meta_on(META_ACCESS_TOKEN="EAAB-an-expired-token-s3cr3t")
def test_a_rejected_token_fails_fast_and_the_token_never_reaches_the_error_or_the_logs(caplog):
    fake = ad_account()  # the fake knows only TOKEN, and echoes a malformed one as Graph does
    with caplog.at_level(logging.DEBUG):
        run = run_with(fake, BACKFILL_DAY)
    assert run.status == "failed" and len(fake.requests) == 1
    assert run.error == (
        f"meta: POST {EDGE} answered 400: Malformed access token [secret] "
        "(code 190, OAuthException, fbtrace_id AbCdEfGh123)"
    )
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    for text in (run.error, run.steps.get().error, logged, mail.outbox[0].body):
        assert "EAAB-an-expired-token-s3cr3t" not in text


@pytest.mark.parametrize(
    "answer",
    [
        meta.error(400, 100, "(#100) time_range is invalid", subcode=1504018),
        meta.error(500, 2, "No data is available for the requested breakdowns", subcode=1504041),
    ],
    ids=["invalid-parameter", "invalid-breakdowns"],
)
@meta_on()
def test_permanent_errors_fail_fast_without_waiting(answer):
    fake = ad_account()
    fake.script = [answer]
    sleeps = Sleeps()
    run = run_with(fake, BACKFILL_DAY, sleeps)
    assert run.status == "failed" and len(fake.requests) == 1 and sleeps == []
    assert "answered" in run.error and "fbtrace_id AbCdEfGh123" in run.error


@meta_on()
def test_a_failed_report_run_is_started_once_more_and_two_failures_fail_the_run():
    fake = ad_account()
    fake.report_failures = 1
    assert run_with(fake, BACKFILL_DAY).status == "succeeded"
    assert [r.method for r in fake.requests].count("POST") == 2
    AdInsight.objects.all().delete()
    fake.report_failures = 2
    run = run_with(fake, BACKFILL_DAY)
    assert run.status == "failed"
    assert run.error == "meta: report run 6023920149053 ended 'Job Failed' 2 times"


# ---------------------------------------------------------------------------- malformed payloads


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (meta.body(b"<html>Sorry, something went wrong.</html>", "text/html"), "the response is not JSON"),
        (meta.body(b'{"data": {"spend": "1.00"}}'), "no 'data' list in the response"),
        (meta.body(b'{"data": [], "paging": {"next": "https://graph.facebook.test/x"}}'), "paging.next without paging.cursors.after"),
    ],
    ids=["html", "data-not-a-list", "next-without-cursor"],
)  # fmt: skip
@meta_on()
def test_a_page_that_is_not_an_insights_page_fails_clearly_and_writes_nothing(answer, error):
    fake = ad_account()
    run_with(fake, BACKFILL_DAY)
    fake.script = [answer]
    run = run_with(fake, date(2025, 6, 11))
    assert run.status == "failed"
    assert run.error == f"meta: GET {EDGE} page 1: {error}"
    assert Batch.objects.filter(source="meta").count() == 1
    assert not AdInsight.objects.filter(date=date(2025, 6, 11)).exists()


@meta_on()
def test_bad_rows_refuse_the_whole_payload_naming_page_row_and_field():
    fake = ad_account()
    fake.day(date(2025, 3, 2), PYME).spend = "12,34"
    fake.day(date(2025, 5, 16), FACTORING).clicks = "-3"
    run = run_with(fake, BACKFILL_DAY)
    assert run.status == "failed"
    name = f"meta-insights-{ACCOUNT}-2025-03-01-2025-06-10.jsonl page 1"
    assert run.error == (
        "meta: the insights payload was refused, nothing was written: 2 bad row(s): "
        f"{name}, row 2, column spend: not a number (value '12,34'); "
        f"{name}, row 79, column clicks: not a whole, non-negative number (value '-3')"
    )
    assert not AdInsight.objects.exists() and not MarketingSpend.objects.exists()
    batch = Batch.objects.get(source="meta")
    assert (batch.status, batch.rows_read, batch.rows_rejected) == ("failed", 129, 2)
    assert [e["column"] for e in batch.errors] == ["spend", "clicks"]


def test_rows_outside_the_window_spanning_days_or_repeated_are_refused():
    fetch = _fetch_of(
        [
            _row(date_start="2025-06-01", date_stop="2025-06-01"),
            _row(date_start="2025-05-31", date_stop="2025-05-31"),
            _row(date_start="2025-06-02", date_stop="2025-06-03"),
            _row(date_start="2025-06-01", date_stop="2025-06-01"),
            _row(account_currency="US$"),
            "not an object",
        ]
    )
    parsed = insights_parse(fetch)
    assert [p.reason for p in parsed.errors] == [
        "outside the window asked for, 2025-06-01 to 2025-06-03",
        "the row spans several days (time_increment=1 not applied)",
        "the same campaign and day again (first at page 1, row 1)",
        "not an ISO 4217 currency code",
        "not an object",
    ]
    assert [r.spend for r in parsed.rows] == [Decimal("5339.50")]


def test_spend_is_rounded_to_cents_half_up_and_counts_stay_exact():
    (row,) = insights_parse(
        _fetch_of([_row(spend="10.005", actions=[{"action_type": "lead", "value": "1.5"}])])
    ).rows
    assert row.spend == Decimal("10.01")
    assert row.actions == {"lead": "1.5"}


def _row(**overrides) -> dict:
    row = {
        "campaign_id": PYME,
        "campaign_name": "Créditos PyME",
        "spend": "5339.5",
        "account_currency": "USD",
        "date_start": "2025-06-01",
        "date_stop": "2025-06-01",
    }
    return row | overrides


def _fetch_of(rows: list) -> Fetch:
    return Fetch(ACCOUNT, date(2025, 6, 1), date(2025, 6, 3), [Page(b"{}", rows)])


# ---------------------------------------------------------------------------- window, currencies


def test_the_window_starts_at_a_month_start_first_then_takes_the_lookback_days():
    assert insights_window(account_id=ACCOUNT, until=BACKFILL_DAY) == (
        date(2025, 3, 1),
        BACKFILL_DAY,
    )
    batch = batch_create(source="meta", kind=Batch.Kind.MARKETING_SPEND)
    AdInsight.objects.create(
        account_id=ACCOUNT, date=date(2025, 6, 10), campaign_id=PYME, spend=1, batch=batch
    )
    with override_settings(META_LOOKBACK_DAYS=3):
        assert insights_window(account_id=ACCOUNT, until=date(2025, 6, 12)) == (
            date(2025, 6, 8),
            date(2025, 6, 12),
        )
        # A re-run for an older date fetches the lookback days that end on it.
        assert insights_window(account_id=ACCOUNT, until=date(2025, 5, 1)) == (
            date(2025, 4, 29),
            date(2025, 5, 1),
        )
    assert insights_window(account_id="act_999", until=BACKFILL_DAY)[0] == date(2025, 3, 1)


@meta_on()
def test_a_month_with_spend_in_two_currencies_fails_and_writes_nothing():
    other = batch_create(source="meta", kind=Batch.Kind.MARKETING_SPEND)
    AdInsight.objects.create(
        account_id="act_555",
        date=date(2025, 6, 1),
        campaign_id="9",
        spend=5,
        currency="EUR",
        batch=other,
    )
    run = run_with(ad_account(), BACKFILL_DAY)
    assert run.status == "failed"
    assert run.error == (
        "MixedCurrencies: 2025-06: Meta spend is in EUR, USD; one marketing-spend row holds one currency"
    )
    assert AdInsight.objects.count() == 1 and not MarketingSpend.objects.exists()
    assert Batch.objects.filter(source="meta", status="failed").count() == 1


# ---------------------------------------------------------------------------- configuration, end to end


def test_it_is_skipped_not_failed_while_meta_is_not_configured():
    run = pipeline_run(name="meta_ingest", trigger=PipelineRun.Trigger.COMMAND)
    assert (run.status, run.error) == (
        "skipped",
        "META_ENABLED is off or its credentials are not set",
    )


def test_the_real_client_reads_a_report_run_from_a_local_server_over_http():
    fake, sleeps = ad_account(), Sleeps()
    with serve(fake) as url, meta_on(META_GRAPH_URL=url):
        run = run_with(fake, BACKFILL_DAY, sleeps, transport=None)
    assert run.status == "succeeded", run.error
    assert [r.method for r in fake.requests] == ["POST", "GET", "GET", "GET", "GET"]
    assert AdInsight.objects.count() == 129
    assert spend_by_month() == BACKFILL_SPEND
    assert sleeps == [2.0, 4.0]
