"""Amounts in tables: two decimals with thousands separators, formatted in plain Python (the
``floatformat`` filter localizes each call, which a 50-row table pays for a hundred times)."""

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


@register.filter
def percent(value: Decimal | None) -> str:
    """A rate kept as a fraction (0.451) as people read it: 45.10%."""
    return "" if value is None else f"{value * 100:,.2f}%"
