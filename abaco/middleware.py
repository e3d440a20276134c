"""Request-wide guards: the client's real address, input no view should see, idle sessions, and
the headers every response carries (docs/design.md, "Health and operations"; issue 18)."""

from __future__ import annotations

import ipaddress
import re
import time
from functools import cache

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest
from django.utils.cache import add_never_cache_headers, patch_cache_control

# NUL and the other C0 controls except tab: PostgreSQL refuses NUL in text, and the rest only
# ever arrive to split log lines or smuggle something.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@cache
def _trusted_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES)


def _is_trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted_networks())


def client_address(remote_addr: str, forwarded_for: str) -> str:
    """The client's address: walking ``X-Forwarded-For`` from the right (the hop nearest us),
    skip trusted proxies; the first address no trusted proxy vouches for is the client. A header
    that did not come through a trusted proxy is ignored, so it cannot be forged from outside."""
    address = remote_addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    while _is_trusted(address) and hops:
        address = hops.pop()
    return address


def client_ip(request) -> str:
    """django-axes' AXES_CLIENT_IP_CALLABLE: the address ClientAddressMiddleware settled."""
    return request.META.get("REMOTE_ADDR", "")


class ClientAddressMiddleware:
    """Rewrites REMOTE_ADDR to the client's address and drops the forwarded headers, so every
    later reader (auditlog, axes, our logs) records the same, unforgeable address."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        peer = meta.get("REMOTE_ADDR", "")
        forwarded = meta.pop("HTTP_X_FORWARDED_FOR", "")
        meta.pop("HTTP_X_FORWARDED_PORT", None)
        if not _is_trusted(peer):
            # Only a trusted proxy may say the request came over HTTPS (SECURE_PROXY_SSL_HEADER).
            meta.pop("HTTP_X_FORWARDED_PROTO", None)
        meta["REMOTE_ADDR"] = client_address(peer, forwarded)
        return self.get_response(request)


class RequestGuardMiddleware:
    """400, with the reason, for control characters (NUL above all) in the path or the query:
    every view and admin filter is spared a database error on them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if CONTROL.search(request.path):
            raise BadRequest("The address contains a control character.")
        for key, values in request.GET.lists():
            for value in [key, *values]:
                if CONTROL.search(value):
                    name = CONTROL.sub("?", key)[:40]
                    raise BadRequest(f"Parameter {name!r} contains a control character.")
        return self.get_response(request)


class IdleTimeoutMiddleware:
    """Signs out a session unused for SESSION_IDLE_TIMEOUT seconds (SESSION_COOKIE_AGE stays
    the absolute lifetime). The last-seen time is written at most once a minute."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = int(time.time())
            seen = request.session.get("seen_at")
            if seen is not None and now - seen > settings.SESSION_IDLE_TIMEOUT:
                logout(request)
                return redirect_to_login(request.get_full_path())
            if seen is None or now - seen >= 60:
                request.session["seen_at"] = now
        return self.get_response(request)


def session_seen_at_login(sender, request, user, **kwargs) -> None:
    """user_logged_in: a new session starts its idle clock now (and costs no write on its first
    page)."""
    if getattr(request, "session", None) is not None:
        request.session["seen_at"] = int(time.time())


class SecurityHeadersMiddleware:
    """Permissions-Policy on every response; ``Cache-Control: private, no-store`` on everything
    a signed-in user gets (pages and exports carry book data) except static files."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            add_never_cache_headers(response)
            patch_cache_control(response, private=True, no_store=True)
        return response
