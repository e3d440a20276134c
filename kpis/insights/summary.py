"""The deterministic summary: the same digest, fixed rules, the model's answer shape.

Used when the model is off, failing or unverifiable, and as the baseline in tests. It goes
through the same verifier and renderer as a model's answer, so its figures are the stored ones.

Rules, in order: every threshold crossing since the previous month-end (into a worse band
first, the slice's own before others'); for the whole portfolio, the entity that moved most on
each mover KPI; then for each KPI of ``SUMMARY_KPIS`` its move since the previous month-end (or
its value when there is none). The headline is the first of these. When the snapshot is beyond
the data or provisional, the statement right after the headline says so (never cut by
``MAX_STATEMENTS``): its figures are a projection, or may still change.
"""

from __future__ import annotations

from typing import Any

from kpis.insights.digest import Digest, direction_of, shown

SUMMARY_KPIS = (
    "outstanding_principal",
    "par_30",
    "par_90",
    "collection_rate",
    "disbursements",
    "top_1_share",
    "top_10_share",
    "hhi",
    "active_borrowers",
)
RANK = {"ok": 0, "amber": 1, "red": 2}
MAX_STATEMENTS = 10


def _statement(
    text: str, kpi: str, slice_: str, digest: Digest, *, compare: bool
) -> dict[str, Any] | None:
    """A statement on ``kpi`` of ``slice_`` at the digest's date, against the previous
    month-end when ``compare`` and that value is stored; None when no value is stored."""
    facts = digest.facts
    now = digest.data["dates"]["current"]
    before = digest.data["dates"]["previous_month_end"]
    value = facts.get(kpi, slice_, now)
    if value is None:
        return None
    unit = facts.units[kpi]
    prior = facts.get(kpi, slice_, before) if compare and before else None
    return {
        "text": text,
        "kpi": kpi,
        "slice": slice_,
        "date": now,
        "value": str(shown(unit, value)),
        "compared_to": before if prior is not None else None,
        "direction": direction_of(unit, value, prior) if prior is not None else "none",
    }


def _move(kpi: str, slice_: str, digest: Digest, lead: str = "") -> dict[str, Any] | None:
    statement = _statement("", kpi, slice_, digest, compare=True)
    if statement is None:
        return None
    verb = statement["direction"]
    if verb == "none":
        statement["text"] = "{kpi} of {slice} was {value} at {date}."
    elif verb == "unchanged":
        statement["text"] = (
            "{kpi} of {slice} was unchanged at {value} at {date} against {compared_to}."
        )
    else:
        statement["text"] = (
            "{kpi} of {slice} " + verb + " to {value} at {date}, from {previous} at "
            "{compared_to} ({change})."
        )
    statement["text"] = lead + statement["text"]
    return statement


def _data_status(digest: Digest) -> dict[str, Any] | None:
    """The statement that the snapshot is beyond the data and/or provisional, on the slice's
    first stored headline KPI (direction "none"); None when it is neither."""
    status = digest.data["data_status"]
    beyond, provisional = status.get("beyond_data"), status.get("provisional")
    if not (beyond or provisional):
        return None
    if beyond and provisional:
        text = (
            "The snapshot of {date} is provisional and dated after the book's data ends "
            "({data_through}): it counts no payment after that date and may be recomputed, so "
            "{kpi} of {slice} at {value} is a projection of unpaid schedules, not the book."
        )
    elif beyond:
        text = (
            "The snapshot of {date} is dated after the book's data ends ({data_through}): it "
            "counts no payment after that date, so {kpi} of {slice} at {value} is a projection "
            "of unpaid schedules, not the book."
        )
    else:
        text = (
            "The snapshot of {date} is provisional (its reasons are listed with it): {kpi} of "
            "{slice} at {value} may be different once it is recomputed."
        )
    for kpi in SUMMARY_KPIS:
        if (statement := _statement(text, kpi, digest.slice, digest, compare=False)) is not None:
            return statement
    return None


def summary_write(digest: Digest) -> dict[str, Any]:
    """The summary of ``digest`` as an answer (headline and statements)."""
    statements: list[dict[str, Any]] = []
    crossings = sorted(
        digest.data["crossings"],
        key=lambda c: (RANK.get(c["to"], 0) <= RANK.get(c["from"], 0), c["slice"] != digest.slice),
    )
    for crossing in crossings:
        worse = RANK.get(crossing["to"], 0) > RANK.get(crossing["from"], 0)
        band = crossing["to"] if worse else crossing["from"]
        text = (
            "{kpi} of {slice} crossed "
            + ("into" if worse else "back from")
            + f" its {band} threshold: {{value}} at {{date}}, against {{previous}} at "
            "{compared_to} ({change})."
        )
        statement = _statement(text, crossing["kpi"], crossing["slice"], digest, compare=True)
        if statement is not None:
            statements.append(statement)
    crossed = {(c["kpi"], c["slice"]) for c in crossings}
    seen = set()
    for mover in digest.data["movers"]:
        if mover["kpi"] in seen or (mover["kpi"], mover["slice"]) in crossed:
            continue
        seen.add(mover["kpi"])
        move = _move(mover["kpi"], mover["slice"], digest, lead="Largest move among the entities: ")
        if move is not None and move["direction"] not in ("unchanged", "none"):
            statements.append(move)
    for kpi in SUMMARY_KPIS:
        if (kpi, digest.slice) not in crossed and (move := _move(kpi, digest.slice, digest)):
            statements.append(move)
    if not statements:
        return {"headline": None, "statements": []}
    if (status := _data_status(digest)) is not None:
        statements.insert(1, status)
    return {"headline": statements[0], "statements": statements[1:MAX_STATEMENTS]}
