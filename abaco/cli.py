"""Argument types the management commands share."""

from argparse import ArgumentTypeError
from datetime import date


def iso_date(value: str) -> date:
    """A --date option: YYYY-MM-DD, refused with the expected form otherwise."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ArgumentTypeError(
            f"expected a date as YYYY-MM-DD, like 2025-11-30, not {value!r}"
        ) from exc
