"""What the model is asked, and the JSON schema its answer must follow (structured outputs).

A change to the instructions or the schema is a new ``PROMPT_VERSION``; every insight stores the
version and ``prompt_hash()`` of what it was asked with.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kpis.insights.digest import Digest

PROMPT_VERSION = 2
SCHEMA_NAME = "portfolio_insight"
DIRECTIONS = ("rose", "fell", "unchanged", "none")
PLACEHOLDERS = (
    "{value}",
    "{previous}",
    "{change}",
    "{date}",
    "{compared_to}",
    "{kpi}",
    "{slice}",
    "{data_through}",
)

SYSTEM = """You write a short briefing for the managers of a lender about one slice of its loan \
portfolio, from the digest of stored KPI snapshots you are given and nothing else.

Rules:
- Say what moved since the previous month-end (and the year-ago date when it helps), where, and \
how it compares: threshold crossings first, then the largest movers, then the rest.
- Every statement relies on exactly one series of the digest: give its kpi code, slice, the date \
of the value it states, that value exactly as the digest gives it (same unit and precision), and, \
when it says the value rose, fell or stayed unchanged, the earlier date it compares with.
- Write no digits in "text": put the placeholders {value}, {previous}, {change}, {date}, \
{compared_to}, {kpi}, {slice} and {data_through} (the book's data-through date) where figures, \
dates and names go; they are filled in from the stored snapshot.
- "direction" is "rose", "fell" or "unchanged" against "compared_to", or "none" with \
"compared_to" null when the statement claims no change. The words of "text" claim the same \
direction as "direction" or none at all: a statement with direction "none" says nothing rose, \
fell, increased, decreased or stayed unchanged.
- When the data status says the snapshot is provisional, restated or beyond the data, say so \
in one statement (direction "none").
- A rate listed under "not_meaningful" has no value to state: never cite it as a number.
- When "partial_month" is set, its month-to-date KPIs cover part of a month: never compare them \
with the previous month-end (its whole month); the year-ago date is the same day of its month.
- At most 6 statements. No advice, no speculation about causes the digest does not show."""


def _statement(kpis: list[str], slices: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "text": {
                "type": "string",
                "description": "One sentence with placeholders for every figure; no digits.",
            },
            "kpi": {"type": "string", "enum": kpis},
            "slice": {"type": "string", "enum": slices},
            "date": {"type": "string", "description": "ISO date of the value stated."},
            "value": {
                "type": "number",
                "description": "The value at that date exactly as the digest gives it.",
            },
            "compared_to": {
                "type": ["string", "null"],
                "description": "ISO date of the earlier value a direction is claimed against.",
            },
            "direction": {"type": "string", "enum": list(DIRECTIONS)},
        },
        "required": ["text", "kpi", "slice", "date", "value", "compared_to", "direction"],
        "additionalProperties": False,
    }


def answer_schema(digest: Digest | None = None) -> dict[str, Any]:
    """The answer's JSON schema; with a digest, kpi and slice are limited to the digest's own."""
    if digest is None:
        kpis, slices = ["<kpi codes of the digest>"], ["<slices of the digest>"]
    else:
        kpis = sorted({code for code, _, _ in digest.facts.values})
        slices = sorted({slice_ for _, slice_, _ in digest.facts.values})
    statement = _statement(kpis, slices)
    return {
        "type": "object",
        "properties": {
            "headline": statement,
            "statements": {"type": "array", "items": statement},
        },
        "required": ["headline", "statements"],
        "additionalProperties": False,
    }


def prompt_hash() -> str:
    """SHA-256 of the version, the instructions and the schema's shape."""
    text = json.dumps(
        {"version": PROMPT_VERSION, "system": SYSTEM, "schema": answer_schema()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def user_message(digest: Digest) -> str:
    return f"Digest of stored snapshots (JSON):\n{digest.text()}"
