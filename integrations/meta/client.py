"""Meta Marketing API: daily spend and delivery per campaign of one ad account.

What this follows (Graph API version from ``META_GRAPH_VERSION``):

- Insights edge, parameters and row fields — ``GET /<version>/act_<id>/insights`` with
  ``level=campaign``, ``time_increment=1``, ``time_range={"since","until"}``, ``fields`` and
  ``limit``; numbers arrive as strings (``"spend": "5339.5"``):
  https://developers.facebook.com/docs/marketing-api/insights and
  https://developers.facebook.com/docs/marketing-api/reference/ad-account/insights
- Cursor paging — ``paging.cursors.before/after`` and ``paging.next`` (absent on the last page):
  https://developers.facebook.com/docs/graph-api/results
- Asynchronous report runs for long windows — ``POST .../insights`` answers ``report_run_id``,
  ``GET /<report_run_id>`` answers ``async_status``/``async_percent_completion`` (done only when
  "Job Completed" *and* 100), then ``GET /<report_run_id>/insights`` pages the rows:
  https://developers.facebook.com/docs/marketing-api/insights/best-practices/
- Error envelope ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`` and
  which codes are temporary: https://developers.facebook.com/docs/graph-api/guides/error-handling
  and https://developers.facebook.com/documentation/ads-commerce/marketing-api/insights/error-codes
- Throttling (codes 4, 17, 613, the 80000 series; ``X-Business-Use-Case-Usage`` and
  ``X-App-Usage`` with ``estimated_time_to_regain_access`` in minutes):
  https://developers.facebook.com/docs/marketing-api/overview/rate-limiting and
  https://developers.facebook.com/docs/graph-api/overview/rate-limiting

The token travels as ``Authorization: Bearer``, never in a URL; ``paging.next`` (which Meta may
build with a token in it) is not followed as such: the next page is asked for with the ``after``
cursor and our own parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import httpx
from django.conf import settings

from integrations.http import ApiSession, PayloadError, ProviderError, Verdict, retry_after
from loans.imports.specs import ISO_CURRENCIES
from loans.lineage import Findings, Problem

PROVIDER = "meta"
FIELDS = (
    "campaign_id",
    "campaign_name",
    "spend",
    "impressions",
    "clicks",
    "actions",
    "account_currency",
    "date_start",
    "date_stop",
)
# Meta leaves a metric out of a row when it has no value (no actions that day, say): a missing
# one is not a change of the payload's shape.
OPTIONAL_FIELDS = {"actions", "clicks", "impressions", "campaign_name"}
PAGE_SIZE = 500
MAX_PAGES = 2_000  # a cursor that never ends is a provider bug, not a reason to loop forever
CENT = Decimal("0.01")
MONEY_LIMIT = Decimal(10) ** 16  # numeric(18, 2)
NAME_LENGTH = 255  # AdInsight.campaign_name

# Report runs: first poll after 2 s, doubling to at most 30 s, for at most 30 minutes in all.
POLL_FIRST, POLL_MAX, POLL_BUDGET = 2.0, 30.0, 1800.0
REPORT_ATTEMPTS = 2  # "Job Failed" (-2/2490547, "try again later") gets one fresh run
DONE, FAILED_STATES = "Job Completed", {"Job Failed", "Job Skipped"}

# Codes from the error-handling guide and the rate-limiting pages: 4 app, 17 user, 32 page,
# 341 app limit, 613 ad-account calls, 80000-80099 business-use-case limits (80000 ads_insights,
# 80004 ads_management...). All mean "wait and try again".
THROTTLED = {4, 17, 32, 341, 613}
# 1 "API Unknown" and 2 "API Service" are temporary (2/1504043 "intermittent error")...
TRANSIENT = {1, 2}
# ...except code 2 with these subcodes: invalid breakdowns or custom metrics never heal.
PERMANENT_SUBCODES = {1504041, 1504042}


def account_path(account_id: str) -> str:
    """``act_<id>`` whether the setting was written with the prefix or not."""
    account_id = account_id.strip()
    return account_id if account_id.startswith("act_") else f"act_{account_id}"


def graph_error(response: httpx.Response) -> dict | None:
    """The ``error`` object of a Graph API answer, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _values(tree: object, key: str) -> Iterator[object]:
    if isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                yield value
            else:
                yield from _values(value, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _values(item, key)


def regain_delay(response: httpx.Response) -> float | None:
    """Seconds until Meta lets us back in: the largest ``estimated_time_to_regain_access``
    (minutes) of the usage headers, else ``Retry-After``, else None (back off)."""
    minutes = []
    for header in ("X-Business-Use-Case-Usage", "X-App-Usage"):
        try:
            usage = json.loads(response.headers.get(header, ""))
        except ValueError:
            continue
        minutes += [
            float(v)
            for v in _values(usage, "estimated_time_to_regain_access")
            if isinstance(v, int | float)
        ]
    if minutes and max(minutes) > 0:
        return max(minutes) * 60
    return retry_after(response)


def graph_classify(response: httpx.Response) -> Verdict | None:
    """``ApiSession`` hook: read Meta's error code, whatever HTTP status carried it."""
    if response.is_success:
        return None
    error = graph_error(response)
    if error is None:
        return None  # a proxy's page: 429 and 5xx retry, the rest fail
    code, subcode = error.get("code"), error.get("error_subcode")
    reason = (
        f"{error.get('message', 'no message')} (code {code}"
        + (f", subcode {subcode}" if subcode else "")
        + f", {error.get('type', 'no type')}, fbtrace_id {error.get('fbtrace_id', '-')})"
    )
    if not isinstance(code, int):
        return Verdict(retry=response.status_code >= 500, reason=reason)
    if code in THROTTLED or 80000 <= code <= 80099:
        return Verdict(retry=True, delay=regain_delay(response), reason=f"throttled: {reason}")
    if code in TRANSIENT and subcode not in PERMANENT_SUBCODES:
        return Verdict(retry=True, delay=retry_after(response), reason=reason)
    return Verdict(retry=False, reason=reason)


@dataclass(frozen=True)
class Page:
    """One insights page as Meta sent it, and its rows (numbers kept exact: no floats)."""

    body: bytes
    rows: list


@dataclass
class Fetch:
    account_id: str
    since: date
    until: date
    pages: list[Page] = field(default_factory=list)
    report_run_id: str | None = None  # set when the window went through an async report run

    @property
    def rows_read(self) -> int:
        return sum(len(page.rows) for page in self.pages)

    @property
    def columns(self) -> list[str]:
        seen = {
            key for page in self.pages for row in page.rows if isinstance(row, dict) for key in row
        }
        return sorted(seen | OPTIONAL_FIELDS) if seen else []

    @property
    def name(self) -> str:
        return f"meta-insights-{self.account_id}-{self.since}-{self.until}.jsonl"

    @property
    def raw(self) -> bytes:
        """The pages as received, one per line. JSON holds no raw line break inside a string, so
        dropping line breaks between tokens keeps every value as sent."""
        lines = [page.body.replace(b"\r", b"").replace(b"\n", b"") for page in self.pages]
        return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Insight:
    """One day of one campaign, typed."""

    account_id: str
    date: date
    campaign_id: str
    campaign_name: str
    spend: Decimal
    currency: str
    impressions: int
    clicks: int
    actions: dict[str, int | str]


@dataclass
class Parsed(Findings):
    rows: list[Insight] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: int = 0


class MetaClient:
    def __init__(self, *, transport=None, sleep=None, page_size: int = PAGE_SIZE):
        extra = {"sleep": sleep} if sleep is not None else {}
        self.session = ApiSession(
            provider=PROVIDER,
            base_url=settings.META_GRAPH_URL,
            headers={
                "Authorization": f"Bearer {settings.META_ACCESS_TOKEN}",
                "Accept": "application/json",
            },
            secrets=[settings.META_ACCESS_TOKEN],
            rate=settings.META_RATE_PER_SECOND,
            classify=graph_classify,
            transport=transport,
            **extra,
        )
        self.version = settings.META_GRAPH_VERSION
        self.account_id = account_path(settings.META_AD_ACCOUNT_ID)
        self.page_size = page_size
        self.polled = 0.0  # seconds spent waiting for report runs

    def __enter__(self) -> MetaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    @staticmethod
    def uses_report_run(since: date, until: date) -> bool:
        return (until - since).days + 1 > settings.META_ASYNC_AFTER_DAYS

    def insights_fetch(self, *, since: date, until: date) -> Fetch:
        """Every daily campaign row of ``since``..``until`` (both included)."""
        fetch = Fetch(self.account_id, since, until)
        params = {
            "level": "campaign",
            "time_increment": "1",
            "time_range": json.dumps(
                {"since": since.isoformat(), "until": until.isoformat()}, separators=(",", ":")
            ),
            "fields": ",".join(FIELDS),
            "limit": str(self.page_size),
        }
        edge = f"/{self.version}/{self.account_id}/insights"
        if not self.uses_report_run(since, until):
            fetch.pages = self._pages(edge, params)
            return fetch
        for _ in range(REPORT_ATTEMPTS):
            run_id = self._report_start(edge, params)
            state = self._report_wait(run_id)
            if state.get("async_status") == DONE:
                fetch.report_run_id = run_id
                fetch.pages = self._pages(
                    f"/{self.version}/{run_id}/insights", {"limit": str(self.page_size)}
                )
                return fetch
        detail = state.get("error_message") or state.get("error_user_msg") or ""
        raise ProviderError(
            PROVIDER,
            self.session.scrub(
                f"report run {run_id} ended {state.get('async_status')!r} "
                f"{REPORT_ATTEMPTS} times" + (f": {detail}" if detail else "")
            ),
        )

    def _pages(self, path: str, params: dict[str, str]) -> list[Page]:
        pages: list[Page] = []
        after: str | None = None
        seen: set[str] = set()
        while True:
            query = params | ({"after": after} if after else {})
            response = self.session.request("GET", path, params=query)
            where = f"GET {path} page {len(pages) + 1}"
            try:
                payload = json.loads(response.content, parse_float=Decimal)
            except ValueError as exc:
                raise PayloadError(PROVIDER, f"{where}: the response is not JSON") from exc
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
                raise PayloadError(PROVIDER, f"{where}: no 'data' list in the response")
            pages.append(Page(response.content, payload["data"]))
            paging = payload.get("paging") if isinstance(payload.get("paging"), dict) else {}
            if not paging.get("next"):
                return pages
            cursors = paging.get("cursors") if isinstance(paging.get("cursors"), dict) else {}
            after = cursors.get("after")
            if not isinstance(after, str) or not after:
                raise PayloadError(PROVIDER, f"{where}: paging.next without paging.cursors.after")
            if after in seen or len(pages) >= MAX_PAGES:
                raise PayloadError(PROVIDER, f"{where}: the cursors go round in circles")
            seen.add(after)

    def _report_start(self, edge: str, params: dict[str, str]) -> str:
        answer = self.session.post_json(edge, data=params)
        run_id = answer.get("report_run_id") if isinstance(answer, dict) else None
        if not isinstance(run_id, str | int) or not str(run_id).isdigit():
            raise PayloadError(PROVIDER, f"POST {edge}: no report_run_id in the response")
        return str(run_id)

    def _report_wait(self, run_id: str) -> dict:
        """Poll a report run until it completes or fails; returns its last state."""
        path, delay, waited = f"/{self.version}/{run_id}", POLL_FIRST, 0.0
        while True:
            state = self.session.get_json(path)
            status = state.get("async_status") if isinstance(state, dict) else None
            if not isinstance(status, str):
                raise PayloadError(PROVIDER, f"GET {path}: no async_status in the response")
            percent = state.get("async_percent_completion")
            # "Job Completed" can show before 100 %: the rows are only whole at 100.
            if (status == DONE and percent == 100) or status in FAILED_STATES:
                return state
            if waited >= POLL_BUDGET:
                raise ProviderError(
                    PROVIDER,
                    f"report run {run_id} still {status!r} ({percent} %) after {waited:.0f} s",
                )
            self.session.sleep(delay)
            waited += delay
            self.polled += delay
            delay = min(delay * 2, POLL_MAX)


# ---------------------------------------------------------------------------- parsing


class _Bad(ValueError):
    """A field Meta sent that we cannot take: ``args == (reason, field, value)``."""


def _number(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _Bad("not a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _Bad("not a number") from None
    if not number.is_finite():
        raise _Bad("not a number")
    return number


def _count(value: object) -> int:
    number = _number(value)
    if number != number.to_integral_value() or number < 0:
        raise _Bad("not a whole, non-negative number")
    return int(number)


def _money(value: object) -> Decimal:
    spend = _number(value)
    if spend < 0:
        raise _Bad("negative spend")
    if spend >= MONEY_LIMIT:
        raise _Bad("more than 16 digits before the point")
    return spend.quantize(CENT, rounding=ROUND_HALF_UP)


def _day(value: object) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _Bad("not a YYYY-MM-DD date")


def _campaign_id(value: object) -> str:
    if not isinstance(value, str) or not value.isdigit() or len(value) > 32:
        raise _Bad("not a campaign id (digits)")
    return value


def _currency(value: object) -> str:
    if value not in ISO_CURRENCIES:
        raise _Bad("not an ISO 4217 currency code")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad("not text")
    return value[:NAME_LENGTH]  # names are labels: one longer than the column keeps its start


def _actions(value: object) -> dict[str, int | str]:
    if not isinstance(value, list):
        raise _Bad("not a list of {action_type, value}")
    actions: dict[str, int | str] = {}
    for item in value:
        kind = item.get("action_type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or not kind:
            raise _Bad("an action without action_type")
        number = _number(item.get("value"))
        # Counts are whole; a fractional one (some attribution settings) is kept exact as text.
        actions[kind] = int(number) if number == number.to_integral_value() else str(number)
    return actions


def _insight(row: dict, *, fetch: Fetch) -> Insight:
    def read(name: str, parse, default=None):
        if name not in row:
            if default is None:
                raise _Bad("missing", name, "")
            return default
        try:
            return parse(row[name])
        except _Bad as bad:
            raise _Bad(bad.args[0], name, str(row[name])[:60]) from None

    day = read("date_start", _day)
    if read("date_stop", _day) != day:
        raise _Bad("the row spans several days (time_increment=1 not applied)", "date_stop", "")
    if not fetch.since <= day <= fetch.until:
        raise _Bad(
            f"outside the window asked for, {fetch.since} to {fetch.until}", "date_start", str(day)
        )
    return Insight(
        account_id=fetch.account_id,
        date=day,
        campaign_id=read("campaign_id", _campaign_id),
        campaign_name=read("campaign_name", _name, ""),
        spend=read("spend", _money),
        currency=read("account_currency", _currency),
        impressions=read("impressions", _count, 0),
        clicks=read("clicks", _count, 0),
        actions=read("actions", _actions, {}),
    )


def insights_parse(fetch: Fetch) -> Parsed:
    """Typed rows from the fetched pages, or what is wrong with them: page, row (position in the
    page's ``data``, from 1), field and value."""
    parsed = Parsed()
    first_seen: dict[tuple[date, str], str] = {}
    for number, page in enumerate(fetch.pages, start=1):
        where = f"{fetch.name} page {number}"
        for position, row in enumerate(page.rows, start=1):
            try:
                if not isinstance(row, dict):
                    raise _Bad("not an object", "", str(row)[:60])
                insight = _insight(row, fetch=fetch)
                key = (insight.date, insight.campaign_id)
                if key in first_seen:
                    raise _Bad(
                        f"the same campaign and day again (first at {first_seen[key]})",
                        "campaign_id",
                        insight.campaign_id,
                    )
            except _Bad as bad:
                reason, column, value = (*bad.args, "", "")[:3]
                parsed.problems.append(Problem(where, position, column, value, reason))
                parsed.rejected += 1
                continue
            first_seen[key] = f"page {number}, row {position}"
            parsed.rows.append(insight)
    return parsed
