"""HubSpot CRM v3 through a private app's access token: contacts, companies and deals as typed records.

What this follows, as HubSpot documents it:

- Authentication: the private app's access token as ``Authorization: Bearer <token>``
  (https://developers.hubspot.com/docs/guides/apps/private-apps/overview).
- List, ``GET /crm/v3/objects/{objectType}?limit=&after=&properties=&archived=``: at most 100
  records a page; the next page's cursor is ``paging.next.after`` and the last page has no
  ``paging.next``. Only the properties asked for come back (with ``null`` where a record has no
  value; ones the account does not have are left out) plus a few defaults; ``archived=true``
  lists only archived records
  (https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/basic/get-crm-v3-objects-contacts).
- Search, ``POST /crm/v3/objects/{objectType}/search`` with ``filterGroups``, ``sorts``,
  ``properties``, ``limit`` (at most 200) and ``after``: one query pages through at most 10,000
  results (asking for more answers 400); the endpoints take five requests per second per account
  and their responses carry no rate-limit headers; archived records are never found; date and
  datetime filter values are epoch milliseconds (https://developers.hubspot.com/docs/api/crm/search,
  "Limitations").
- Rate limits (https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details): private
  apps get 100 requests per rolling 10 s (190 on Professional and Enterprise) and a daily
  allowance that resets at midnight in the account's time zone. A 429's JSON body names the limit
  in ``policyName`` (``SECONDLY``, ``TEN_SECONDLY_ROLLING``, ``DAILY``, next to
  ``"errorType": "RATE_LIMIT"``); other responses carry ``X-HubSpot-RateLimit-Daily``,
  ``-Daily-Remaining``, ``-Interval-Milliseconds``, ``-Max``, ``-Remaining``, ``-Secondly`` and
  ``-Secondly-Remaining``.

A record's modification instant is its ``updatedAt``: the value of ``lastmodifieddate`` on contacts
and ``hs_lastmodifieddate`` on companies and deals, the properties searches filter and sort on.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.conf import settings

from integrations.http import ApiSession, PayloadError, RateLimiter, Sleep, Verdict, retry_after

PROVIDER = "hubspot"
LIST_LIMIT = 100  # the list endpoint's largest page
SEARCH_LIMIT = 200  # the search endpoint's largest page
SEARCH_CAP = 10_000  # the results one search query can page through
MODIFIED = {
    "contacts": "lastmodifieddate",
    "companies": "hs_lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WindowStalled(Exception):
    """More records share one modification instant than one search query can page through."""


@dataclass(frozen=True, slots=True)
class CrmObject:
    object_type: str
    id: str
    properties: dict[str, str | None]  # only the properties asked for
    updated_at: datetime  # aware, UTC
    archived: bool
    raw: dict[str, Any]  # the record as HubSpot sent it


@dataclass(frozen=True, slots=True)
class Page:
    objects: list[CrmObject]
    after: str | None  # paging.next.after; None on the last page
    total: int | None  # search only: how many records match the query


def instant(value: object) -> datetime:
    """An aware UTC datetime from HubSpot's ISO 8601 text or epoch milliseconds (number or digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return EPOCH + timedelta(milliseconds=value)
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    if value.isdigit():
        return EPOCH + timedelta(milliseconds=int(value))
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"no time zone: {value!r}")
    return parsed.astimezone(UTC)


def millis(moment: datetime) -> str:
    """Epoch milliseconds, as search filters take dates (exact: no float rounding)."""
    return str((moment - EPOCH) // timedelta(milliseconds=1))


def _object(object_type: str, data: object, properties: list[str], where: str) -> CrmObject:
    def bad(problem: str) -> PayloadError:
        return PayloadError(PROVIDER, f"{where}: {problem}")

    if not isinstance(data, dict):
        raise bad("is not an object")
    hubspot_id = data.get("id")
    if not isinstance(hubspot_id, str) or not hubspot_id.strip():
        raise bad("has no id")
    values = data.get("properties")
    if not isinstance(values, dict):
        raise bad(f"record {hubspot_id} has no properties")
    try:
        updated_at = instant(data.get("updatedAt"))
    except ValueError:
        raise bad(f"record {hubspot_id} has no valid updatedAt") from None
    archived = data.get("archived", False)
    if not isinstance(archived, bool):
        raise bad(f"record {hubspot_id} has a non-boolean archived")
    kept = {name: values[name] for name in properties if name in values}
    for name, value in kept.items():
        if value is not None and not isinstance(value, str):
            raise bad(f"record {hubspot_id} property {name} is not text")
    return CrmObject(object_type, hubspot_id, kept, updated_at, archived, data)


def page_parse(
    object_type: str, data: object, properties: list[str], *, where: str, search: bool
) -> Page:
    """One list or search response as a ``Page``; ``PayloadError`` (naming where) if malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise PayloadError(PROVIDER, f"{where}: the response has no results list")
    objects = [
        _object(object_type, item, properties, f"{where}, result {n}")
        for n, item in enumerate(data["results"], 1)
    ]
    after = None
    paging = data.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    if following is not None:
        after = following.get("after") if isinstance(following, dict) else None
        if not isinstance(after, str) or not after:
            raise PayloadError(PROVIDER, f"{where}: paging.next has no after cursor")
    total = data.get("total") if search else None
    if search and (not isinstance(total, int) or isinstance(total, bool)):
        raise PayloadError(PROVIDER, f"{where}: the search response has no total")
    return Page(objects, after, total)


def rate_limit_verdict(response: httpx.Response) -> Verdict | None:
    """HubSpot's 429s: wait out a secondly or ten-secondly limit; fail at once on the daily one.

    The daily allowance only comes back at midnight in the account's time zone: retrying would
    spin for hours and spend other integrations' share, so the run fails and alerts instead.
    """
    if response.status_code != 429:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    policy = body.get("policyName") if isinstance(body, dict) else None
    if policy == "DAILY":
        return Verdict(
            retry=False,
            reason="the daily API limit is reached; HubSpot resets it at midnight in the "
            "account's time zone",
        )
    delay = retry_after(response)
    if delay is None and policy == "TEN_SECONDLY_ROLLING":
        # The window rolls: every request in it has left once one whole interval has passed.
        interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
        delay = int(interval) / 1000 if interval.isdigit() else 10.0
    elif delay is None:
        delay = 1.0  # SECONDLY (the search endpoints), or a limit HubSpot did not name
    return Verdict(retry=True, delay=delay, reason=f"rate limited ({policy or 'no policy named'})")


class RollingLimiter(RateLimiter):
    """HubSpot's limits as HubSpot counts them: at most ``rate * window`` requests in any rolling
    ``window`` seconds (100 in 10 s; 5 in 1 s for search), spaced evenly at ``rate``, no burst.

    HubSpot counts a request when it arrives, which we cannot see; we do know it had arrived once
    its answer came back, which is no later than the next call here (calls are sequential: one
    ``daily_ingest`` runs at a time). Waiting until ``window`` has passed since the answer to the
    request ``rate * window`` places back bounds every window HubSpot sees, whatever the network's
    jitter. Spacing alone at exactly the limit trips the window whenever a request travels faster
    than the one a window before it: 10 429s of 10 s each in 1,034 requests in the benchmark.
    """

    def __init__(self, rate: float, window: float, *, clock=time.monotonic):
        super().__init__(rate, burst=1.0, clock=clock)
        self.window = window
        self.answered: deque[float] = deque(maxlen=max(1, round(rate * window)))
        self.in_flight = False

    def acquire(self, sleep: Sleep) -> float:
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = self.clock()
            if self.in_flight:  # the previous request has been answered by now
                self.answered.append(now)
            self.in_flight = True
            full = len(self.answered) == self.answered.maxlen
            wait = max(0.0, self.answered[0] + self.window - now) if full else 0.0
        if wait:
            sleep(wait)
        return wait + super().acquire(sleep)


_limiters: dict[tuple[str, float, float], RollingLimiter] = {}
_limiters_lock = threading.Lock()


def hubspot_limiter(name: str, rate: float, window: float) -> RollingLimiter:
    """The process-wide limiter of one HubSpot limit (parallel runs and threads share it)."""
    with _limiters_lock:
        return _limiters.setdefault((name, rate, window), RollingLimiter(rate, window))


class HubSpotClient:
    """Reads CRM records a page at a time. Use as a context manager."""

    def __init__(
        self,
        *,
        token: str,
        base_url: str,
        rate: float,
        search_rate: float,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
    ):
        self.session = ApiSession(
            provider=PROVIDER,
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            secrets=[token],
            rate=0,  # the two limiters below go with each request instead
            classify=rate_limit_verdict,
            transport=transport,
            sleep=sleep,
        )
        self.limiter = hubspot_limiter(PROVIDER, rate, window=10.0)
        self.search_limiter = hubspot_limiter(f"{PROVIDER}-search", search_rate, window=1.0)
        self.windows = 0  # search windows opened, for the run's log

    @classmethod
    def from_settings(
        cls, *, transport: httpx.BaseTransport | None = None, sleep: Sleep = time.sleep
    ) -> HubSpotClient:
        return cls(
            token=settings.HUBSPOT_TOKEN,
            base_url=settings.HUBSPOT_BASE_URL,
            rate=settings.HUBSPOT_RATE_PER_SECOND,
            search_rate=settings.HUBSPOT_SEARCH_RATE_PER_SECOND,
            transport=transport,
            sleep=sleep,
        )

    def __enter__(self) -> HubSpotClient:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    def listed(
        self, object_type: str, *, properties: list[str], archived: bool = False
    ) -> Iterator[list[CrmObject]]:
        """Every record of a type (or every archived one), a page at a time, in HubSpot's order."""
        path = f"/crm/v3/objects/{object_type}"
        params = {
            "limit": LIST_LIMIT,
            "properties": ",".join(properties),
            "archived": "true" if archived else "false",
        }
        after = None
        for number in itertools.count(1):
            data = self.session.get_json(
                path, params=params | ({"after": after} if after else {}), limiter=self.limiter
            )
            page = page_parse(
                object_type, data, properties, where=f"GET {path} page {number}", search=False
            )
            yield page.objects
            if page.after is None:
                return
            if page.after == after:
                raise PayloadError(PROVIDER, f"GET {path} page {number}: paging.next.after repeats")
            after = page.after

    def changed(
        self, object_type: str, *, properties: list[str], since: datetime, until: datetime
    ) -> Iterator[list[CrmObject]]:
        """Records of a type modified from ``since`` to ``until`` (both included), each once.

        A search query pages through at most ``SEARCH_CAP`` results, so the range is read in
        windows, each sorted by modification instant and paged by ``paging.next.after`` until the
        next page would pass the cap; the next window starts at the last instant read, skipping the
        records already read there. Search's ``after`` is an offset into the sorted results: when
        a window's ``total`` changes between pages, a record left the range and the offsets moved,
        so that page is dropped and a new window starts where the previous page ended (carrying on
        would skip a record). Raises ``WindowStalled`` when more than a window's worth of records
        share one instant.
        """
        modified = MODIFIED[object_type]
        path = f"/crm/v3/objects/{object_type}/search"
        read_ids: set[str] = set()
        start = since
        while True:
            self.windows += 1
            query = {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": modified, "operator": "GTE", "value": millis(start)},
                            {"propertyName": modified, "operator": "LTE", "value": millis(until)},
                        ]
                    }
                ],
                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                "properties": properties,
                "limit": SEARCH_LIMIT,
            }
            last, offset, total, after = start, 0, None, None
            for number in itertools.count(1):
                data = self.session.post_json(
                    path,
                    json=query | ({"after": after} if after else {}),
                    limiter=self.search_limiter,
                )
                where = f"POST {path} window {self.windows} page {number}"
                page = page_parse(object_type, data, properties, where=where, search=True)
                if total is not None and page.total != total:
                    break  # the range changed under us: start again after the last page kept
                total = page.total
                fresh = [o for o in page.objects if o.id not in read_ids]
                read_ids.update(o.id for o in fresh)
                last = max([last, *(o.updated_at for o in page.objects)])
                if fresh:
                    yield fresh
                if page.after is None:
                    return
                offset += len(page.objects)
                if offset + SEARCH_LIMIT > SEARCH_CAP:
                    if last == start:
                        raise WindowStalled(
                            f"more than {SEARCH_CAP:,} {object_type} were modified at "
                            f"{start.isoformat()}"
                        )
                    break
                after = page.after
            start = last
