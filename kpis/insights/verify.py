"""Check every statement of an answer against the stored values, and render the ones that pass.

A statement cites a series (KPI code, slice), the date of its value, the value as the digest
states it and, when it claims a direction, the earlier date it compares with. It passes when:
- the series has a stored value at that date (and at ``compared_to`` when given);
- the cited value equals the stored one: exactly for counts, to the displayed precision for money
  (whole dollars), rates (percent with two decimals) and indices;
- the claimed direction ("rose", "fell", "unchanged") is the one the stored values show at their
  displayed precision, and no direction is claimed without a date to compare with. A direction is
  claimed by the ``direction`` field and by the words of the text alike ("rose", "increased",
  "dropped", "held steady" ...): words that contradict the numbers fail as a wrong direction, and
  words that claim one while ``direction`` is "none" fail too, so a statement cannot slip a claim
  past the check by leaving its field empty;
- its text holds no figures of its own: digits appear only inside names (PAR30, Top-10), every
  figure is a placeholder, and the published sentence prints the stored values.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kpis.insights.digest import DIGEST_UNIT, Facts, direction_of, shown
from kpis.insights.prompt import DIRECTIONS, PLACEHOLDERS
from kpis.selectors.common import change_display, display

# Digits allowed in a sentence: inside the names of measures (PAR30, PAR 90, Top-10, 30+ DPD).
NAMED_DIGITS = re.compile(
    r"\bPAR[ _-]?\d+\b|\btop[ _-]?\d+\b|\b\d+\+?\s?DPD\b|\bever[ _-]?\d+\+?", re.IGNORECASE
)
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
# The words that claim a direction, by the direction they claim. Read whole-word and case-blind
# in the text left after placeholders and the names of measures and slices are taken out; a
# negation ("did not rise") still reads as a claim, so such a statement is dropped, not trusted.
DIRECTION_WORDS = {
    "rose": (
        r"rose|rise[sn]?|rising|increas(?:e|es|ed|ing)|gr[eo]w|grows|grown|growing|"
        r"climb(?:s|ed|ing)?|jump(?:s|ed|ing)?|gain(?:s|ed|ing)?|surg(?:e|es|ed|ing)|"
        r"soar(?:s|ed|ing)?|higher|went up|goes up|moved up|up from"
    ),
    "fell": (
        r"fell|fall(?:s|en|ing)?|decreas(?:e|es|ed|ing)|declin(?:e|es|ed|ing)|"
        r"drop(?:s|ped|ping)?|shr[ai]nk(?:s|ing)?|shrunk|slip(?:s|ped|ping)?|slid(?:e|es|ing)?|"
        r"dip(?:s|ped|ping)?|eas(?:e|es|ed|ing)|plung(?:e|es|ed|ing)|tumbl(?:e|es|ed|ing)|"
        r"contract(?:s|ed|ing)|lower|went down|goes down|moved down|down from"
    ),
    "unchanged": r"unchanged|no change|flat|steady|stable|stayed the same|remained the same",
}
DIRECTION_CLAIMS = {
    direction: re.compile(rf"\b(?:{words})\b", re.IGNORECASE)
    for direction, words in DIRECTION_WORDS.items()
}

WRONG_NUMBER = "wrong number"
WRONG_DIRECTION = "wrong direction"


@dataclass
class Check:
    """One statement's verification, stored with the insight."""

    part: str  # "headline" or "statement N"
    ok: bool
    reason: str = ""
    kpi: str = ""
    slice: str = ""
    date: str = ""
    cited: str = ""
    stored: str = ""
    compared_to: str = ""
    direction: str = ""
    actual_direction: str = ""
    text_direction: str = ""  # the directions the text's words claim, comma-separated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cited(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _matches(unit: str, cited: Decimal, stored: Decimal) -> bool:
    if DIGEST_UNIT[unit] == "count":
        return cited == stored  # exact: a count has no rounding to hide behind
    target = shown(unit, stored)
    return cited.quantize(target) == target


def _own_words(text: str, facts: Facts) -> str:
    """``text`` without its placeholders and the names of measures and slices: what the writer
    says in its own words."""
    rest = PLACEHOLDER.sub(" ", text)
    for name in sorted({*facts.names.values(), *facts.names}, key=len, reverse=True):
        rest = rest.replace(name, " ")
    for _, slice_, _ in facts.values:
        rest = rest.replace(slice_.split(":", 1)[-1], " ")
    return rest


def _figures_left(text: str, facts: Facts) -> bool:
    """Digits in ``text`` outside placeholders and the names of measures and slices."""
    rest = NAMED_DIGITS.sub(" ", _own_words(text, facts))
    return any(ch.isdigit() for ch in rest)


def text_directions(text: str, facts: Facts) -> list[str]:
    """The directions the words of ``text`` claim ("rose", "fell", "unchanged"), in that order."""
    rest = _own_words(text, facts)
    return [direction for direction, words in DIRECTION_CLAIMS.items() if words.search(rest)]


def statement_verify(statement: Any, facts: Facts, *, part: str) -> Check:
    """Verify one statement of an answer against ``facts``."""
    if not isinstance(statement, dict):
        return Check(part, False, "not an object")
    kpi, slice_, day = (str(statement.get(k) or "") for k in ("kpi", "slice", "date"))
    compared_to = statement.get("compared_to") or ""
    direction = str(statement.get("direction") or "")
    check = Check(
        part,
        False,
        kpi=kpi,
        slice=slice_,
        date=day,
        cited=str(statement.get("value")),
        compared_to=str(compared_to),
        direction=direction,
    )
    text = statement.get("text")
    if not isinstance(text, str) or not text.strip():
        check.reason = "no text"
        return check
    stored = facts.get(kpi, slice_, day)
    if stored is None:
        check.reason = "no stored value for this KPI, slice and date"
        return check
    unit = facts.units[kpi]
    check.stored = str(shown(unit, stored))
    cited = _cited(statement.get("value"))
    if cited is None or not _matches(unit, cited, stored):
        check.reason = WRONG_NUMBER
        return check
    if direction not in DIRECTIONS:
        check.reason = "unknown direction"
        return check
    if compared_to:
        if str(compared_to) >= day:  # ISO dates order as text
            check.reason = "compared with a date that is not earlier"
            return check
        before = facts.get(kpi, slice_, str(compared_to))
        if before is None:
            check.reason = "no stored value at the date compared with"
            return check
        check.actual_direction = direction_of(unit, stored, before)
        if direction != "none" and direction != check.actual_direction:
            check.reason = WRONG_DIRECTION
            return check
    elif direction != "none":
        check.reason = "a direction without a date to compare with"
        return check
    claimed = text_directions(text, facts)
    check.text_direction = ", ".join(claimed)
    if claimed:
        if check.actual_direction and any(c != check.actual_direction for c in claimed):
            check.reason = WRONG_DIRECTION  # the words say what the numbers do not
            return check
        if not compared_to:
            check.reason = "a direction without a date to compare with"
            return check
        if direction == "none":
            check.reason = "a direction in the text that its direction field does not claim"
            return check
    unknown = {f"{{{p}}}" for p in PLACEHOLDER.findall(text)} - set(PLACEHOLDERS)
    if unknown:
        check.reason = f"unknown placeholder {sorted(unknown)[0]}"
        return check
    if not compared_to and ("{previous}" in text or "{change}" in text):
        check.reason = "a change without a date to compare with"
        return check
    if "{data_through}" in text and not facts.data_through:
        check.reason = "no data-through date to state"
        return check
    if _figures_left(text, facts):
        check.reason = "figures written into the text instead of placeholders"
        return check
    check.ok = True
    return check


def statement_render(statement: dict[str, Any], facts: Facts) -> str:
    """The published sentence: every placeholder filled from the stored values (a verified
    statement's own digits never reach a reader)."""
    kpi, slice_, day = statement["kpi"], statement["slice"], statement["date"]
    unit = facts.units[kpi]
    now = facts.get(kpi, slice_, day)
    compared_to = statement.get("compared_to") or ""
    before = facts.get(kpi, slice_, compared_to) if compared_to else None
    fills = {
        "value": display(unit, now),
        "previous": display(unit, before) if before is not None else "",
        "change": change_display(unit, now, before) if before is not None else "",
        "date": day,
        "compared_to": compared_to,
        "kpi": facts.names.get(kpi, kpi),
        "slice": "the whole portfolio" if slice_ == "portfolio" else slice_.split(":", 1)[-1],
        "data_through": facts.data_through,
    }
    return PLACEHOLDER.sub(lambda m: fills.get(m.group(1), m.group(0)), statement["text"])


@dataclass
class Verified:
    """An answer after verification: its headline's and statements' checks, what survived."""

    checks: list[Check]
    headline: dict[str, Any] | None  # None when the headline failed
    statements: list[dict[str, Any]]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def answer_verify(answer: Any, facts: Facts) -> Verified:
    """Verify a whole answer: a failing statement is dropped, a failing headline fails it."""
    if not isinstance(answer, dict):
        return Verified([Check("answer", False, "not an object")], None, [])
    headline = answer.get("headline")
    checks = [statement_verify(headline, facts, part="headline")]
    kept = []
    statements = answer.get("statements")
    if not isinstance(statements, list):
        checks.append(Check("statements", False, "not a list"))
        statements = []
    for i, statement in enumerate(statements, start=1):
        check = statement_verify(statement, facts, part=f"statement {i}")
        checks.append(check)
        if check.ok:
            kept.append(statement)
    return Verified(checks, headline if checks[0].ok else None, kept)
