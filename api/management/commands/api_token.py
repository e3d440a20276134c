"""Create, list or revoke API tokens from the command line.

Why a command: deployments give their first API client a token before anyone opens the admin,
and scripts need the token on stdout alone. ``create`` prints it once, alone on the last line.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.models import ApiToken, Scope
from api.tokens import api_token_create, api_token_revoke, scopes_parse


class Command(BaseCommand):
    help = (
        "api_token create USERNAME --scopes read:book,read:kpis [--expires-days N] [--name NAME]"
        " | api_token list [USERNAME] | api_token revoke PREFIX"
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Issue a token; prints it once, on the last line.")
        create.add_argument("username")
        create.add_argument(
            "--scopes", required=True, help=f"Comma-separated: {', '.join(Scope.values)}"
        )
        create.add_argument("--expires-days", type=int, default=None)
        create.add_argument("--name", default="")
        listing = sub.add_parser("list", help="Tokens (prefix, user, scopes, expiry, state).")
        listing.add_argument("username", nargs="?")
        revoke = sub.add_parser("revoke", help="Revoke the token with this prefix.")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    @transaction.atomic
    def _create(self, *, username, scopes, expires_days, name, **_):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        try:
            parsed = scopes_parse(scopes)
        except ValueError as e:
            raise CommandError(str(e)) from e
        row, token = api_token_create(
            user=user, scopes=parsed, expires_days=expires_days, name=name
        )
        expiry = f"expires {row.expires_at:%Y-%m-%d %H:%M %Z}" if row.expires_at else "no expiry"
        self.stdout.write(
            self.style.SUCCESS(
                f"Token {row.prefix}… for {username}: {', '.join(parsed)}; {expiry}."
            )
        )
        self.stdout.write("It is shown once; store it now:")
        self.stdout.write(token)

    def _list(self, *, username=None, **_):
        tokens = ApiToken.objects.select_related("user")
        if username:
            tokens = tokens.filter(user__username=username)
        for t in tokens:
            state = "usable" if t.usable else ("revoked" if t.revoked_at else "expired")
            expiry = f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "never"
            self.stdout.write(
                f"{t.prefix}…  {t.user.username}  {','.join(t.scopes)}  expires {expiry}  {state}"
            )

    def _revoke(self, *, prefix, **_):
        found = list(ApiToken.objects.filter(prefix=prefix.rstrip("…")))
        if len(found) != 1:
            raise CommandError(f"{len(found)} tokens have the prefix {prefix!r}; name exactly one")
        api_token_revoke(token=found[0])
        self.stdout.write(self.style.SUCCESS(f"Revoked {found[0].prefix}…"))
