"""The one HTTP seam every provider call goes through (STYLE.md, "Integrations").

One httpx client per provider session with explicit connect/read timeouts; retries with
exponential backoff and jitter on connection errors, timeouts, 5xx and 429, honouring
``Retry-After``; a token-bucket rate limiter per provider shared by every thread of the process;
and errors and log lines that name the provider, method, path and status, never a query string,
header, token or cookie.

Providers whose errors need reading (HubSpot's daily limit, Meta's error codes in a 400 body)
pass a ``classify`` hook that turns a response into "retry after N s" or "fail now".
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]
MAX_BODY_IN_ERROR = 300  # characters of a provider's error body kept in our error text


class ProviderError(Exception):
    """A provider call that failed for good: retries ran out or the error is permanent.

    The message is safe to store and show: secrets the session knows are scrubbed from it.
    """

    def __init__(self, provider: str, message: str, *, status: int | None = None):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class PayloadError(ProviderError):
    """A response that does not have the shape the provider's API documents."""


@dataclass(frozen=True)
class Verdict:
    """What a provider's ``classify`` hook says about a response."""

    retry: bool
    delay: float | None = None  # seconds to wait before retrying; None = backoff
    reason: str = ""


Classify = Callable[[httpx.Response], Verdict | None]


class RateLimiter:
    """A token bucket: at most ``rate`` requests per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, *, clock=time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.clock = clock
        self.updated = clock()
        self.lock = threading.Lock()

    def acquire(self, sleep: Sleep) -> float:
        """Take one token, sleeping until one is free; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait:
            sleep(wait)
        return wait


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def rate_limiter(name: str, rate: float) -> RateLimiter:
    """The process-wide limiter of one provider endpoint family (parallel runs share it)."""
    with _limiters_lock:
        limiter = _limiters.get(name)
        if limiter is None or limiter.rate != rate:
            limiter = _limiters[name] = RateLimiter(rate)
        return limiter


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ApiSession:
    """One provider's HTTP session. Use as a context manager, or call ``close()``.

    ``transport`` lets tests put a fake provider (an ``httpx.MockTransport``) behind the real
    client; ``sleep`` lets them skip the waiting while still checking how long it would be.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        secrets: Iterable[str] = (),
        rate: float = 0.0,
        classify: Classify | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        max_attempts: int | None = None,
    ):
        self.provider = provider
        self.classify = classify
        self.sleep = sleep
        self.max_attempts = max_attempts or settings.HTTP_MAX_ATTEMPTS
        self.secrets = [s for s in secrets if s]
        self.limiter = rate_limiter(provider, rate)
        self.requests_made = 0
        self.waited = 0.0  # seconds slept for rate limits and backoff
        self.client = httpx.Client(
            base_url=base_url,
            headers=headers,
            cookies=cookies,
            transport=transport,
            follow_redirects=True,
            timeout=httpx.Timeout(
                connect=settings.HTTP_CONNECT_TIMEOUT,
                read=settings.HTTP_READ_TIMEOUT,
                write=settings.HTTP_READ_TIMEOUT,
                pool=settings.HTTP_CONNECT_TIMEOUT,
            ),
        )

    def __enter__(self) -> ApiSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def scrub(self, text: str) -> str:
        """``text`` with every secret this session holds replaced."""
        for value in self.secrets:
            text = text.replace(value, "[secret]")
        return text

    def _sleep(self, seconds: float) -> None:
        self.waited += seconds
        self.sleep(seconds)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter" (AWS architecture blog, "Exponential Backoff And Jitter"): clients that
        # failed together do not retry together, and none retries sooner than half the backoff.
        ceiling = min(settings.HTTP_BACKOFF_MAX, settings.HTTP_BACKOFF_BASE * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        url: str,
        *,
        limiter: RateLimiter | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request with retries; returns a 2xx response or raises ``ProviderError``.

        With ``stream`` the body is not read: the caller reads it (``iter_bytes``) and closes it.
        """
        # Never the query string; a path that is itself a secret (a webhook) is scrubbed.
        where = self.scrub(f"{method} {httpx.URL(url).path or url}")
        limiter = limiter or self.limiter
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            self.waited += limiter.acquire(self.sleep)
            self.requests_made += 1
            started = time.perf_counter()
            try:
                request = self.client.build_request(method, url, **kwargs)
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                # Connection refused, DNS, timeouts: the request may not have reached them.
                last = f"{where}: {type(exc).__name__}"
                logger.warning(
                    "provider request failed",
                    extra={
                        "provider": self.provider,
                        "where": where,
                        "attempt": attempt,
                        "error": type(exc).__name__,
                    },
                )
                if attempt < self.max_attempts:
                    self._sleep(self._backoff(attempt))
                continue
            elapsed_ms = round((time.perf_counter() - started) * 1000)
            logger.info(
                "provider request",
                extra={
                    "provider": self.provider,
                    "where": where,
                    "status": response.status_code,
                    "attempt": attempt,
                    "ms": elapsed_ms,
                },
            )
            verdict = self.classify(response) if self.classify else None
            if verdict is None:
                if response.is_success:
                    return response
                retryable = response.status_code == 429 or response.status_code >= 500
                verdict = Verdict(retry=retryable, delay=retry_after(response))
            if response.is_success and not verdict.retry and not verdict.reason:
                return response
            if stream:
                response.read()
            response.close()
            detail = verdict.reason or self.scrub(response.text[:MAX_BODY_IN_ERROR]).strip()
            last = f"{where} answered {response.status_code}" + (f": {detail}" if detail else "")
            if not verdict.retry:
                raise ProviderError(self.provider, self.scrub(last), status=response.status_code)
            if attempt < self.max_attempts:
                delay = verdict.delay if verdict.delay is not None else self._backoff(attempt)
                self._sleep(min(delay, settings.HTTP_BACKOFF_MAX * 5))
        raise ProviderError(
            self.provider, self.scrub(f"gave up after {self.max_attempts} attempts; last: {last}")
        )

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return self.json(self.request("GET", url, **kwargs))

    def post_json(self, url: str, **kwargs: Any) -> Any:
        return self.json(self.request("POST", url, **kwargs))

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            where = f"{response.request.method} {response.request.url.path}"
            raise PayloadError(self.provider, f"{where}: the response is not JSON") from exc
