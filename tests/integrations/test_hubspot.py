"""The daily_ingest job's HubSpot part against a fake HubSpot account: fetch, keep raw, upsert,
link to customers, sector and size, segments; paging, search windows, limits and failures."""

from __future__ import annotations

import json
import logging
import random
from bisect import bisect_right
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.core import mail

from integrations.http import RateLimiter
from integrations.hubspot import client as hubspot_client
from integrations.hubspot.client import RollingLimiter, millis
from integrations.hubspot.sync import size_band
from integrations.models import CrmRecord, PipelineRun
from integrations.pipelines import pipeline_run
from loans.models import Batch, Customer
from tests.factories import customer_create, loan_create
from tests.integrations.fakes.hubspot import BASE_TIME, TOKEN, FakeHubSpot, iso
from tests.integrations.fakes.server import serve

pytestmark = pytest.mark.django_db
BASE_URL = "https://api.hubapi.test"
# What is asked of companies by default, less "country", which this account does not have.
COMPANY_PROPERTIES = [
    "abaco_customer_id",
    "annualrevenue",
    "domain",
    "industry",
    "name",
    "numberofemployees",
]


@pytest.fixture(autouse=True)
def hubspot_on(settings, tmp_path):
    settings.HUBSPOT_ENABLED = True
    settings.HUBSPOT_TOKEN = TOKEN
    settings.HUBSPOT_BASE_URL = BASE_URL
    settings.HUBSPOT_CUSTOMER_ID_PROPERTY = "abaco_customer_id"
    # Our own pacing is off: the fake's limits are what these tests run into.
    settings.HUBSPOT_RATE_PER_SECOND = 0
    settings.HUBSPOT_SEARCH_RATE_PER_SECOND = 0
    settings.HTTP_MAX_ATTEMPTS = 3
    settings.HTTP_BACKOFF_BASE = 1.0
    settings.MEDIA_ROOT = tmp_path
    settings.ADMINS = [("Ops", "ops@abaco.example")]
    settings.SLACK_WEBHOOK_URL = ""


class Clock:
    """The test's time: sleeping advances it instead of waiting, and the fake's limits run on it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def sync(handler, clock: Clock | None = None) -> PipelineRun:
    return pipeline_run(
        name="daily_ingest",
        trigger=PipelineRun.Trigger.COMMAND,
        transport=httpx.MockTransport(handler),
        sleep=(clock or Clock()).sleep,
    )


def account(**options) -> FakeHubSpot:
    """Three companies (two name our customers C-100 and C-200), three contacts, two deals."""
    fake = FakeHubSpot(**options)
    fake.add(
        "companies",
        {
            "name": "Acme Factoring",
            "domain": "acme.example",
            "industry": "FINANCIAL_SERVICES",
            "numberofemployees": "35",
            "annualrevenue": "1200000",
            "abaco_customer_id": "C-100",
        },
    )
    fake.add(
        "companies",
        {
            "name": "Beta Retail",
            "industry": "RETAIL",
            "annualrevenue": "25000000",
            "abaco_customer_id": "C-200",
        },
    )
    fake.add("companies", {"name": "Gamma Prospect", "industry": "AGRICULTURE"})
    fake.add(
        "contacts",
        {
            "email": "ana@acme.example",
            "firstname": "Ana",
            "lifecyclestage": "customer",
            "abaco_customer_id": "C-100",
        },
    )
    fake.add(
        "contacts",
        {"email": "x@unknown.example", "lifecyclestage": "lead", "abaco_customer_id": "C-999"},
    )
    fake.add("contacts", {"email": "lead@prospect.example", "lifecyclestage": "lead"})
    fake.add("deals", {"dealname": "Acme line", "amount": "15000.50", "dealstage": "closedwon"})
    fake.add(
        "deals", {"dealname": "Gamma pilot", "amount": "5000", "dealstage": "appointmentscheduled"}
    )
    return fake


@pytest.fixture
def customers() -> dict[str, Customer]:
    return {cid: customer_create(customer_id=cid) for cid in ("C-100", "C-200")}


def held(object_type: str) -> list[CrmRecord]:
    return list(CrmRecord.objects.filter(object_type=object_type).order_by("hubspot_id"))


def snapshot() -> list[tuple]:
    return list(
        CrmRecord.objects.order_by("object_type", "hubspot_id").values_list(
            "object_type",
            "hubspot_id",
            "properties",
            "hubspot_updated_at",
            "archived",
            "customer_id",
            "batch_id",
            "synced_at",
        )
    )


def step_log(run: PipelineRun, name: str) -> str:
    return run.steps.get(name=name).log


def test_a_first_run_lists_every_record_keeps_it_raw_and_links_companies_and_contacts(customers):
    fake = account()
    loan_create(customer=customers["C-100"])
    run = sync(fake)

    assert run.status == "succeeded", run.error
    assert [s.name for s in run.steps.all()] == [
        "companies: fetch",
        "companies: load",
        "contacts: fetch",
        "contacts: load",
        "deals: fetch",
        "deals: load",
        "link customers",
        "sector and size",
        "segments",
    ]
    assert [len(held(t)) for t in ("companies", "contacts", "deals")] == [3, 3, 2]
    fetch = run.steps.get(name="companies: fetch")
    assert (fetch.rows_in, fetch.columns, run.rows_in) == (3, COMPANY_PROPERTIES, 8)
    acme = held("companies")[0]
    # Only the properties asked for: none of HubSpot's defaults, none we did not name.
    assert sorted(acme.properties) == COMPANY_PROPERTIES
    assert acme.properties["industry"] == "FINANCIAL_SERVICES"
    assert held("companies")[1].properties["numberofemployees"] is None  # Beta has no value
    assert acme.hubspot_updated_at == BASE_TIME
    assert acme.customer == customers["C-100"]
    contacts = held("contacts")
    assert "email" not in contacts[0].properties and "firstname" not in contacts[0].properties
    assert [c.customer_id for c in contacts] == [customers["C-100"].pk, None, None]
    assert held("deals")[0].properties["amount"] == "15000.50"

    acme_customer, beta_customer = (Customer.objects.get(pk=c.pk) for c in customers.values())
    assert (acme_customer.sector, acme_customer.size) == ("Financial services", "small")
    assert (beta_customer.sector, beta_customer.size) == ("Retail", "medium")
    assert acme_customer.segment == "new"

    batches = Batch.objects.filter(source="hubspot").order_by("pk")
    assert [(b.kind, b.status, b.rows_read, b.rows_inserted) for b in batches] == [
        ("crm", "loaded", 3, 3),
        ("crm", "loaded", 3, 3),
        ("crm", "loaded", 2, 2),
    ]
    lines = batches[1].file.read().decode().splitlines()
    assert [json.loads(line)["properties"]["lifecyclestage"] for line in lines] == [
        "customer",
        "lead",
        "lead",
    ]
    assert all(b.job == "daily_ingest" for b in batches)
    assert acme.batch == batches[0]
    assert "1 abaco_customer_id values name no customer we hold, e.g. C-999" in step_log(
        run, "link customers"
    )
    assert {r.headers["Authorization"] for r in fake.requests} == {f"Bearer {TOKEN}"}


def test_it_reads_every_page_by_following_paging_next_after():
    fake = FakeHubSpot()
    for n in range(250):
        fake.add("contacts", {"lifecyclestage": "lead", "hs_lead_status": f"S{n}"})
    answered: list[tuple[httpx.Request, httpx.Response]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        answered.append((request, response))
        return response

    run = sync(handler)

    assert run.status == "succeeded", run.error
    assert CrmRecord.objects.filter(object_type="contacts").count() == 250
    pages = [
        (req.url.params.get("after"), resp.json().get("paging", {}).get("next", {}).get("after"))
        for req, resp in answered
        if req.url.path == "/crm/v3/objects/contacts" and req.url.params["archived"] == "false"
    ]
    assert len(pages) == 3  # 100 + 100 + 50
    assert pages[0][0] is None and pages[-1][1] is None
    assert [asked for asked, _ in pages[1:]] == [given for _, given in pages[:-1]]


def test_a_later_run_searches_only_what_changed_since_the_newest_record_held(customers):
    fake = account()
    sync(fake)
    contacts_before = {c.hubspot_id: c for c in held("contacts")}
    newest = max(c.hubspot_updated_at for c in contacts_before.values())
    first_id = min(contacts_before)
    fake.touch("contacts", first_id, at=newest + timedelta(hours=2), lifecyclestage="opportunity")
    new_id = fake.add(
        "contacts", {"lifecyclestage": "lead"}, updated_at=newest + timedelta(hours=3)
    )
    fake.requests.clear()

    run = sync(fake)

    assert run.status == "succeeded", run.error
    searches = [
        json.loads(r.content) for r in fake.requests if r.url.path.endswith("/contacts/search")
    ]
    assert len(searches) == 1
    since, until = searches[0]["filterGroups"][0]["filters"]
    assert (since["propertyName"], since["operator"], since["value"]) == (
        "lastmodifieddate",
        "GTE",
        millis(newest),
    )
    assert until["operator"] == "LTE"
    assert searches[0]["limit"] == 200
    # Every other request lists archived records only: no full listing on a later run.
    assert all(r.url.params.get("archived") == "true" for r in fake.requests if r.method == "GET")
    contacts = {c.hubspot_id: c for c in held("contacts")}
    assert contacts[first_id].properties["lifecyclestage"] == "opportunity"
    assert new_id in contacts
    untouched = sorted(set(contacts_before) - {first_id})
    assert [contacts[i].batch_id for i in untouched] == [
        contacts_before[i].batch_id for i in untouched
    ]
    # The newest record held is read again: changes are searched from its instant on.
    assert "3 read, 1 inserted, 1 updated, 1 unchanged" in step_log(run, "contacts: load")
    # One changed company against three listed the day before is no data-quality problem.
    assert run.steps.get(name="companies: fetch").rows_in == 1
    assert not mail.outbox


def test_changes_past_the_10000_result_cap_are_read_in_windows_that_never_page_past_it(monkeypatch):
    monkeypatch.setattr(hubspot_client, "SEARCH_CAP", 400)  # HubSpot's cap, shrunk to stay fast
    fake = FakeHubSpot(search_cap=400, searches_per_second=1_000)  # pacing is another test's
    fake.add("contacts", {"lifecyclestage": "lead"})
    sync(fake)
    later = BASE_TIME + timedelta(days=1)
    for n in range(1_000):
        fake.add(
            "contacts", {"lifecyclestage": "lead"}, updated_at=later + timedelta(seconds=n // 3)
        )
    fake.requests.clear()

    run = sync(fake)

    assert run.status == "succeeded", run.error
    assert CrmRecord.objects.filter(object_type="contacts").count() == 1_001
    searches = [
        json.loads(r.content) for r in fake.requests if r.url.path.endswith("/contacts/search")
    ]
    assert max(int(s.get("after", 0)) for s in searches) < 400
    starts = [
        int(s["filterGroups"][0]["filters"][0]["value"]) for s in searches if "after" not in s
    ]
    assert len(starts) == 3 and starts == sorted(starts)
    assert "3 search window(s)" in step_log(run, "contacts: fetch")
    assert "1,001 read, 1,000 inserted, 0 updated, 1 unchanged" in step_log(run, "contacts: load")


def test_when_more_records_share_one_instant_than_a_search_can_page_it_lists_them_all(monkeypatch):
    monkeypatch.setattr(hubspot_client, "SEARCH_CAP", 400)
    fake = FakeHubSpot(search_cap=400)
    fake.add("contacts", {"lifecyclestage": "lead"})
    sync(fake)
    bulk_import = BASE_TIME + timedelta(days=1)
    for _ in range(450):
        fake.add("contacts", {"lifecyclestage": "lead"}, updated_at=bulk_import)

    run = sync(fake)

    assert run.status == "succeeded", run.error
    assert CrmRecord.objects.filter(object_type="contacts").count() == 451
    assert (
        f"more than 400 contacts were modified at {bulk_import.isoformat()}: listing every record "
        "instead" in step_log(run, "contacts: fetch")
    )


def test_a_record_changing_while_search_pages_are_read_makes_no_other_record_go_missing():
    fake = FakeHubSpot()
    fake.add("contacts", {"lifecyclestage": "lead"})
    sync(fake)
    changed = [
        fake.add(
            "contacts",
            {"lifecyclestage": "lead"},
            updated_at=BASE_TIME + timedelta(days=1, seconds=n),
        )
        for n in range(300)
    ]
    searches = []

    def handler(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        if request.url.path.endswith("/contacts/search"):
            searches.append(request)
            if len(searches) == 1:  # someone edits a record we just read: it leaves the range
                fake.touch("contacts", changed[5], at=datetime.now(UTC), lifecyclestage="customer")
        return response

    run = sync(handler)

    assert run.status == "succeeded", run.error
    held_ids = set(
        CrmRecord.objects.filter(object_type="contacts").values_list("hubspot_id", flat=True)
    )
    assert set(changed) <= held_ids
    assert "2 search window(s)" in step_log(run, "contacts: fetch")


def test_a_429_from_the_ten_second_limit_waits_the_interval_and_the_run_completes(customers):
    clock = Clock()
    fake = account(ten_secondly=3, clock=clock)

    run = sync(fake, clock)

    assert run.status == "succeeded", run.error
    assert fake.rate_limited == ["TEN_SECONDLY_ROLLING"]
    assert clock.sleeps == [10.0]  # X-HubSpot-RateLimit-Interval-Milliseconds: 10000
    assert CrmRecord.objects.count() == 8
    assert "10.0 s spent waiting on rate limits and retries" in step_log(run, "contacts: fetch")


def test_a_429_from_the_search_limit_waits_a_second_and_the_run_completes():
    clock = Clock()
    fake = FakeHubSpot(searches_per_second=2, clock=clock)
    fake.add("contacts", {"lifecyclestage": "lead"})
    sync(fake, clock)
    for n in range(500):
        fake.add(
            "contacts",
            {"lifecyclestage": "lead"},
            updated_at=BASE_TIME + timedelta(days=1, seconds=n),
        )

    run = sync(fake, clock)

    assert run.status == "succeeded", run.error
    assert fake.rate_limited == ["SECONDLY"]  # the third of three pages in one second
    assert clock.sleeps == [1.0]
    assert CrmRecord.objects.filter(object_type="contacts").count() == 501


def test_the_daily_limit_fails_the_run_at_once_without_retrying_and_alerts(customers):
    clock = Clock()
    fake = account(daily=2, clock=clock)

    run = sync(fake, clock)

    assert run.status == "failed"
    assert run.error == (
        "hubspot: GET /crm/v3/objects/contacts answered 429: the daily API limit is reached; "
        "HubSpot resets it at midnight in the account's time zone"
    )
    assert len(fake.requests) == 3 and clock.sleeps == []
    assert run.alerted and mail.outbox[0].subject.startswith("[abaco] daily_ingest failed")
    assert CrmRecord.objects.filter(object_type="contacts").count() == 0


def test_5xx_until_the_retries_run_out_fails_the_run_and_sends_an_alert(customers):
    clock = Clock()
    fake = account()
    fake.fail(503, times=10)

    run = sync(fake, clock)

    assert run.status == "failed"
    assert run.error.startswith(
        "hubspot: gave up after 3 attempts; last: GET /crm/v3/objects/companies answered 503"
    )
    assert len(fake.requests) == 3
    assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0  # backoff with jitter
    assert run.alerted and "gave up after 3 attempts" in mail.outbox[0].body
    assert CrmRecord.objects.count() == 0
    assert not Batch.objects.filter(source="hubspot").exists()


def test_timeouts_are_retried_and_the_run_completes(customers):
    clock = Clock()
    fake = account()
    fake.fail(httpx.ReadTimeout, times=2)

    run = sync(fake, clock)

    assert run.status == "succeeded", run.error
    assert len(clock.sleeps) == 2
    assert CrmRecord.objects.count() == 8


def test_a_timeout_on_every_attempt_fails_the_run_naming_the_timeout(customers):
    fake = account()
    fake.fail(httpx.ConnectTimeout, times=3)

    run = sync(fake)

    assert run.status == "failed"
    assert run.error == (
        "hubspot: gave up after 3 attempts; last: GET /crm/v3/objects/companies: ConnectTimeout"
    )
    assert run.alerted


@pytest.mark.parametrize(
    ("page", "error"),
    [
        ({"paging": {}}, "has no results list"),
        (
            {"results": [{"properties": {}, "updatedAt": "2025-03-03T08:00:00Z"}]},
            "result 1: has no id",
        ),
        (
            {"results": [{"id": "7", "properties": {}, "updatedAt": "last tuesday"}]},
            "result 1: record 7 has no valid updatedAt",
        ),
        (
            {
                "results": [
                    {"id": "7", "properties": {"name": 12}, "updatedAt": "2025-03-03T08:00:00Z"}
                ]
            },
            "result 1: record 7 property name is not text",
        ),
        (
            {"results": [], "paging": {"next": {"link": "?after="}}},
            "paging.next has no after cursor",
        ),
        ("<html>Bad gateway</html>", "the response is not JSON"),
    ],
    ids=["no-results", "no-id", "bad-date", "number-property", "no-cursor", "html"],
)
def test_a_malformed_page_fails_the_run_with_a_clear_error_and_writes_nothing(page, error):
    fake = FakeHubSpot()
    for n in range(150):
        fake.add("companies", {"name": f"Company {n}"})
    lists = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/crm/v3/objects/companies":
            lists.append(request)
            if len(lists) == 2:  # the second page; the first was fine
                return httpx.Response(
                    200, **({"text": page} if isinstance(page, str) else {"json": page})
                )
        return fake(request)

    run = sync(handler)

    assert run.status == "failed"
    assert run.error.startswith("hubspot: GET /crm/v3/objects/companies")
    assert error in run.error
    assert CrmRecord.objects.count() == 0
    assert not Batch.objects.filter(source="hubspot").exists()
    assert run.alerted


def test_an_identical_re_run_writes_nothing_and_a_third_one_recognizes_the_same_raw_records(
    customers,
):
    fake = account()
    sync(fake)
    before = snapshot()
    sectors = list(Customer.objects.order_by("pk").values_list("sector", "size"))

    again = sync(fake)

    assert again.status == "succeeded", again.error
    assert snapshot() == before  # not even synced_at or the batch moved
    assert list(Customer.objects.order_by("pk").values_list("sector", "size")) == sectors
    # The newest record of each type is read again (changes are searched from its instant on).
    assert "1 read, 0 inserted, 0 updated, 1 unchanged" in step_log(again, "contacts: load")
    assert again.steps.get(name="link customers").rows_out == 0
    assert again.steps.get(name="sector and size").rows_out == 0

    third = sync(fake)
    assert "the same records as batch" in step_log(third, "contacts: load")
    assert snapshot() == before


def test_records_archived_in_hubspot_are_marked_archived():
    fake = FakeHubSpot()
    gone = fake.add("contacts", {"lifecyclestage": "lead"}, archived=True)
    later = fake.add("contacts", {"lifecyclestage": "lead"})
    sync(fake)
    fake.archive("contacts", later, at=BASE_TIME + timedelta(days=2))

    run = sync(fake)

    assert run.status == "succeeded", run.error
    assert {c.hubspot_id: c.archived for c in held("contacts")} == {gone: True, later: True}


def test_a_customer_loaded_after_its_company_is_linked_and_sized_on_the_next_run():
    fake = account()
    sync(fake)
    assert CrmRecord.objects.filter(customer__isnull=False).count() == 0
    customer = customer_create(customer_id="C-200")

    run = sync(fake)

    assert run.steps.get(name="link customers").rows_out == 1
    customer.refresh_from_db()
    assert (customer.sector, customer.size) == ("Retail", "medium")


def test_the_token_never_reaches_logs_errors_alerts_or_raw_files(customers, caplog):
    fake = account()
    echo = lambda request: httpx.Response(  # noqa: E731 - a proxy that echoes what it was sent
        502, text=f"bad gateway for {request.headers['Authorization']}"
    )
    sync(fake)  # raw files exist
    fake.fail(echo, times=3)

    with caplog.at_level(logging.DEBUG):
        run = sync(fake)

    assert run.status == "failed"
    assert "bad gateway for Bearer [secret]" in run.error
    texts = [
        run.error,
        *run.steps.values_list("error", flat=True),
        *run.steps.values_list("log", flat=True),
    ]
    texts += [str(record.__dict__) for record in caplog.records]
    texts += [m.body for m in mail.outbox]
    texts += [b.file.read().decode() for b in Batch.objects.filter(source="hubspot")]
    assert not [t for t in texts if TOKEN in t]


def test_a_run_over_real_http_against_the_served_fake_loads_everything(settings, customers):
    fake = account()
    with serve(fake) as url:
        settings.HUBSPOT_BASE_URL = url
        run = pipeline_run(
            name="daily_ingest", trigger=PipelineRun.Trigger.COMMAND, sleep=Clock().sleep
        )

    assert run.status == "succeeded", run.error
    assert CrmRecord.objects.count() == 8
    assert Customer.objects.get(customer_id="C-100").sector == "Financial services"


@pytest.mark.parametrize(
    ("employees", "revenue", "band"),
    [
        ("9", None, "micro"),
        ("10", "900000000", "small"),  # the headcount decides when there is one
        ("249", None, "medium"),
        ("250", None, "large"),
        (None, "2000000", "micro"),
        ("0", "2000000.01", "small"),  # no headcount: revenue decides
        (None, "50000000", "medium"),
        ("", "1.2E8", "large"),
        ("many", "n/a", ""),
        (None, None, ""),
    ],
)
def test_the_size_band_follows_the_eu_sme_thresholds(employees, revenue, band):
    assert size_band(employees, revenue) == band


def test_hubspot_instants_are_read_as_aware_utc_whether_iso_text_or_epoch_millis():
    moment = datetime(2025, 3, 3, 8, 0, 0, 123000, tzinfo=UTC)
    assert hubspot_client.instant(iso(moment)) == moment
    assert hubspot_client.instant(millis(moment)) == moment
    assert hubspot_client.instant(int(millis(moment))) == moment
    assert hubspot_client.instant("2025-03-03T09:00:00.123+01:00") == moment


def busiest_window(limiter: RateLimiter, clock: Clock, *, requests: int) -> int:
    """The most requests HubSpot sees arrive within 10 s, each going and coming back at random
    speed (under the 0.1 s between requests, as on a good link)."""
    jitter = random.Random(6)
    arrivals = []
    for _ in range(requests):
        limiter.acquire(clock.sleep)
        there, back = jitter.uniform(0.001, 0.04), jitter.uniform(0.001, 0.04)
        arrivals.append(clock.now + there)
        clock.now += there + back
    arrivals.sort()
    return max(n + 1 - bisect_right(arrivals, at - 10) for n, at in enumerate(arrivals))


def test_pacing_never_lets_hubspot_see_more_than_100_requests_in_10_s_whatever_the_jitter():
    paced = Clock()
    started = paced.now
    assert busiest_window(RollingLimiter(10, 10.0, clock=paced), paced, requests=1_000) == 100
    assert paced.now - started < 101  # the rate limit's floor for 1,000 requests is 99.9 s
    # Spacing alone at the same rate lets a 101st request into some window: a 429 and 10 s lost.
    plain = Clock()
    assert busiest_window(RateLimiter(10, burst=1, clock=plain), plain, requests=1_000) > 100
