"""The deterministic summary: the same digest, fixed rules, the model's answer shape.

Used when the model is off, failing or unverifiable, and as the baseline in tests. It goes
through the same verifier and renderer as a model's answer, so its figures are the stored ones.

Rules, in order: every threshold crossing since the previous month-end (worse first); for each
KPI of ``SUMMARY_KPIS`` its move since the previous month-end (or its value when there is none);
for the whole portfolio, the entity that moved most on each mover KPI. The headline is the first
crossing for the worse, else the first crossing, else outstanding principal's move.
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


def _statement(text: str, kpi: str, slice_: str, day: str, digest: Digest, before: str | None):
    facts = digest.facts
    unit = facts.units[kpi]
    value = facts.get(kpi, slice_, day)
    direction = "none"
    if before is not None and (prior := facts.get(kpi, slice_, before)) is not None:
        direction = direction_of(unit, value, prior)
    return {
        "text": text,
        "kpi": kpi,
        "slice": slice_,
        "date": day,
        "value": str(shown(unit, value)),
        "compared_to": before if direction != "none" else None,
        "direction": direction,
    }


def _move(kpi: str, slice_: str, digest: Digest) -> dict[str, Any] | None:
    now = digest.data["dates"]["current"]
    before = digest.data["dates"]["previous_month_end"]
    facts = digest.facts
    if facts.get(kpi, slice_, now) is None:
        return None
    if before is None or facts.get(kpi, slice_, before) is None:
        return _statement("{kpi} of {slice} was {value} at {date}.", kpi, slice_, now, digest, None)
    unit = facts.units[kpi]
    verb = direction_of(unit, facts.get(kpi, slice_, now), facts.get(kpi, slice_, before))
    text = (
        "{kpi} of {slice} was unchanged at {value} at {date} against {compared_to}."
        if verb == "unchanged"
        else "{kpi} of {slice} " + verb + " to {value} at {date}, from {previous} at "
        "{compared_to} ({change})."
    )
    return _statement(text, kpi, slice_, now, digest, before)


def summary_write(digest: Digest) -> dict[str, Any]:
    """The summary of ``digest`` as an answer (headline and statements)."""
    statements: list[dict[str, Any]] = []
    crossings = sorted(
        digest.data["crossings"],
        key=lambda c: (RANK.get(c["to"], 0) <= RANK.get(c["from"], 0), c["slice"] != digest.slice),
    )
    for crossing in crossings:
        worse = RANK.get(crossing["to"], 0) > RANK.get(crossing["from"], 0)
        text = (
            "{kpi} of {slice} crossed "
            + ("into" if worse else "back from")
            + f" its {crossing['to'] if worse else crossing['from']} threshold: {{value}} at "
            "{date}, against {previous} at {compared_to} ({change})."
        )
        statements.append(
            _statement(
                text,
                crossing["kpi"],
                crossing["slice"],
                crossing["date"],
                digest,
                crossing["compared_to"],
            )
        )
    crossed = {(c["kpi"], c["slice"]) for c in crossings}
    for kpi in SUMMARY_KPIS:
        if (kpi, digest.slice) in crossed:
            continue
        if (move := _move(kpi, digest.slice, digest)) is not None:
            statements.append(move)
    seen = set()
    for mover in digest.data["movers"]:
        if mover["kpi"] in seen:
            continue
        seen.add(mover["kpi"])
        move = _move(mover["kpi"], mover["slice"], digest)
        if move is not None and move["direction"] != "unchanged":
            move["text"] = "Among the entities, " + move["text"]
            statements.append(move)
    if not statements:
        return {"headline": None, "statements": []}
    headline = statements[0]
    return {"headline": headline, "statements": statements[1:MAX_STATEMENTS]}
