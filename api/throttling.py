"""Per-token throttling: ``API_THROTTLE_RATE`` requests per window ("1200/min"), counted in
one upsert per request on ``api.RequestCount``, shared by every web worker. Over the rate: 429
with ``Retry-After`` (the seconds left in the window)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from rest_framework.throttling import BaseThrottle

from api.auth import token_of
from api.models import RequestCount

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

COUNT = f"""
INSERT INTO {RequestCount._meta.db_table} (client, "window", hits) VALUES (%s, %s, 1)
ON CONFLICT (client) DO UPDATE SET
    hits = CASE WHEN {RequestCount._meta.db_table}."window" = EXCLUDED."window"
                THEN {RequestCount._meta.db_table}.hits + 1 ELSE 1 END,
    "window" = EXCLUDED."window"
RETURNING hits
"""


def rate_parse(rate: str) -> tuple[int, int]:
    """ "1200/min" -> (1200, 60)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period[:1]]


class TokenRateThrottle(BaseThrottle):
    def client_of(self, request) -> str:
        token = token_of(request)
        if token is not None:
            return f"t{token.pk}"
        if request.user and request.user.is_authenticated:
            return f"u{request.user.pk}"
        return f"a{self.get_ident(request)}"[:64]

    def allow_request(self, request, view) -> bool:
        limit, seconds = rate_parse(settings.API_THROTTLE_RATE)
        now = time.time()
        window = int(now // seconds * seconds)
        with connection.cursor() as cursor:
            cursor.execute(COUNT, [self.client_of(request), window])
            (hits,) = cursor.fetchone()
        self._wait = window + seconds - now
        return hits <= limit

    def wait(self) -> float:
        return max(self._wait, 1)
