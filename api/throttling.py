"""Per-token throttling (settings.API_THROTTLE_RATE)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from api.auth import token_of


class TokenRateThrottle(SimpleRateThrottle):
    """``API_THROTTLE_RATE`` requests per token (per user for a session, per address without
    either); over it, 429 with ``Retry-After``. Counts live in the shared cache (CACHE_URL)."""

    scope = "token"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        token = token_of(request)
        if token is not None:
            ident = f"t{token.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"u{request.user.pk}"
        else:
            ident = f"a{self.get_ident(request)}"
        return f"api-throttle-{ident}"
