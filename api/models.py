"""API clients' tokens: each belongs to a user, carries scopes and an expiry, and is stored as
its SHA-256 (the token itself is shown once, when it is created)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Scope(models.TextChoices):
    """What a token may do, checked together with its user's role (a scope never grants what the
    role lacks)."""

    READ_BOOK = "read:book", "read:book: the loan book (customers masked), batches, uploads"
    READ_PII = "read:pii", "read:pii: borrowers' personal fields, if the role is cleared too"
    READ_KPIS = "read:kpis", "read:kpis: KPI definitions, snapshots, series, pipeline runs"
    WRITE_UPLOADS = "write:uploads", "write:uploads: upload files to load"
    READ_AUDIT = "read:audit", "read:audit: the change history and access log"


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        """Tokens that authenticate now: not revoked, not expired."""
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    """A bearer token of an API client, stored as its SHA-256.

    The token is 32 random bytes, so a fast hash is enough: there is nothing to guess the way
    there is with a password. ``prefix`` (its first characters) tells tokens apart in the admin
    and the access log without revealing them.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="Which client uses it.")
    prefix = models.CharField(max_length=12, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices), default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_from = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rotated_to",
        editable=False,
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(
                condition=Q(digest__regex=r"^[0-9a-f]{64}$"), name="apitoken_digest_sha256"
            ),
        ]
        indexes = [
            # The admin's list of one user's tokens, newest first.
            models.Index(fields=["user", "-created_at"], name="apitoken_user_latest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def usable(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )


class RequestCount(models.Model):
    """Requests of one client (token, user or address) in the current throttle window.

    One row per client, counted by a single upsert per request (``api.throttling``): the shared
    cache would cost a read, a cull count and a write.
    """

    client = models.CharField(max_length=64, primary_key=True)
    window = models.BigIntegerField(help_text="The window's start, in seconds since the epoch.")
    hits = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.client}: {self.hits} since {self.window}"
