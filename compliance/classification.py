"""Data classification: which fields hold personal data, and how they leave the system.

The registry is ``compliance.FieldClassification`` (edited in the admin by stewards and admins,
every change journaled), seeded from ``compliance.fields.DEFAULTS``. Everything that shows or sends
book data asks this module: admin and pages (``restricted_fields``, ``mask``), exports, the audit
log's redaction (django-auditlog's ``mask_fields``, refreshed when the registry changes), the API
and the AI features (``personal_fields``, ``redact``).

Restricted fields (any masking rule) are masked on pages and exports for users without
``loans.view_pii`` and are never written to the audit log: the log records that they changed, not
their values. ``RESTRICTED_FIELDS`` and ``AUDIT_EXCLUDED_FIELDS`` keep their old shape (model label
-> field names) and now read the registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

from compliance.fields import CLASSIFIED_APPS, CLASSIFIED_MODELS, DEFAULTS, Rule

REDACTED = "[redacted]"
# Seconds a process keeps the registry before reading it again (a save in this process refreshes
# at once; other processes within this delay).
REGISTRY_TTL = 60.0

_lock = threading.Lock()
_cache: dict[str, dict[str, Rule]] | None = None
_loaded_at = 0.0


def _label(model_label: str) -> str:
    """ "loans.customer" and "loans.Customer" name the same model."""
    app, _, name = model_label.partition(".")
    for known in DEFAULTS:
        if known.lower() == model_label.lower():
            return known
    return f"{app}.{name}"


def _load() -> dict[str, dict[str, Rule]]:
    from django.apps import apps

    rules = {label: dict(fields) for label, fields in DEFAULTS.items()}
    if not apps.ready:  # start-up (admin modules importing): no database reads yet
        return rules
    try:
        from compliance.models import FieldClassification

        for row in FieldClassification.objects.all().iterator():
            rules.setdefault(row.model, {})[row.field] = Rule(
                row.level, row.personal, row.masking, row.audit_excluded
            )
    except Exception:
        pass
    return rules


def registry() -> dict[str, dict[str, Rule]]:
    """Model label -> field -> rule, as the registry holds them now."""
    global _cache, _loaded_at
    with _lock:
        if _cache is None or time.monotonic() - _loaded_at > REGISTRY_TTL:
            from django.apps import apps

            rules = _load()
            if not apps.ready:
                return rules
            _cache, _loaded_at = rules, time.monotonic()
            _auditlog_refresh(_cache)
        return _cache


def refresh() -> None:
    """Forget the cached registry (after a save) so the next read sees it."""
    global _cache
    with _lock:
        _cache = None


def rule_of(model_label: str, field: str) -> Rule | None:
    return registry().get(_label(model_label), {}).get(field)


def restricted_fields(model_label: str) -> tuple[str, ...]:
    """Fields masked for roles without ``loans.view_pii`` and redacted in the audit log."""
    rules = registry().get(_label(model_label), {})
    return tuple(name for name, rule in rules.items() if rule.masking != "none")


def personal_fields(model_label: str) -> tuple[str, ...]:
    """Fields holding personal data of a natural person (what leaves only masked or not at all)."""
    rules = registry().get(_label(model_label), {})
    return tuple(name for name, rule in rules.items() if rule.personal)


def audit_excluded_fields(model_label: str) -> tuple[str, ...]:
    rules = registry().get(_label(model_label), {})
    return tuple(name for name, rule in rules.items() if rule.audit_excluded)


class _ByModel(Mapping[str, tuple[str, ...]]):
    """A read-only ``{model label: field names}`` view of the registry."""

    def __init__(self, pick):
        self._pick = pick

    def __getitem__(self, label: str) -> tuple[str, ...]:
        fields = self._pick(label)
        if not fields:
            raise KeyError(label)
        return fields

    def __iter__(self) -> Iterator[str]:
        return (label for label in registry() if self._pick(label))

    def __len__(self) -> int:
        return sum(1 for _ in self)


# model label -> restricted fields (masked for roles not cleared, redacted in the audit log)
RESTRICTED_FIELDS: Mapping[str, tuple[str, ...]] = _ByModel(restricted_fields)
# model label -> fields whose changes are noise in the audit history
AUDIT_EXCLUDED_FIELDS: Mapping[str, tuple[str, ...]] = _ByModel(audit_excluded_fields)


def seed_restricted(label: str) -> list[str]:
    """The seed's restricted fields: django-auditlog's registration at start-up, before the
    database may be read (the registry's own rules replace them on first use)."""
    return [name for name, rule in DEFAULTS.get(label, {}).items() if rule.masking != "none"]


def seed_excluded(label: str) -> list[str]:
    return [name for name, rule in DEFAULTS.get(label, {}).items() if rule.audit_excluded]


def _auditlog_refresh(rules: dict[str, dict[str, Rule]]) -> None:
    """django-auditlog reads its registration's ``mask_fields`` list on every save: keep it equal
    to the registry's restricted fields, in place."""
    from auditlog.registry import auditlog

    for model in auditlog.get_models():
        fields = rules.get(model._meta.label, {})
        masked = auditlog._registry[model]["mask_fields"]
        masked[:] = [name for name, rule in fields.items() if rule.masking != "none"]


def unclassified_fields() -> list[str]:
    """Fields of our models that ``compliance.fields.DEFAULTS`` does not classify."""
    from django.apps import apps

    missing = []
    for model in apps.get_models():
        opts = model._meta
        if opts.app_label not in CLASSIFIED_APPS and opts.label not in CLASSIFIED_MODELS:
            continue
        if not opts.managed:
            continue
        known = DEFAULTS.get(opts.label, {})
        for field in model_fields(model):
            if field not in known:
                missing.append(f"{opts.label}.{field}")
    return missing


def model_fields(model) -> list[str]:
    """The fields a classification covers: columns and many-to-many, not the automatic id."""
    return [
        f.name
        for f in model._meta.get_fields()
        if (f.concrete or f.many_to_many) and not f.auto_created
    ]


def classification_sync(apps) -> int:
    """Add a registry row, from the seed, for every classified field that has none (migration-
    safe: ``apps`` is the migration's app registry or ``django.apps.apps``). Rows stewards edited
    are never overwritten. Returns how many rows were added."""
    FieldClassification = apps.get_model("compliance", "FieldClassification")
    have = set(FieldClassification.objects.values_list("model", "field"))
    new = []
    for label, fields in DEFAULTS.items():
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        present = {f.name for f in model._meta.get_fields() if f.concrete or f.many_to_many}
        for field, rule in fields.items():
            if field in present and (label, field) not in have:
                new.append(
                    FieldClassification(
                        model=label,
                        field=field,
                        level=rule.level,
                        personal=rule.personal,
                        masking=rule.masking,
                        audit_excluded=rule.audit_excluded,
                    )
                )
    FieldClassification.objects.bulk_create(new, ignore_conflicts=True)
    refresh()
    return len(new)


def redact(value: str) -> str:
    """django-auditlog's mask callable (AUDITLOG_MASK_CALLABLE): nothing of the value survives."""
    return REDACTED


def mask(value: object) -> str:
    """What a user without clearance sees in place of a restricted value."""
    if value in (None, ""):
        return ""
    text = str(value)
    return "•" * min(len(text), 8)
