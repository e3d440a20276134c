"""Template context every page gets: how old the book's data is ("Data through D (N days ago)")."""

from __future__ import annotations

from django.http import HttpRequest

from loans.selectors import data_age


def data_through(request: HttpRequest) -> dict:
    """The book's data age for signed-in users (two small indexed queries); nothing for others."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"data_age": data_age()}
