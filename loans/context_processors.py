"""Template context every page gets: how old the book's data is ("Data through D (N days ago)")."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from loans.selectors import data_age


def data_through(request: HttpRequest) -> dict:
    """The book's data age for signed-in users (one small query, or two indexed aggregates on a
    book whose batches have no cut-off), read only if the page shows it and its view did not
    already pass its own (the dashboards do, from the date their selection read)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"data_age": SimpleLazyObject(data_age)}
