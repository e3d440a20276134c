"""The ``meta_ingest`` pipeline: Meta ad insights per campaign and day, rolled up to marketing spend.

Steps: **fetch** (or **fetch report run** for long windows) → **land raw** → **load**.

- Window: from the day after the last date held for the ad account, less ``META_LOOKBACK_DAYS``
  (Meta revises the last few days' spend as late conversions and billing settle), through the
  run's date. The first run has nothing held and reaches back 90 days, rounded down to the first
  of that month, so that every month it rolls up is whole. A re-run for an older date fetches
  the lookback days ending on that date. Windows longer than ``META_ASYNC_AFTER_DAYS`` go
  through an asynchronous report run (Meta's advice for large reads).
- Land raw: the pages exactly as received, one per line, as one ``marketing_spend`` batch from
  source ``meta``. The same bytes fetched again make a duplicate batch (no second file); they are
  still compared with what is held, as a revision Meta made and undid would otherwise stick.
- Load, in one transaction: upsert ``AdInsight`` rows by (account, date, campaign) — rows that did
  not change keep their batch — then recompute each touched month's ``MarketingSpend`` row
  (channel ``meta``, no segment) as the sum of all ``AdInsight`` spend of that month. Re-runs and
  Meta's late revisions therefore converge on the same totals; the month's ``meta`` row belongs to
  this job from then on (an uploaded ``meta`` figure for that month is replaced). A payload with
  any bad row loads nothing: the batch is marked failed with each problem listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Sum
from django.db.models.functions import TruncMonth
from psycopg import sql

from integrations.http import PayloadError
from integrations.meta.client import CENT, PROVIDER, Fetch, Insight, MetaClient, insights_parse
from integrations.meta.client import account_path as meta_account
from integrations.models import AdInsight
from integrations.pipelines import RunContext, error_text, raw_land
from loans.lineage import LoadTally, Problem, batch_finish
from loans.models import Batch, MarketingSpend

CHANNEL = "meta"
FIRST_RUN_DAYS = 90


class MixedCurrencies(Exception):
    """A month's Meta spend is in more than one currency: it cannot be one marketing-spend row."""


@dataclass
class InsightsLoad(LoadTally):
    """What one load counted, and the months it rolled up."""

    months: list[str] = field(default_factory=list)  # "2025-05: 1,234.56 USD (updated)"


def insights_window(*, account_id: str, until: date) -> tuple[date, date]:
    """The days to fetch for a run dated ``until`` (see the module docstring)."""
    held = AdInsight.objects.filter(account_id=account_id).aggregate(last=Max("date"))["last"]
    if held is None:
        return (until - timedelta(days=FIRST_RUN_DAYS - 1)).replace(day=1), until
    since = min(held, until) + timedelta(days=1 - settings.META_LOOKBACK_DAYS)
    return min(since, until), until


def meta_ingest(ctx: RunContext) -> None:
    account_id = meta_account(settings.META_AD_ACCOUNT_ID)
    since, until = insights_window(account_id=account_id, until=ctx.for_date)
    with MetaClient(transport=ctx.transport, sleep=ctx.sleep) as client:
        report = client.uses_report_run(since, until)
        with ctx.step("fetch report run" if report else "fetch") as step:
            fetch = client.insights_fetch(since=since, until=until)
            step.rows_in, step.columns = fetch.rows_read, fetch.columns
            how = f"report run {fetch.report_run_id}" if report else "paged GET"
            step.log(
                f"{account_id} {since} to {until} ({(until - since).days + 1} days, {how}): "
                f"{fetch.rows_read:,} rows in {len(fetch.pages)} page(s), "
                f"{client.session.requests_made} request(s), waited "
                f"{client.session.waited + client.polled:.1f} s"
            )
            ctx.quality_check(step)
    with ctx.step("land raw") as step:
        batch = raw_land(
            content=fetch.raw,
            name=fetch.name,
            source=PROVIDER,
            kind=Batch.Kind.MARKETING_SPEND,
            job=ctx.run.job,
            by=ctx.by,
        )
        step.log(f"{batch.original_name}: {batch.size:,} bytes as batch {batch.pk}")
        if batch.status == Batch.Status.DUPLICATE:
            step.log(f"same bytes as batch {batch.duplicate_of_id}: checked against what is held")
    with ctx.step("load") as step:
        load = insights_load(fetch=fetch, batch=batch)
        step.rows_out = load.inserted + load.updated  # rows in were counted by the fetch
        step.log(
            f"{load.rows_read:,} rows: {load.inserted:,} inserted, {load.updated:,} updated, "
            f"{load.unchanged:,} unchanged"
        )
        for month in load.months:
            step.log(f"marketing spend {month}")


def insights_load(*, fetch: Fetch, batch: Batch) -> InsightsLoad:
    """Check every row, then write them and the touched months' totals, all or nothing; closes
    ``batch`` as loaded or failed.

    A duplicate batch (bytes loaded before) is still compared with what is held, so a revision
    Meta undid comes back; rows it changes point at the batch that holds those bytes.
    """
    duplicate = batch.status == Batch.Status.DUPLICATE
    owner = batch.duplicate_of if duplicate else batch

    def close(status: str) -> None:
        if not duplicate:
            batch_finish(batch, status=status, load=load)

    parsed = insights_parse(fetch)
    load = InsightsLoad(
        rows_read=fetch.rows_read, rejected=parsed.rejected, problems=parsed.problems
    )
    if parsed.errors:
        close(Batch.Status.FAILED)
        shown = "; ".join(str(p) for p in parsed.errors[:5])
        more = f" (and {len(parsed.errors) - 5} more)" if len(parsed.errors) > 5 else ""
        raise PayloadError(
            PROVIDER,
            f"the insights payload was refused, nothing was written: "
            f"{len(parsed.errors)} bad row(s): {shown}{more}",
        )
    try:
        with transaction.atomic():
            load.inserted, load.updated = adinsights_upsert(parsed.rows, batch=owner)
            load.unchanged = len(parsed.rows) - load.inserted - load.updated
            load.months = marketing_spend_roll_up(since=fetch.since, until=fetch.until, batch=owner)
            close(Batch.Status.LOADED)
    except Exception as exc:
        load.problems.append(Problem(batch.original_name, None, "", "", error_text(exc)))
        close(Batch.Status.FAILED)
        raise
    return load


_UPSERT = """
INSERT INTO {table} AS cur
    (account_id, "date", campaign_id, campaign_name, spend, currency, impressions, clicks,
     actions, batch_id, updated_at)
SELECT *, now() FROM unnest(
    %s::varchar[], %s::date[], %s::varchar[], %s::varchar[], %s::numeric[], %s::varchar[],
    %s::bigint[], %s::bigint[], %s::jsonb[], %s::bigint[])
ON CONFLICT (account_id, "date", campaign_id) DO UPDATE SET
    campaign_name = EXCLUDED.campaign_name, spend = EXCLUDED.spend,
    currency = EXCLUDED.currency, impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks,
    actions = EXCLUDED.actions, batch_id = EXCLUDED.batch_id, updated_at = EXCLUDED.updated_at
WHERE (cur.campaign_name, cur.spend, cur.currency, cur.impressions, cur.clicks, cur.actions)
    IS DISTINCT FROM (EXCLUDED.campaign_name, EXCLUDED.spend, EXCLUDED.currency,
                      EXCLUDED.impressions, EXCLUDED.clicks, EXCLUDED.actions)
RETURNING (xmax = 0)
"""


def adinsights_upsert(rows: list[Insight], *, batch: Batch) -> tuple[int, int]:
    """One statement for all rows: new keys inserted, changed rows updated, identical rows left
    alone (their batch too). Returns (inserted, updated)."""
    if not rows:
        return 0, 0
    columns = [
        [r.account_id for r in rows],
        [r.date for r in rows],
        [r.campaign_id for r in rows],
        [r.campaign_name for r in rows],
        [r.spend for r in rows],
        [r.currency for r in rows],
        [r.impressions for r in rows],
        [r.clicks for r in rows],
        [json.dumps(r.actions, sort_keys=True) for r in rows],
        [batch.pk] * len(rows),
    ]
    query = sql.SQL(_UPSERT).format(table=sql.Identifier(AdInsight._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(query, columns)
        written = [inserted for (inserted,) in cursor.fetchall()]
    return sum(written), len(written) - sum(written)


def _month_after(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def marketing_spend_roll_up(*, since: date, until: date, batch: Batch) -> list[str]:
    """Set each touched month's ``meta`` marketing spend to the sum of its ``AdInsight`` spend
    (every account); returns one line per month for the run's log."""
    totals: dict[date, dict[str, object]] = {}
    for row in (
        AdInsight.objects.filter(date__gte=since.replace(day=1), date__lt=_month_after(until))
        .annotate(month=TruncMonth("date"))
        .values("month", "currency")
        .annotate(spend=Sum("spend"))
        .order_by("month", "currency")
    ):
        totals.setdefault(row["month"], {})[row["currency"]] = row["spend"]
    existing = {
        s.month: s
        for s in MarketingSpend.objects.filter(channel=CHANNEL, segment="", month__in=list(totals))
    }
    lines, to_write = [], []
    for month, by_currency in sorted(totals.items()):
        if len(by_currency) > 1:
            raise MixedCurrencies(
                f"{month:%Y-%m}: Meta spend is in {', '.join(sorted(by_currency))}; "
                "one marketing-spend row holds one currency"
            )
        ((currency, spend),) = by_currency.items()
        spend = spend.quantize(CENT, rounding=ROUND_HALF_UP)
        current = existing.get(month)
        if current and (current.spend, current.currency) == (spend, currency):
            lines.append(f"{month:%Y-%m}: {spend:,} {currency} (unchanged)")
            continue
        lines.append(f"{month:%Y-%m}: {spend:,} {currency} ({'updated' if current else 'new'})")
        to_write.append(
            MarketingSpend(
                month=month,
                channel=CHANNEL,
                segment="",
                spend=spend,
                currency=currency,
                batch=batch,
            )
        )
    MarketingSpend.objects.bulk_create(
        to_write,
        update_conflicts=True,
        unique_fields=["month", "channel", "segment"],
        update_fields=["spend", "currency", "batch", "updated_at"],
    )
    return lines
