"""Creating, finding, rotating and revoking API tokens (the writes of ``abaco.models.ApiToken``)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from api.models import ApiToken, Scope

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Tokens read "abaco_" + 43 URL-safe characters (32 random bytes): the prefix makes a leaked
# token easy to recognise in a secret scanner.
TOKEN_PREFIX = "abaco_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scopes_parse(text: str | list[str]) -> list[str]:
    """Scopes from "read:book,read:kpis" (or a list); unknown ones raise ValueError."""
    items = text.split(",") if isinstance(text, str) else text
    scopes = sorted({item.strip() for item in items if item.strip()})
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(unknown)} (choose from {', '.join(Scope.values)})"
        )
    if not scopes:
        raise ValueError(f"name at least one scope ({', '.join(Scope.values)})")
    return scopes


def api_token_create(
    *,
    user: User,
    scopes: list[str],
    expires_days: int | None = None,
    name: str = "",
    by: User | None = None,
    rotated_from: ApiToken | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the token, which is never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    row = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=token[: len(TOKEN_PREFIX) + 4],
        digest=token_digest(token),
        scopes=scopes_parse(scopes),
        expires_at=expires_at,
        created_by=by,
        rotated_from=rotated_from,
    )
    return row, token


def api_token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


@transaction.atomic
def api_token_rotate(*, token: ApiToken, by: User | None = None) -> tuple[ApiToken, str]:
    """Revoke ``token`` and issue its successor: same user, scopes and remaining lifetime."""
    days = None
    if token.expires_at is not None:
        days = max(1, (token.expires_at - timezone.now()).days)
    api_token_revoke(token=token)
    return api_token_create(
        user=token.user,
        scopes=token.scopes,
        expires_days=days,
        name=token.name,
        by=by,
        rotated_from=token,
    )


def api_token_find(token: str) -> ApiToken | None:
    """The usable token with this value, with its user, or None."""
    return (
        ApiToken.objects.usable().select_related("user").filter(digest=token_digest(token)).first()
    )
