"""Data classification: which fields hold personal data, and how they leave the system.

Restricted fields are masked on pages and exports for users without ``loans.view_pii`` and are
never written to the audit log: the log records that they changed, not their values.
"""

from __future__ import annotations

REDACTED = "[redacted]"

# model label -> restricted (personal) fields
RESTRICTED_FIELDS: dict[str, tuple[str, ...]] = {
    "loans.Customer": ("name", "national_id", "email", "phone", "birth_date"),
    "auth.User": ("password", "email", "first_name", "last_name"),
}

# Fields whose changes are noise in the audit history.
AUDIT_EXCLUDED_FIELDS: dict[str, tuple[str, ...]] = {
    "auth.User": ("last_login",),
    "loans.Customer": ("updated_at",),
    "loans.Loan": ("updated_at",),
}


def redact(value: str) -> str:
    """django-auditlog's mask callable (AUDITLOG_MASK_CALLABLE): nothing of the value survives."""
    return REDACTED


def mask(value: object) -> str:
    """What a user without clearance sees in place of a restricted value."""
    if value in (None, ""):
        return ""
    text = str(value)
    return "•" * min(len(text), 8)
