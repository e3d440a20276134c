"""A fake Meta Graph API: one ad account's insights edge, async report runs, errors and throttling,
answering the way Meta's documentation shows (see ``integrations/meta/client.py`` for the pages).

- ``GET /<version>/act_<id>/insights``: ``{"data": [...], "paging": {"cursors": {"before",
  "after"}, "next", "previous"}}``, numbers as strings, ``actions`` as ``[{"action_type", "value"}]``
  and left out of a row that has none; ``next`` only when another page exists.
- ``POST`` to the same edge: ``{"report_run_id": "..."}``; ``GET /<version>/<report_run_id>``:
  ``async_status``/``async_percent_completion`` moving from "Job Not Started" through "Job
  Running" to "Job Completed" (or "Job Failed"); ``GET /<version>/<report_run_id>/insights``: the
  rows, paged as above.
- Errors in Meta's envelope ``{"error": {"message", "type", "code", "error_subcode",
  "fbtrace_id"}}``: 104/190 for a missing or wrong token (190 echoes a malformed token, as Graph
  does), 100 for bad parameters or unknown objects, 2635 for a version it does not serve.

``script`` holds answers served first, one per request, in order: build them with ``error``,
``throttled``, ``plain``, ``body`` and ``timeout``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from urllib.parse import parse_qsl

import httpx

VERSION = "v21.0"
ACCOUNT = "act_1234567890"
TOKEN = "EAAB-fake-meta-token-s3cr3t"
KNOWN_FIELDS = {
    "account_currency",
    "account_id",
    "actions",
    "campaign_id",
    "campaign_name",
    "clicks",
    "date_start",
    "date_stop",
    "impressions",
    "spend",
}
DEFAULT_LIMIT = 25  # Graph's page size when no ``limit`` is sent

Answer = Callable[[httpx.Request], httpx.Response]


def _usage(account: str, percent: int, minutes: int) -> dict[str, str]:
    entry = {
        "type": "ads_insights",
        "call_count": percent,
        "total_cputime": min(percent, 30),
        "total_time": min(percent, 30),
        "estimated_time_to_regain_access": minutes,
    }
    return {"X-Business-Use-Case-Usage": json.dumps({account.removeprefix("act_"): [entry]})}


def error(
    status: int,
    code: int,
    message: str,
    *,
    kind: str = "OAuthException",
    subcode: int | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """An answer in Graph's error envelope."""
    envelope = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGh123"}
    if subcode is not None:
        envelope["error_subcode"] = subcode
    return lambda request: httpx.Response(status, json={"error": envelope}, headers=headers)


def throttled(code: int = 17, *, subcode: int | None = 2446079, minutes: int = 0) -> Answer:
    """Meta's throttling: HTTP 400, the limit's code, and the usage header saying how long."""
    messages = {
        4: "(#4) Application request limit reached",
        17: "(#17) User request limit reached",
        613: "(#613) Calls to this api have exceeded the rate limit.",
        80000: "(#80000) There have been too many calls from this ad-account. Wait a bit and try again.",
    }
    return error(
        400,
        code,
        messages.get(code, f"(#{code}) Too many calls"),
        subcode=subcode,
        headers=_usage(ACCOUNT, 100, minutes),
    )


def plain(status: int, text: str = "", headers: dict[str, str] | None = None) -> Answer:
    """A status with a non-Graph body, as a proxy or load balancer answers."""
    return lambda request: httpx.Response(
        status, text=text or f"upstream says {status}", headers=headers
    )


def body(content: bytes, content_type: str = "application/json") -> Answer:
    return lambda request: httpx.Response(
        200, content=content, headers={"Content-Type": content_type}
    )


def timeout() -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    return answer


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"cursor:{index}".encode()).decode().rstrip("=")


def _index(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("cursor:"):
        raise ValueError(cursor)
    return int(text.removeprefix("cursor:"))


@dataclass
class CampaignDay:
    """What the ad account delivered for one campaign on one day (numbers as Meta prints them)."""

    day: date
    campaign_id: str
    campaign_name: str
    spend: str
    impressions: str = "0"
    clicks: str = "0"
    actions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReportRun:
    id: str
    since: date
    until: date
    fields: list[str]
    fails: bool = False
    polls: int = 0
    status: str = "Job Not Started"


@dataclass
class FakeMeta:
    days: list[CampaignDay] = field(default_factory=list)
    token: str = TOKEN
    account: str = ACCOUNT
    version: str = VERSION
    currency: str = "USD"
    page_cap: int = 500  # Meta may answer fewer rows than ``limit`` asks for
    report_failures: int = 0  # report runs that end "Job Failed"
    script: list[Answer] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    polls_to_complete: int = 2  # status polls that answer "not yet" before the run ends
    reports: dict[str, ReportRun] = field(default_factory=dict)

    def campaign(
        self, campaign_id: str, name: str, start: date, end: date, *, spend: str, **metrics
    ) -> None:
        """The same delivery every day from ``start`` to ``end``."""
        day = start
        while day <= end:
            self.days.append(CampaignDay(day, campaign_id, name, spend, **metrics))
            day += timedelta(days=1)

    def day(self, when: date, campaign_id: str) -> CampaignDay:
        return next(d for d in self.days if d.day == when and d.campaign_id == campaign_id)

    # ------------------------------------------------------------------------------ serving

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)(request)
        params = dict(request.url.params)
        if request.method == "POST":
            params |= dict(parse_qsl(request.content.decode()))
        denied = self._auth(request, params)
        if denied:
            return denied
        parts = request.url.path.strip("/").split("/")
        if parts[0] != self.version:
            return self._error(
                400,
                2635,
                f"(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: {self.version}.",
            )
        route = (request.method, *parts[1:])
        if route == ("GET", self.account, "insights"):
            return self._insights_get(request, params)
        if route == ("POST", self.account, "insights"):
            return self._report_start(params)
        run = self.reports.get(parts[1]) if len(parts) > 1 else None
        if run and route == ("GET", run.id):
            return self._report_state(run)
        if run and route == ("GET", run.id, "insights"):
            return self._report_rows(request, params, run)
        return self._error(
            400,
            100,
            f"Unsupported {request.method.lower()} request. Object with ID '{'/'.join(parts[1:])}' "
            "does not exist, cannot be loaded due to missing permissions, or does not support this "
            "operation.",
            kind="GraphMethodException",
            subcode=33,
        )

    def _error(self, status: int, code: int, message: str, **kwargs) -> httpx.Response:
        return error(status, code, message, **kwargs)(None)

    def _auth(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response | None:
        given = params.get("access_token")
        header = request.headers.get("Authorization", "")
        if header.startswith(("Bearer ", "OAuth ")):
            given = header.split(" ", 1)[1]
        if not given:
            return self._error(400, 104, "An access token is required to request this resource.")
        if given != self.token:
            return self._error(400, 190, f"Malformed access token {given}")
        return None

    def _window(self, params: dict[str, str]) -> tuple[date, date, list[str]] | httpx.Response:
        if params.get("level") != "campaign" or params.get("time_increment") != "1":
            return self._error(
                400,
                100,
                "(#100) This fake serves level=campaign, time_increment=1",
                kind="OAuthException",
            )
        try:
            window = json.loads(params["time_range"])
            since, until = date.fromisoformat(window["since"]), date.fromisoformat(window["until"])
        except (KeyError, ValueError, TypeError):
            return self._error(
                400, 100, "(#100) time_range must be a JSON object with since and until dates"
            )
        if since > until:
            return self._error(400, 100, "(#100) since must not be after until")
        fields = params.get("fields", "").split(",")
        unknown = [f for f in fields if f not in KNOWN_FIELDS]
        if unknown:
            return self._error(400, 100, f"(#100) {unknown[0]} is not valid for fields param.")
        return since, until, fields

    def _rows(self, since: date, until: date, fields: list[str]) -> list[dict]:
        rows = []
        for d in sorted(self.days, key=lambda d: (d.day, d.campaign_id)):
            if not since <= d.day <= until:
                continue
            full = {
                "account_id": self.account.removeprefix("act_"),
                "account_currency": self.currency,
                "campaign_id": d.campaign_id,
                "campaign_name": d.campaign_name,
                "spend": d.spend,
                "impressions": d.impressions,
                "clicks": d.clicks,
                "actions": [{"action_type": k, "value": v} for k, v in sorted(d.actions.items())],
            }
            row = {f: full[f] for f in fields if f in full and (f != "actions" or d.actions)}
            row["date_start"] = row["date_stop"] = d.day.isoformat()
            rows.append(row)
        return rows

    def _page(
        self, request: httpx.Request, params: dict[str, str], rows: list[dict]
    ) -> httpx.Response:
        try:
            start = _index(params["after"]) + 1 if "after" in params else 0
            limit = int(params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return self._error(400, 100, "(#100) Invalid cursor or limit")
        chunk = rows[start : start + min(limit, self.page_cap)]
        answer: dict = {"data": chunk}
        if chunk:
            end = start + len(chunk) - 1
            paging: dict = {"cursors": {"before": _cursor(start), "after": _cursor(end)}}
            if end + 1 < len(rows):
                paging["next"] = str(request.url.copy_set_param("after", _cursor(end)))
            if start:
                paging["previous"] = str(
                    request.url.copy_remove_param("after").copy_set_param("before", _cursor(start))
                )
            answer["paging"] = paging
        return httpx.Response(200, json=answer, headers=_usage(self.account, 5, 0))

    def _insights_get(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        window = self._window(params)
        if isinstance(window, httpx.Response):
            return window
        return self._page(request, params, self._rows(*window))

    def _report_start(self, params: dict[str, str]) -> httpx.Response:
        window = self._window(params)
        if isinstance(window, httpx.Response):
            return window
        run_id = str(6023920149050 + len(self.reports))
        fails = self.report_failures > 0
        self.report_failures -= fails
        self.reports[run_id] = ReportRun(run_id, *window, fails=fails)
        return httpx.Response(200, json={"report_run_id": run_id})

    def _report_state(self, run: ReportRun) -> httpx.Response:
        run.polls += 1
        percent = 100 * run.polls // (self.polls_to_complete + 1)
        if run.polls > self.polls_to_complete:
            run.status, percent = ("Job Failed", 0) if run.fails else ("Job Completed", 100)
        elif run.polls > 1:
            run.status = "Job Running"
        return httpx.Response(
            200,
            json={
                "id": run.id,
                "account_id": self.account.removeprefix("act_"),
                "time_ref": 1717400000,
                "async_status": run.status,
                "async_percent_completion": percent if run.polls > 1 else 0,
                "date_start": run.since.isoformat(),
                "date_stop": run.until.isoformat(),
            },
        )

    def _report_rows(
        self, request: httpx.Request, params: dict[str, str], run: ReportRun
    ) -> httpx.Response:
        if run.status != "Job Completed":
            return self._error(
                400, 100, f"(#100) Report run {run.id} is not complete", kind="OAuthException"
            )
        return self._page(request, params, self._rows(run.since, run.until, run.fields))
