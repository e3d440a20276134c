"""How API requests authenticate: ``Authorization: Bearer <token>`` for clients, or the browser
session (DRF enforces CSRF on its writes), and what each may do: scope and role."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from api.models import ApiToken, Scope
from api.tokens import api_token_find

# last_used_at is for people reading the admin, not an audit trail: one write a minute is enough.
LAST_USED_EVERY = timedelta(minutes=1)


class BearerAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``: a usable (not revoked, not expired) token's user."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send 'Authorization: Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError as e:
            raise exceptions.AuthenticationFailed("The token has characters no token has.") from e
        found = api_token_find(token)
        if found is None or not found.user.is_active:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked token.")
        now = timezone.now()
        if found.last_used_at is None or now - found.last_used_at > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
        return found.user, found

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


def token_of(request) -> ApiToken | None:
    return request.auth if isinstance(request.auth, ApiToken) else None


def scope_granted(request, scope: str) -> bool:
    """A token must carry the scope; a browser session has its role's reach (no scopes)."""
    token = token_of(request)
    return token is None or scope in token.scopes


def pii_cleared(request) -> bool:
    """Personal fields in clear: the role is cleared (loans.view_pii) and, for a token, read:pii."""
    return request.user.has_perm("loans.view_pii") and scope_granted(request, Scope.READ_PII)


def required_of(view, method: str) -> tuple[str | None, str | None]:
    """The (scope, permission) a request needs: the view's, or its write_* ones for writes."""
    if method not in permissions.SAFE_METHODS and hasattr(view, "write_scope"):
        return view.write_scope, view.write_permission
    return getattr(view, "scope", None), getattr(view, "permission", None)


class ScopeAndRole(permissions.BasePermission):
    """The view's ``scope`` (tokens) and its ``permission`` (the user's role), both required.

    Anonymous requests get 401 (with ``WWW-Authenticate: Bearer``), others without either 403.
    """

    message = "Your token's scopes or your role do not allow this."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        scope, perm = required_of(view, request.method)
        if scope is None or perm is None:  # every view declares both; forgetting denies
            return False
        return scope_granted(request, scope) and request.user.has_perm(perm)
