"""Calendar facts every app reads the same way: the month-end of a date, the month-ends of a span."""

from __future__ import annotations

from datetime import date, timedelta


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def previous_month_end(day: date) -> date:
    """The last day of the month before ``day``'s."""
    return day.replace(day=1) - timedelta(days=1)


def month_ends(start: date, end: date) -> list[date]:
    """Every month-end from start's month through end (inclusive when end is a month-end)."""
    days = []
    last = month_end(start)
    while last <= end:
        days.append(last)
        last = month_end(last + timedelta(days=1))
    return days
