"""The one HTTP seam: retries, Retry-After, rate limits, and errors free of secrets."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.test import override_settings

from integrations.http import ApiSession, PayloadError, ProviderError, RateLimiter, Verdict

SECRET = "tok-0123456789"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def session(handler, **kwargs) -> ApiSession:
    return ApiSession(
        provider="acme",
        base_url="https://api.acme.test",
        headers={"Authorization": f"Bearer {SECRET}"},
        secrets=[SECRET],
        transport=httpx.MockTransport(handler),
        sleep=kwargs.pop("sleep", Sleeps()),
        **kwargs,
    )


def answers(*responses):
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        return queue.pop(0)

    return handler


def test_a_retry_after_date_is_waited_until_that_time():
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    sleeps = Sleeps()
    with session(
        answers(
            httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, json={"ok": 1})
        ),
        sleep=sleeps,
    ) as api:
        assert api.get_json("/v1/things") == {"ok": 1}
    assert 28 <= sleeps[0] <= 30
    assert api.requests_made == 2


@override_settings(HTTP_MAX_ATTEMPTS=3)
def test_a_4xx_is_not_retried_and_the_error_names_path_and_status_but_no_secret_or_query():
    echo = httpx.Response(403, text=f"bad token {SECRET} for ?api_key={SECRET}")
    with session(answers(echo)) as api, pytest.raises(ProviderError) as failed:
        api.get_json(f"/v1/things?api_key={SECRET}&page=2")
    assert (
        str(failed.value)
        == "acme: GET /v1/things answered 403: bad token [secret] for ?api_key=[secret]"
    )
    assert failed.value.status == 403
    assert api.requests_made == 1


def test_a_classify_hook_can_fail_a_200_or_retry_a_400_after_its_own_delay():
    def classify(response: httpx.Response) -> Verdict | None:
        code = response.json().get("code")
        if code == "slow-down":
            return Verdict(retry=True, delay=12.5, reason="throttled")
        if code == "daily-limit":
            return Verdict(retry=False, reason="daily limit reached")
        return None

    sleeps = Sleeps()
    with session(
        answers(
            httpx.Response(400, json={"code": "slow-down"}),
            httpx.Response(200, json={"code": "ok"}),
            httpx.Response(429, json={"code": "daily-limit"}),
        ),
        classify=classify,
        sleep=sleeps,
    ) as api:
        assert api.get_json("/a") == {"code": "ok"}
        with pytest.raises(ProviderError, match="answered 429: daily limit reached"):
            api.get_json("/b")
    assert sleeps == [12.5]


def test_a_body_that_is_not_json_is_a_payload_error_naming_the_endpoint():
    with (
        session(answers(httpx.Response(200, text="<html>"))) as api,
        pytest.raises(PayloadError) as bad,
    ):
        api.get_json("/v1/things?after=abc")
    assert str(bad.value) == "acme: GET /v1/things: the response is not JSON"


def test_the_rate_limiter_spaces_requests_at_its_rate_after_the_first_burst():
    now = [0.0]
    sleeps = Sleeps()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(rate=4, clock=lambda: now[0])
    waits = [limiter.acquire(sleep) for _ in range(8)]
    # A burst of 4, then one every 0.25 s: 8 requests take 1 s, the rate asked for.
    assert waits[:4] == [0, 0, 0, 0]
    assert waits[4:] == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert now[0] == pytest.approx(1.0)
