"""HubSpot sync (issue 6, scheduled ingestion): a first, full ``daily_ingest`` run of 100,000
contacts and 2,000 companies from the local fake HubSpot served over real HTTP, with HubSpot's
own limits on (100 requests per rolling 10 s, the Free/Starter private-app limit) and our client
paced by ``HUBSPOT_RATE_PER_SECOND``.

Target: the time is set by the provider's rate limit, not by our code. The floor is the requests
made divided by the rate; what the run takes beyond it is ours (parsing, raw files, upserts).
"""

from __future__ import annotations

import tempfile
import time

from django.conf import settings
from django.test import override_settings

from integrations.models import CrmRecord, PipelineRun
from integrations.pipelines import pipeline_run
from loans.models import Batch, Customer
from tests.integrations.fakes.hubspot import TOKEN, FakeHubSpot
from tests.integrations.fakes.server import serve

HUBSPOT_STEPS = ("fetch", "load", "link customers", "sector and size")


def account(*, contacts: int, companies: int, customer_ids: list[str]) -> FakeHubSpot:
    fake = FakeHubSpot(ten_secondly=100, searches_per_second=5, daily=1_000_000)
    industries = ["FINANCIAL_SERVICES", "RETAIL", "WHOLESALE", "CONSTRUCTION", "FOOD_PRODUCTION"]
    for n in range(companies):
        fake.add(
            "companies",
            {
                "name": f"Company {n}",
                "domain": f"company-{n}.example",
                "industry": industries[n % len(industries)],
                "numberofemployees": str(5 + n % 400),
                "annualrevenue": str(250_000 + 1_000 * n),
                "abaco_customer_id": customer_ids[n] if n < len(customer_ids) else None,
            },
        )
    for n in range(contacts):
        fake.add(
            "contacts",
            {
                "lifecyclestage": ["lead", "opportunity", "customer"][n % 3],
                "hs_lead_status": "OPEN",
                "hs_analytics_source": "PAID_SOCIAL",
                "abaco_customer_id": customer_ids[n % len(customer_ids)]
                if customer_ids and n % 50 == 0
                else None,
            },
        )
    return fake


def run(*, contacts: int = 100_000, companies: int = 2_000) -> None:
    # A first sync each time: nothing held, and no earlier raw batch with the same bytes.
    CrmRecord.objects.all().delete()
    Batch.objects.filter(source="hubspot").delete()
    PipelineRun.objects.filter(job="daily_ingest").delete()
    if not Customer.objects.exists():  # a fresh database: customers for the companies to name
        batch = Batch.objects.create(source="bench", kind=Batch.Kind.CUSTOMERS, sha256="0" * 64)
        Customer.objects.bulk_create(
            Customer(customer_id=f"BENCH-{n:05d}", batch=batch) for n in range(companies)
        )
    customer_ids = list(
        Customer.objects.order_by("pk").values_list("customer_id", flat=True)[:companies]
    )
    started = time.perf_counter()
    fake = account(contacts=contacts, companies=companies, customer_ids=customer_ids)
    print(
        f"hubspot_sync: {contacts:,} contacts, {companies:,} companies ({len(customer_ids):,} "
        f"naming a customer) built in the fake in {time.perf_counter() - started:.1f} s"
    )
    rate = settings.HUBSPOT_RATE_PER_SECOND
    with (
        tempfile.TemporaryDirectory() as media,
        serve(fake) as url,
        override_settings(
            HUBSPOT_ENABLED=True, HUBSPOT_TOKEN=TOKEN, HUBSPOT_BASE_URL=url, MEDIA_ROOT=media
        ),
    ):
        started = time.perf_counter()
        result = pipeline_run(name="daily_ingest", trigger=PipelineRun.Trigger.COMMAND)
        wall = time.perf_counter() - started
    if result.status != PipelineRun.Status.SUCCEEDED:
        print(f"hubspot_sync: the run {result.status}: {result.error}")
        return
    steps = list(result.steps.all())
    hubspot = sum(s.duration_ms for s in steps if s.name.endswith(HUBSPOT_STEPS)) / 1000
    requests = len(fake.requests)
    floor = (requests - 1) / rate
    print(
        f"requests: {requests:,} served ({len(fake.rate_limited)} answered 429); the fake allows "
        f"{fake.ten_secondly} per rolling 10 s, our client is paced at {rate:g}/s"
    )
    print(
        f"HubSpot steps: {hubspot:.1f} s against a floor of {floor:.1f} s at the rate limit "
        f"({requests:,} requests / {rate:g} per s): {hubspot - floor:+.1f} s ours "
        f"({(hubspot - floor) / floor:+.1%}); whole run with segments {wall:.1f} s"
    )
    print(
        f"held: {CrmRecord.objects.filter(object_type='contacts').count():,} contacts, "
        f"{CrmRecord.objects.filter(customer__isnull=False).count():,} records linked"
    )
    print("  " + "; ".join(f"{s.name} {s.duration_ms / 1000:.1f} s" for s in steps))
