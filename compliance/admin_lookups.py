"""Admin changelists: no filter, search, ordering or ``__`` lookup reaches a personal field for a
user without ``loans.view_pii``, and no lookup value the database would choke on reaches it.

Django's own ``lookup_allowed`` lets any lookup on a model's local fields through
(``?national_id__startswith=N`` answers 1 or 0 rows: an oracle for the value, one character at a
time). This guard runs before every changelist of every registered admin (ours, auth's,
auditlog's, django-q's, …), so a new admin is covered without code of its own.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin
from django.core.exceptions import BadRequest, FieldDoesNotExist
from django.db import connection, models
from django.db.models.constants import LOOKUP_SEP

from compliance.classification import RESTRICTED_FIELDS

PII_PERMISSION = "loans.view_pii"

# Changelist parameters that are not lookups (django.contrib.admin.views.main).
NOT_LOOKUPS = {"q", "o", "p", "e", "all", "_popup", "_to_field", "_changelist_filters", "_facets"}
DATE_PARTS = {"year", "iso_year", "month", "day", "week", "week_day", "iso_week_day", "quarter"}
INTEGER_TYPES = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}


def personal_field(model: type[models.Model], lookup: str) -> tuple[str, Any]:
    """The restricted field (``"loans.Customer.national_id"``) a lookup path reaches, or "",
    and the last model field on the path (None when the path names no field)."""
    opts = model._meta
    field = None
    for part in lookup.split(LOOKUP_SEP):
        try:
            field = opts.get_field(part)
        except FieldDoesNotExist:
            break  # a lookup (startswith) or transform (year): the path ended on `field`
        if field.name in RESTRICTED_FIELDS.get(opts.label, ()):
            return f"{opts.label}.{field.name}", field
        related = getattr(field, "related_model", None)
        if not field.is_relation or related is None:
            continue
        opts = related._meta
    return "", field


def _ordering_paths(model_admin: admin.ModelAdmin, request, order: str) -> list[str]:
    """The field paths ``?o=2.-1`` sorts by (indexes into the list's columns)."""
    columns = list(model_admin.get_list_display(request))
    if model_admin.get_actions(request):
        columns.insert(0, "action_checkbox")  # as ChangeList numbers them
    paths = []
    for part in order.split("."):
        try:
            name = columns[int(part.lstrip("-"))]
        except (ValueError, IndexError):
            continue  # Django ignores what it cannot read
        if callable(name):
            paths.append(getattr(name, "admin_order_field", "") or "")
            continue
        attr = getattr(model_admin, name, None) or getattr(model_admin.model, name, None)
        ordered = getattr(attr, "admin_order_field", None)
        paths.append(ordered if isinstance(ordered, str) else name)
    return [p.lstrip("-") for p in paths if isinstance(p, str) and p]


def _value_refusal(field: Any, lookup: str, values: list[str]) -> str:
    """Why a filter value would fail in the database (an error page instead of a 500), or ""."""
    last = lookup.rsplit(LOOKUP_SEP, 1)[-1]
    target: Any = field
    if last == "isnull":
        return ""
    if last in DATE_PARTS:
        kind = "IntegerField"
    else:
        target = getattr(field, "target_field", None) if field.is_relation else field
        kind = target.get_internal_type() if target is not None else ""
    parts = [p for v in values for p in (v.split(",") if last == "in" else [v])]
    for value in parts:
        if kind in INTEGER_TYPES:
            low, high = connection.ops.integer_field_range(kind)
            low = -(2**63) if low is None else low
            high = 2**63 - 1 if high is None else high
            try:
                number = int(value)
            except ValueError:
                continue  # Django answers "incorrect lookup" for text in a number field
            if not low <= number <= high:
                return f"{value[:40]!r} is out of range for {field.name} ({low} to {high})"
        elif kind == "DecimalField":
            try:
                amount = Decimal(value)
            except InvalidOperation:
                continue
            whole_digits = target.max_digits - target.decimal_places
            if not amount.is_finite() or (amount and amount.adjusted() >= whole_digits):
                return f"{value[:40]!r} is out of range for {field.name}"
    return ""


def changelist_refusal(model_admin: admin.ModelAdmin, request) -> str:
    """Why this changelist request is refused (400), or "" when it may run."""
    model = model_admin.model
    cleared = request.user.has_perm(PII_PERMISSION)
    for key in request.GET:
        if key in NOT_LOOKUPS:
            continue
        personal, field = personal_field(model, key)
        if personal and not cleared:
            return f"Filtering on {personal} needs clearance for personal data."
        if field is not None:
            why = _value_refusal(field, key, request.GET.getlist(key))
            if why:
                return f"Filter {key}: {why}."
    if cleared:
        return ""
    if request.GET.get("q"):
        for name in model_admin.get_search_fields(request):
            personal, _ = personal_field(model, name.lstrip("^=@"))
            if personal:
                return f"Searching this list looks in {personal}, which needs clearance for personal data."
    for path in _ordering_paths(model_admin, request, request.GET.get("o", "")):
        personal, _ = personal_field(model, path)
        if personal:
            return f"Sorting on {personal} needs clearance for personal data."
    return ""


class AdminLookupGuardMiddleware:
    """Answers 400, with the reason, for a changelist request ``changelist_refusal`` refuses."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is None or match.namespace != "admin" or not request.user.is_authenticated:
            return None
        if not (match.url_name or "").endswith("_changelist"):
            return None
        model_admin = _changelists().get(match.url_name)
        if model_admin is None or not (
            model_admin.admin_site.has_permission(request)
            and model_admin.has_view_or_change_permission(request)
        ):
            return None  # the admin answers (login or 403) as it would without a lookup
        why = changelist_refusal(model_admin, request)
        if why:
            raise BadRequest(why)
        return None


def _changelists() -> dict[str, admin.ModelAdmin]:
    return {
        f"{model._meta.app_label}_{model._meta.model_name}_changelist": model_admin
        for model, model_admin in admin.site._registry.items()
    }
