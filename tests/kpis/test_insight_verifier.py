"""The verifier's rules, one by one, on stored values held in memory (no database needed)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from kpis.insights.digest import Facts
from kpis.insights.verify import WRONG_DIRECTION, WRONG_NUMBER, statement_render, statement_verify

NOW, BEFORE = "2025-11-30", "2025-10-31"


@pytest.fixture
def facts() -> Facts:
    facts = Facts()
    for day, ob, par, borrowers in (
        (date(2025, 10, 31), "7574541.25", "0.0376", "118"),
        (date(2025, 11, 30), "7813644.74", "0.0331", "122"),
    ):
        facts.add(
            "outstanding_principal", "portfolio", day, Decimal(ob), "USD", "Outstanding principal"
        )
        facts.add("par_30", "portfolio", day, Decimal(par), "ratio", "Portfolio at risk 30+")
        facts.add(
            "active_borrowers", "portfolio", day, Decimal(borrowers), "count", "Active borrowers"
        )
    return facts


def statement(**overrides):
    base = {
        "text": "{kpi} of {slice} fell to {value} from {previous} ({change}).",
        "kpi": "par_30",
        "slice": "portfolio",
        "date": NOW,
        "value": 3.31,
        "compared_to": BEFORE,
        "direction": "fell",
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, ""),
        ({"value": 3.3}, WRONG_NUMBER),  # 3.30 is not 3.31 at the two decimals shown
        ({"value": 3.314}, ""),  # a cited value is read at the displayed precision too
        ({"value": 3.32}, WRONG_NUMBER),
        ({"value": 0.0331}, WRONG_NUMBER),  # a fraction where the digest states percent
        ({"direction": "rose"}, WRONG_DIRECTION),
        ({"direction": "unchanged"}, WRONG_DIRECTION),
        # The text claims a direction too: its words are checked like the field.
        ({"direction": "none"}, "a direction in the text that its direction field does not claim"),
        ({"direction": "none", "text": "{kpi} of {slice} rose to {value}."}, WRONG_DIRECTION),
        ({"direction": "none", "text": "{kpi} of {slice} INCREASED to {value}."}, WRONG_DIRECTION),
        (
            {"direction": "none", "compared_to": None, "text": "{kpi} of {slice} decreased."},
            "a direction without a date to compare with",
        ),
        ({"direction": "none", "compared_to": None, "text": "{kpi} stood at {value}."}, ""),
        ({"direction": "none", "text": "{kpi} of {slice} stood at {value} on {date}."}, ""),
        ({"text": "{kpi} of {slice} increased to {value} from {previous}."}, WRONG_DIRECTION),
        ({"text": "{kpi} of {slice} held steady at {value}."}, WRONG_DIRECTION),
        ({"text": "{kpi} fell to {value} after it rose at {compared_to}."}, WRONG_DIRECTION),
        ({"text": "{kpi} of {slice} dropped to {value}, lower than {previous}."}, ""),
        ({"text": "{kpi} of {slice} is declining: {value} against {previous}."}, ""),
        ({"compared_to": None}, "a direction without a date to compare with"),
        ({"compared_to": "2025-12-31"}, "compared with a date that is not earlier"),
        ({"compared_to": "2025-09-30"}, "no stored value at the date compared with"),
        ({"date": "2025-09-30"}, "no stored value for this KPI, slice and date"),
        ({"slice": "company:ABF"}, "no stored value for this KPI, slice and date"),
        (
            {"text": "PAR30 fell to 3.31% from {previous}."},
            "figures written into the text instead of placeholders",
        ),
        ({"text": "{kpi} fell to {value} in {month}."}, "unknown placeholder {month}"),
        ({"text": "PAR30 fell to {value} from {previous}, within its 30+ DPD band."}, ""),
        ({"text": "  "}, "no text"),
    ],
)
def test_each_rule_of_a_statement(facts, overrides, reason):
    check = statement_verify(statement(**overrides), facts, part="statement 1")
    assert (check.ok, check.reason) == (not reason, reason)


def test_counts_are_exact_and_money_is_checked_to_the_whole_dollar(facts):
    rose = "{kpi} of {slice} rose to {value} from {previous}."
    count = statement(kpi="active_borrowers", value=122, direction="rose", text=rose)
    assert statement_verify(count, facts, part="s").ok
    assert statement_verify({**count, "value": 122.4}, facts, part="s").reason == WRONG_NUMBER
    money = statement(kpi="outstanding_principal", value=7813645, direction="rose", text=rose)
    assert statement_verify(money, facts, part="s").ok  # 7,813,644.74 shows as 7,813,645
    assert statement_verify({**money, "value": 7813644}, facts, part="s").reason == WRONG_NUMBER
    assert statement_verify({**money, "value": "a lot"}, facts, part="s").reason == WRONG_NUMBER


def test_the_published_sentence_prints_the_stored_values(facts):
    text = statement_render(statement(value=9.99), facts)
    assert text == (
        "Portfolio at risk 30+ of the whole portfolio fell to 3.31% from 3.76% (-0.45 pp)."
    )


def test_a_direction_in_the_words_of_a_name_is_no_claim(facts):
    """Names are taken out before the words are read: a slice named "Rising Tide" claims nothing."""
    facts.add("par_30", "company:Rising Tide", date(2025, 11, 30), Decimal("0.02"), "ratio", "x")
    check = statement_verify(
        statement(
            slice="company:Rising Tide",
            value=2,
            compared_to=None,
            direction="none",
            text="{kpi} of Rising Tide stood at {value}.",
        ),
        facts,
        part="s",
    )
    assert (check.ok, check.reason, check.text_direction) == (True, "", "")


def test_the_data_through_date_is_stated_only_when_the_book_has_one(facts):
    beyond = statement(
        compared_to=None,
        direction="none",
        text="The snapshot of {date} is dated after the book's data ends ({data_through}).",
    )
    assert statement_verify(beyond, facts, part="s").reason == "no data-through date to state"
    facts.data_through = "2025-11-15"
    assert statement_verify(beyond, facts, part="s").ok
    assert statement_render(beyond, facts) == (
        "The snapshot of 2025-11-30 is dated after the book's data ends (2025-11-15)."
    )
