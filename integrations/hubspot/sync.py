"""The ``daily_ingest`` job: HubSpot contacts, companies and deals, then customer sector, size and
segments (docs/design.md, "Scheduled work"; docs/integrations.md, "HubSpot").

Each object type (companies, contacts, deals) runs two steps:

- ``<type>: fetch``: with nothing held yet, every record through the list endpoint; afterwards only
  what changed, through the search endpoint, from the newest modification held (or from the start
  of the previous fetch if that is earlier: a listing that ran while records changed may have read
  one before its change) up to ``SEARCH_LAG`` ago. Archived records are listed on every run, so
  records deleted in HubSpot are marked archived here. The step counts the records read and
  the properties HubSpot sent (a full listing is quality-checked against the previous fetch).
- ``<type>: load``: the records exactly as HubSpot sent them kept raw (one JSON line each, a
  ``Batch`` of kind CRM), then upserted by (type, id) in set-based statements that write only the
  rows whose properties, modification instant or archived flag changed, never going back to an
  older version.

Then ``link customers`` (every record whose customer-id property names one of our customers points
at it), ``sector and size`` (each linked customer's sector and size band from its most recently
modified company) and ``segments`` (behavioural segments, ``loans.segments``).

Only the configured properties are asked for. Contacts' names, e-mails and phones are not among
the defaults: nothing here needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.db.models.fields.json import KT
from django.utils import timezone

from integrations.hubspot.client import CrmObject, HubSpotClient, WindowStalled
from integrations.models import CrmRecord, PipelineRun, PipelineStep
from integrations.pipelines import RunContext, raw_land
from loans.lineage import LoadTally, Problem, batch_finish
from loans.models import Batch, Customer
from loans.segments import customer_segments_refresh

OBJECT_TYPES = ["companies", "contacts", "deals"]
PROPERTY_SETTINGS = {
    "companies": "HUBSPOT_COMPANY_PROPERTIES",
    "contacts": "HUBSPOT_CONTACT_PROPERTIES",
    "deals": "HUBSPOT_DEAL_PROPERTIES",
}
EMPLOYEES, REVENUE = "numberofemployees", "annualrevenue"  # HubSpot's own company properties
# HubSpot indexes changes for search a little after they happen; reading only up to a few
# minutes ago means a change is never missed for being not yet searchable. The next run reads it.
SEARCH_LAG = timedelta(minutes=5)
UPSERT_CHUNK = 5_000

# Size bands by the EU SME definition (Commission Recommendation 2003/361/EC): fewer than 10
# employees is micro, fewer than 50 small, fewer than 250 medium, the rest large. Without a
# headcount, annual revenue (read in USD) up to 2, 10 and 50 million decides.
EMPLOYEE_BANDS = [(10, "micro"), (50, "small"), (250, "medium")]
REVENUE_BANDS = [
    (Decimal(2_000_000), "micro"),
    (Decimal(10_000_000), "small"),
    (Decimal(50_000_000), "medium"),
]

UPSERT_SQL = """
INSERT INTO integrations_crmrecord AS held
    (object_type, hubspot_id, properties, hubspot_updated_at, archived, batch_id, synced_at)
SELECT %(object_type)s, r.hubspot_id, r.properties, r.hubspot_updated_at, r.archived,
       %(batch)s, %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
    AS r(hubspot_id text, properties jsonb, hubspot_updated_at timestamptz, archived boolean)
ON CONFLICT (object_type, hubspot_id) DO UPDATE SET
    properties = EXCLUDED.properties,
    hubspot_updated_at = EXCLUDED.hubspot_updated_at,
    archived = EXCLUDED.archived,
    batch_id = EXCLUDED.batch_id,
    synced_at = EXCLUDED.synced_at
WHERE (held.properties, held.hubspot_updated_at, held.archived)
      IS DISTINCT FROM (EXCLUDED.properties, EXCLUDED.hubspot_updated_at, EXCLUDED.archived)
  AND EXCLUDED.hubspot_updated_at >= held.hubspot_updated_at  -- never back to an older version
RETURNING xmax = 0 AS inserted
"""

# Customers can arrive after their CRM records (the tape loads separately), so every record is
# re-linked each run; only links that change are written.
LINK_SQL = """
UPDATE integrations_crmrecord AS r SET customer_id = m.customer_pk
FROM (
    SELECT held.id, c.id AS customer_pk
    FROM integrations_crmrecord held
    LEFT JOIN loans_customer c ON c.customer_id = btrim(held.properties ->> %(property)s)
) AS m
WHERE m.id = r.id AND r.customer_id IS DISTINCT FROM m.customer_pk
"""

# Customers without a linked company lose a sector and size they no longer have a source for.
SECTOR_SIZE_SQL = """
UPDATE loans_customer AS c SET sector = w.sector, size = w.size
FROM (
    SELECT held.id, coalesce(s.sector, '') AS sector, coalesce(s.size, '') AS size
    FROM loans_customer held
    LEFT JOIN jsonb_to_recordset(%(rows)s::jsonb) AS s(id bigint, sector text, size text)
        ON s.id = held.id
) AS w
WHERE w.id = c.id AND (c.sector, c.size) IS DISTINCT FROM (w.sector, w.size)
"""


@dataclass
class Fetched:
    """One object type's records from one run: raw lines to keep, rows to upsert."""

    object_type: str
    properties: list[str]
    full: bool = False  # every record was listed (not only changes)
    lines: list[str] = field(default_factory=list)  # as HubSpot sent them, one JSON record a line
    rows: dict[str, str] = field(default_factory=dict)  # hubspot id -> row to upsert, as JSON
    returned: set[str] = field(default_factory=set)  # the asked-for properties HubSpot sent
    archived: int = 0

    def add(self, objects: list[CrmObject]) -> None:
        for obj in objects:
            self.lines.append(json.dumps(obj.raw, ensure_ascii=False, separators=(",", ":")))
            self.rows[obj.id] = json.dumps(
                {
                    "hubspot_id": obj.id,
                    "properties": obj.properties,
                    "hubspot_updated_at": obj.updated_at.isoformat(),
                    "archived": obj.archived,
                }
            )
            self.returned.update(obj.properties)
            self.archived += obj.archived

    def content(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def hubspot_ingest(ctx: RunContext) -> None:
    """The ``daily_ingest`` pipeline (``integrations.pipelines.PIPELINES``)."""
    with HubSpotClient.from_settings(transport=ctx.transport, sleep=ctx.sleep) as client:
        for object_type in OBJECT_TYPES:
            _load(ctx, _fetch(ctx, client, object_type))
    _link(ctx)
    _sector_size(ctx)
    with ctx.step("segments") as step:
        step.rows_out = customer_segments_refresh(as_of=ctx.for_date)
        step.log(f"{step.rows_out:,} customers changed segment at {ctx.for_date}")


def properties_for(object_type: str) -> list[str]:
    """The properties asked for: the configured ones, the customer id and what sizing reads."""
    names = set(getattr(settings, PROPERTY_SETTINGS[object_type]))
    names.add(settings.HUBSPOT_CUSTOMER_ID_PROPERTY)
    if object_type == CrmRecord.ObjectType.COMPANY:
        names.update([_sector_property(), EMPLOYEES, REVENUE])
    return sorted(names)


def _sector_property() -> str:
    return settings.HUBSPOT_SECTOR_PROPERTY


def _since(job: str, object_type: str) -> datetime | None:
    """Where this run's changes start; None when nothing is held (list everything)."""
    newest = CrmRecord.objects.filter(object_type=object_type).aggregate(
        at=Max("hubspot_updated_at")
    )
    if newest["at"] is None:
        return None
    previous = PipelineStep.objects.filter(
        run__job=job, name=f"{object_type}: fetch", status=PipelineRun.Status.SUCCEEDED
    ).aggregate(at=Max("started_at"))
    if previous["at"] is None:
        return newest["at"]
    return min(newest["at"], previous["at"] - SEARCH_LAG)


def _fetch(ctx: RunContext, client: HubSpotClient, object_type: str) -> Fetched:
    fetched = Fetched(object_type, properties_for(object_type))
    with ctx.step(f"{object_type}: fetch") as step:
        requests, waited = client.session.requests_made, client.session.waited
        since = _since(ctx.run.job, object_type)
        if since is None:
            step.log("nothing held yet: listing every record")
            fetched.full = True
        else:
            until = timezone.now() - SEARCH_LAG
            step.log(f"changes from {since.isoformat()} to {until.isoformat()}")
            windows = client.windows
            try:
                for objects in client.changed(
                    object_type, properties=fetched.properties, since=since, until=until
                ):
                    fetched.add(objects)
                step.log(f"{client.windows - windows} search window(s)")
            except WindowStalled as exc:
                step.log(f"{exc}: listing every record instead")
                fetched.full = True
        if fetched.full:
            for objects in client.listed(object_type, properties=fetched.properties):
                fetched.add(objects)
        for objects in client.listed(object_type, properties=fetched.properties, archived=True):
            fetched.add(objects)
        step.rows_in, step.columns = len(fetched.rows), sorted(fetched.returned)
        step.log(
            f"{len(fetched.rows):,} records ({fetched.archived:,} archived) in "
            f"{client.session.requests_made - requests:,} requests; "
            f"{client.session.waited - waited:.1f} s spent waiting on rate limits and retries"
        )
        # Only a full listing is checked: a day's number of changes rises and falls on its own,
        # and comparing it with the day before would alert for nothing.
        if fetched.full:
            ctx.quality_check(step)
    return fetched


def _load(ctx: RunContext, fetched: Fetched) -> None:
    """Keep the records raw, then upsert them. Bytes loaded before make a duplicate batch, but
    are still compared with what is held (and rows they change point at the earlier batch)."""
    object_type = fetched.object_type
    with ctx.step(f"{object_type}: load") as step:
        if not fetched.rows:
            step.log("nothing changed")
            return
        batch = raw_land(
            content=fetched.content(),
            name=f"hubspot-{object_type}-{ctx.for_date.isoformat()}.jsonl",
            source="hubspot",
            kind=Batch.Kind.CRM,
            job=ctx.run.job,
            by=ctx.by,
        )
        duplicate = batch.status == Batch.Status.DUPLICATE
        if duplicate:
            step.log(f"the same records as batch {batch.duplicate_of_id}")
        counts = LoadTally(rows_read=len(fetched.lines))
        try:
            with transaction.atomic():
                _upsert(fetched, batch.duplicate_of if duplicate else batch, counts)
        except Exception as exc:
            if not duplicate:
                counts.problems.append(Problem(batch.original_name, None, "", "", str(exc)))
                batch_finish(batch, status=Batch.Status.FAILED, load=counts)
            raise
        if not duplicate:
            batch.data_through = timezone.localdate()  # the CRM as it stands when fetched
            batch_finish(batch, status=Batch.Status.LOADED, load=counts)
        step.rows_out = counts.inserted + counts.updated  # rows in were counted by the fetch
        step.log(
            f"batch {batch.pk}: {counts.rows_read:,} read, {counts.inserted:,} inserted, "
            f"{counts.updated:,} updated, {counts.unchanged:,} unchanged"
        )


def _upsert(fetched: Fetched, batch: Batch, counts: LoadTally) -> None:
    rows = list(fetched.rows.values())
    now = timezone.now()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_CHUNK):
            cursor.execute(
                UPSERT_SQL,
                {
                    "object_type": fetched.object_type,
                    "batch": batch.pk,
                    "now": now,
                    "rows": "[" + ",".join(rows[start : start + UPSERT_CHUNK]) + "]",
                },
            )
            written = [inserted for (inserted,) in cursor.fetchall()]
            counts.inserted += sum(written)
            counts.updated += len(written) - sum(written)
    counts.unchanged = len(rows) - counts.inserted - counts.updated


def _link(ctx: RunContext) -> None:
    prop = settings.HUBSPOT_CUSTOMER_ID_PROPERTY
    with ctx.step("link customers") as step:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LINK_SQL, {"property": prop})
            step.rows_out = cursor.rowcount
        linked = CrmRecord.objects.filter(customer__isnull=False).count()
        unknown = (
            CrmRecord.objects.filter(customer__isnull=True)
            .annotate(named=KT(f"properties__{prop}"))
            .exclude(named__isnull=True)
            .exclude(named="")
        )
        step.log(f"{linked:,} records linked to customers; {step.rows_out:,} links changed")
        if missing := unknown.values_list("named", flat=True).distinct().count():
            examples = list(
                unknown.values_list("named", flat=True).distinct().order_by("named")[:5]
            )
            step.log(
                f"{missing:,} {prop} values name no customer we hold, e.g. {', '.join(examples)}"
            )


def _sector_size(ctx: RunContext) -> None:
    with ctx.step("sector and size") as step:
        latest = (
            CrmRecord.objects.filter(
                object_type=CrmRecord.ObjectType.COMPANY, archived=False, customer__isnull=False
            )
            .annotate(
                sector=KT(f"properties__{_sector_property()}"),
                employees=KT(f"properties__{EMPLOYEES}"),
                revenue=KT(f"properties__{REVENUE}"),
            )
            .order_by("customer_id", "-hubspot_updated_at", "-pk")
            .distinct("customer_id")  # each customer's most recently modified company
            .values_list("customer_id", "sector", "employees", "revenue")
        )
        rows = [
            {"id": customer, "sector": sector_label(sector), "size": size_band(employees, revenue)}
            for customer, sector, employees, revenue in latest
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(SECTOR_SIZE_SQL, {"rows": json.dumps(rows)})
            step.rows_out = cursor.rowcount
        step.log(
            f"{len(rows):,} customers have a company in HubSpot; "
            f"{step.rows_out:,} changed sector or size"
        )


def sector_label(value: str | None) -> str:
    """A sector as people read it: HubSpot's ``FINANCIAL_SERVICES`` becomes "Financial services";
    free text (a custom property) is kept as written."""
    text = (value or "").strip()
    if text.replace("_", "").isalnum() and text.isupper():
        text = text.replace("_", " ").capitalize()
    return text[: Customer._meta.get_field("sector").max_length]


def size_band(employees: str | None, revenue: str | None) -> str:
    """micro, small, medium or large (``EMPLOYEE_BANDS``, then ``REVENUE_BANDS``); "" if unknown."""
    headcount = _number(employees)
    if headcount is not None and headcount > 0:
        return next((band for limit, band in EMPLOYEE_BANDS if headcount < limit), "large")
    amount = _number(revenue)
    if amount is not None and amount > 0:
        return next((band for limit, band in REVENUE_BANDS if amount <= limit), "large")
    return ""


def _number(text: str | None) -> Decimal | None:
    try:
        value = Decimal((text or "").strip().replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
