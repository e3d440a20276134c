"""A fake HubSpot account answering CRM v3 as HubSpot documents it (the pages are cited in
``integrations/hubspot/client.py``).

- ``GET /crm/v3/objects/{type}``: pages of at most 100 records in id order with an opaque
  ``paging.next.after`` cursor; the asked-for properties the account has (``null`` where a record
  has no value) plus the defaults; ``archived=true`` for archived records only.
- ``POST /crm/v3/objects/{type}/search``: ``filterGroups`` (OR of ANDed filters), one sort,
  ``limit`` up to 200, ``after`` as an offset, ``total``; 400 when paging past 10,000 results;
  never archived records; no rate-limit headers.
- Limits: 100 requests per rolling 10 s (``TEN_SECONDLY_ROLLING``), 5 searches per rolling second
  (``SECONDLY``) and a daily allowance (``DAILY``), each answered with HubSpot's 429 body; other
  answers carry the ``X-HubSpot-RateLimit-*`` headers.
- 401 without the bearer token, 400 for invalid input, 404 for unknown paths.
- ``fail(answer, times=, path=)`` makes the next matching requests answer a status, a given
  response, a transport error (a timeout) or whatever a function returns.

Pass ``clock`` (seconds, like ``time.monotonic``) to run the limits on a test's own time.
"""

from __future__ import annotations

import base64
import itertools
import json
import operator
import threading
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import httpx

TOKEN = "pat-na1-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
BASE_TIME = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
MODIFIED = {
    "contacts": "lastmodifieddate",
    "companies": "hs_lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}
DATES = {"createdate", "lastmodifieddate", "hs_lastmodifieddate"}
SEARCH_CAP = 10_000
OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN"}
OPERATORS |= {"HAS_PROPERTY", "NOT_HAS_PROPERTY"}
COMPARE = {
    "EQ": operator.eq,
    "NEQ": operator.ne,
    "LT": operator.lt,
    "LTE": operator.le,
    "GT": operator.gt,
    "GTE": operator.ge,
}
Answer = (
    int | httpx.Response | type[httpx.TransportError] | Callable[[httpx.Request], httpx.Response]
)


def iso(moment: datetime) -> str:
    """HubSpot's instants: UTC, milliseconds, a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _millis(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class Record:
    id: int
    properties: dict[str, str | None]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None

    def values(self, object_type: str) -> dict[str, str | None]:
        return self.properties | {
            "hs_object_id": str(self.id),
            "createdate": iso(self.created_at),
            MODIFIED[object_type]: iso(self.updated_at),
        }

    def as_json(self, object_type: str, names: list[str]) -> dict:
        values = self.values(object_type)
        body = {
            "id": str(self.id),
            "properties": {name: values.get(name) for name in names},
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "archived": self.archived_at is not None,
        }
        if self.archived_at is not None:
            body["archivedAt"] = iso(self.archived_at)
        return body


class FakeHubSpot:
    def __init__(
        self,
        *,
        token: str = TOKEN,
        ten_secondly: int = 100,
        searches_per_second: int = 5,
        daily: int = 250_000,
        search_cap: int = SEARCH_CAP,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.token = token
        self.ten_secondly = ten_secondly
        self.searches_per_second = searches_per_second
        self.daily = daily
        self.search_cap = search_cap
        self.clock = clock
        self.records: dict[str, dict[int, Record]] = {t: {} for t in MODIFIED}
        self.order: dict[str, list[int]] = {t: [] for t in MODIFIED}  # ids, ascending
        # The account's properties: asked-for names outside these are left out of answers.
        self.schema: dict[str, set[str]] = {
            t: {"createdate", "hs_object_id", m} for t, m in MODIFIED.items()
        }
        self.requests: list[httpx.Request] = []
        self.rate_limited: list[str] = []  # policyName of every 429 answered
        self.used_today = 0
        self._ids = itertools.count(1001)
        self._ticks = itertools.count()
        self._recent: deque[float] = deque()
        self._recent_searches: deque[float] = deque()
        self._injected: list[list] = []  # [answer, times left, path part]
        self._lock = threading.Lock()

    # -- the account's data -------------------------------------------------------------------

    def add(
        self,
        object_type: str,
        properties: dict[str, str | None] | None = None,
        *,
        updated_at: datetime | None = None,
        archived: bool = False,
    ) -> str:
        """A new record (modified one second after the previous one unless told); its id."""
        at = updated_at or BASE_TIME + timedelta(seconds=next(self._ticks))
        record = Record(next(self._ids), dict(properties or {}), at, at, at if archived else None)
        self.records[object_type][record.id] = record
        self.order[object_type].append(record.id)
        self.schema[object_type].update(record.properties)
        return str(record.id)

    def touch(self, object_type: str, record_id: str, *, at: datetime, **properties) -> None:
        """Change a record: new property values and a new modification instant."""
        record = self.records[object_type][int(record_id)]
        record.properties.update(properties)
        record.updated_at = at
        self.schema[object_type].update(properties)

    def archive(self, object_type: str, record_id: str, *, at: datetime) -> None:
        record = self.records[object_type][int(record_id)]
        record.archived_at = record.updated_at = at

    def fail(self, answer: Answer, *, times: int = 1, path: str = "") -> None:
        """Answer the next ``times`` requests whose path contains ``path`` with ``answer``."""
        self._injected.append([answer, times, path])

    def paths(self, method: str = "") -> list[str]:
        return [r.url.path for r in self.requests if not method or r.method == method]

    # -- HTTP -----------------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            injected = self._injected_answer(request)
            if injected is not None:
                return injected
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._error(
                    401,
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                )
            parts = request.url.path.strip("/").split("/")
            if parts[:3] != ["crm", "v3", "objects"] or len(parts) not in (4, 5):
                return self._error(404, f"No route for {request.url.path}", "OBJECT_NOT_FOUND")
            object_type = parts[3]
            search = len(parts) == 5
            if object_type not in MODIFIED or (search and parts[4] != "search"):
                return self._error(
                    400, f"Unable to infer object type from: {object_type}", "VALIDATION_ERROR"
                )
            if (limited := self._limited(search=search)) is not None:
                return limited
            if search and request.method == "POST":
                return self._search(object_type, request)
            if not search and request.method == "GET":
                return self._list(object_type, request)
            return self._error(405, f"{request.method} is not allowed here", "VALIDATION_ERROR")

    def _injected_answer(self, request: httpx.Request) -> httpx.Response | None:
        for injected in self._injected:
            answer, times, path = injected
            if times and path in request.url.path:
                injected[1] -= 1
                break
        else:
            return None
        if isinstance(answer, int):
            return self._error(answer, "internal error", "INTERNAL_ERROR")
        if isinstance(answer, httpx.Response):
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        if isinstance(answer, type) and issubclass(answer, httpx.TransportError):
            raise answer(f"fake {answer.__name__}", request=request)
        return answer(request)

    def _error(self, status: int, message: str, category: str, headers=None) -> httpx.Response:
        body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        }
        return httpx.Response(status, headers=headers, json=body)

    def _limited(self, *, search: bool) -> httpx.Response | None:
        """A 429 when this request is over a limit; else the request is counted."""
        now = self.clock()
        if search:
            window, most, span = self._recent_searches, self.searches_per_second, 1.0
            policy = "SECONDLY"
        else:
            window, most, span = self._recent, self.ten_secondly, 10.0
            policy = "TEN_SECONDLY_ROLLING"
        while window and window[0] <= now - span:
            window.popleft()
        if self.used_today >= self.daily:
            policy = "DAILY"
        elif len(window) < most:
            window.append(now)
            self.used_today += 1
            return None
        self.rate_limited.append(policy)
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        return httpx.Response(429, headers=None if search else self._headers(), json=body)

    def _headers(self) -> dict[str, str]:
        now = self.clock()
        last_second = sum(1 for at in self._recent if at > now - 1.0)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily - self.used_today)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(self.ten_secondly),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.ten_secondly - len(self._recent))),
            "X-HubSpot-RateLimit-Secondly": str(self.ten_secondly // 10),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(
                max(0, self.ten_secondly // 10 - last_second)
            ),
        }

    def _names(self, object_type: str, asked: list[str]) -> list[str]:
        defaults = sorted(
            self.schema[object_type] & {"createdate", "hs_object_id", MODIFIED[object_type]}
        )
        return defaults + [n for n in asked if n in self.schema[object_type] and n not in defaults]

    def _list(self, object_type: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        try:
            limit = int(params.get("limit", "10"))
            start = (
                int(base64.urlsafe_b64decode(params["after"]).decode()) if "after" in params else 0
            )
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "Invalid limit or after", "VALIDATION_ERROR")
        if not 1 <= limit <= 100:
            return self._error(400, "limit must be between 1 and 100", "VALIDATION_ERROR")
        asked = [n for value in params.get_list("properties") for n in value.split(",") if n]
        archived = params.get("archived", "false") == "true"
        names = self._names(object_type, asked)
        records = self.records[object_type]
        order = self.order[object_type]
        page, following = [], None
        for record_id in itertools.islice(order, bisect_left(order, start), None):
            record = records[record_id]
            if (record.archived_at is not None) != archived:
                continue
            if len(page) == limit:
                following = record_id
                break
            page.append(record.as_json(object_type, names))
        body: dict = {"results": page}
        if following is not None:
            cursor = base64.urlsafe_b64encode(str(following).encode()).decode()
            link = request.url.copy_set_param("after", cursor)
            body["paging"] = {"next": {"after": cursor, "link": str(link)}}
        return httpx.Response(200, headers=self._headers(), json=body)

    def _search(self, object_type: str, request: httpx.Request) -> httpx.Response:
        try:
            query = json.loads(request.content or b"{}")
            limit = int(query.get("limit", 10))
            offset = int(query.get("after") or 0)
        except (ValueError, TypeError, AttributeError):
            return self._error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if not 1 <= limit <= 200:
            return self._error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        if offset >= self.search_cap:
            return self._error(
                400,
                f"Search results are limited to {self.search_cap} per query; page with filters",
                "VALIDATION_ERROR",
            )
        groups = query.get("filterGroups") or []
        filters = [f for g in groups for f in g.get("filters", [])]
        if (
            len(groups) > 5
            or any(len(g.get("filters", [])) > 10 for g in groups)
            or len(filters) > 25
        ):
            return self._error(400, "Too many filterGroups or filters", "VALIDATION_ERROR")
        if unknown := {f.get("operator") for f in filters} - OPERATORS:
            return self._error(400, f"Unknown operator {sorted(unknown)[0]}", "VALIDATION_ERROR")
        sorts = query.get("sorts") or []
        if len(sorts) > 1:
            return self._error(400, "Only one sort is supported", "VALIDATION_ERROR")
        found = [
            r
            for r in self.records[object_type].values()
            if r.archived_at is None
            and (not groups or any(_matches(r.values(object_type), g["filters"]) for g in groups))
        ]
        if sorts:
            name, descending = sorts[0]["propertyName"], sorts[0].get("direction") == "DESCENDING"
            found.sort(key=lambda r: r.id)
            found.sort(
                key=lambda r: _key(name, r.values(object_type).get(name)), reverse=descending
            )
        else:
            found.sort(key=lambda r: r.id)
        names = self._names(object_type, query.get("properties") or [])
        body: dict = {
            "total": len(found),
            "results": [r.as_json(object_type, names) for r in found[offset : offset + limit]],
        }
        if offset + limit < len(found):
            body["paging"] = {
                "next": {"after": str(offset + limit), "link": f"?after={offset + limit}"}
            }
        return httpx.Response(200, json=body)


def _key(name: str, value: str | None) -> tuple:
    """How search compares values: dates as instants, numbers as numbers, the rest as text."""
    if value is None:
        return (0,)
    if name in DATES:
        digits = value if value.isdigit() else None
        moment = int(digits) if digits else _millis(datetime.fromisoformat(value))
        return (1, moment)
    try:
        return (1, Decimal(value))
    except InvalidOperation:
        return (2, value)


def _matches(values: dict[str, str | None], filters: list[dict]) -> bool:
    for f in filters:
        name, op = f["propertyName"], f["operator"]
        have = values.get(name)
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            if (have not in (None, "")) != (op == "HAS_PROPERTY"):
                return False
            continue
        if have is None:
            return False
        key = _key(name, have)
        if op in ("IN", "NOT_IN"):
            inside = key in {_key(name, str(v)) for v in f.get("values", [])}
            if inside != (op == "IN"):
                return False
            continue
        other = _key(name, str(f.get("value")))
        if op == "BETWEEN":
            ok = other <= key <= _key(name, str(f.get("highValue")))
        else:
            ok = COMPARE[op](key, other)
        if not ok:
            return False
    return True
