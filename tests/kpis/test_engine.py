"""Golden tests of the KPI engine: tiny books whose every number is worked out by hand below
(docs/kpis.md, "KPI definitions", version 2), then reproducibility, restatement and the quality gate.

As-of date R means end of day R. Expected values are exact Decimals; KpiValue stores ten places.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from kpis import definitions
from kpis.engine import book, facts, incremental, snapshot_compute
from kpis.models import KpiValue, LoanState, SnapshotRun
from loans.lineage import BOOK_LOCK
from loans.models import Batch, BatchChange, Transaction
from loans.segments import customer_segments_refresh
from tests.factories import batch_create
from tests.kpis import books as p

pytestmark = pytest.mark.django_db

R = p.GOLDEN_AS_OF
D = Decimal
NO_BUCKETS = {
    f"bucket_{measure}_{code}": D(0)
    for measure in ("balance", "count")
    for code, *_ in definitions.BUCKETS
}
# No loan of the golden book is repaid but for a residual.
NO_RESIDUALS = {"residual_loans": D(0), "residual_balance": D(0)}
PAR_CODES = [f"par_{n}" for n in definitions.PAR_DAYS]
# The monthly rates read the previous month-end's snapshot: none exists in a one-date test.
NO_MONTHLY_RATES = dict.fromkeys(("liquidation_rate", "cdr", "smm", "cpr", "cac"))


def due(principal: str, loans: int) -> dict:
    """due_<n>_principal and due_<n>_loans, equal in every window: the golden book's live loans
    have nothing due after 2025-04-30 (L2 3,000 on 04-10 and L6 1,000 on 04-30, both within
    R + 30; L1 and L3 have nothing left to fall due; L5 is written off)."""
    return {
        **{f"due_{n}_principal": D(principal) for n in definitions.DUE_DAYS},
        **{f"due_{n}_loans": D(loans) for n in definitions.DUE_DAYS},
    }


SLICE_CODES = (
    "outstanding_principal",
    "par_30",
    "disbursements",
    "collection_rate",
    "weighted_average_interest_rate",
    "active_borrowers",
    "top_1_share",
    "hhi",
)


def values(run: SnapshotRun, dimension: str = "portfolio", member: str = "") -> dict:
    return {
        v.code: v.value
        for v in KpiValue.objects.filter(run=run, dimension=dimension, member=member)
    }


def value(run: SnapshotRun, code: str, dimension: str = "portfolio", member: str = "") -> KpiValue:
    return KpiValue.objects.get(run=run, code=code, dimension=dimension, member=member)


def states(run: SnapshotRun) -> dict[str, tuple]:
    """loan id -> (outstanding principal, DPD, bucket, written off, written-off balance)."""
    return {
        s.loan.loan_id: (
            s.outstanding_principal,
            s.dpd,
            s.bucket,
            s.written_off,
            s.written_off_balance,
        )
        for s in LoanState.objects.filter(run=run).select_related("loan")
    }


def state(run: SnapshotRun, loan_id: str) -> tuple | None:
    return states(run).get(loan_id)


def live(ob: str, dpd: int, bucket: str) -> tuple:
    return (D(ob), dpd, bucket, False, D(0))


def gone(balance: str, dpd: int) -> tuple:
    return (D(0), dpd, "written_off", True, D(balance))


# --- The golden book (tests/kpis/books.py: golden_book), read at R = 2025-03-31 ------------

# Loan states at R:
#   L1 paid 5,000 + 1,000 (ON R) of 11,000 → OB 5,000; 02-15 covered (5,000 ≤ 6,000), 03-15 not
#      (11,000 > 6,000) → DPD 03-31 − 03-15 = 16 → 8–30
#   L2 OB 3,000, due 04-10 (after R) → DPD 0, current
#   L3 OB 1,000, due 2024-11-01 → DPD 30 (Nov) + 31 + 31 + 28 + 30 = 150 → 91–180
#   L4 paid off → no state
#   L5 1,500 − 500 = 1,000 left, due 2024-09-01 → DPD 211 > 180 → written off, OB 0
#   L6 disbursed ON R → OB 1,000, DPD 0
#   L7 disbursed after R → nothing
GOLDEN_STATES = {
    "L1": live("5000", 16, "8_30"),
    "L2": live("3000", 0, "current"),
    "L3": live("1000", 150, "91_180"),
    "L5": gone("1000", 211),
    "L6": live("1000", 0, "current"),
}

# Portfolio: OB = 5,000 + 3,000 + 1,000 + 1,000 = 10,000; written off 1,000.
# PAR1 = PAR7 = (5,000 + 1,000) / 10,000; PAR30/60/90 = 1,000 / 10,000.
# March up to R: disbursed L2 3,000 + L6 1,000 = 4,000 in 2 loans → ticket 2,000.
# Collection: due in March = L1 03-15 6,000 + 200 + 40 + 10 = 6,250; paid in March = L1 on R
#   1,000 + 200 + 40 + 10 = 1,250 (tax is not a part; L4's February payment is not in March) → 0.2.
#   That payment meets 03-15 (02-15 was covered by February's 5,000): overdue, none current or ahead.
# WAIR = (0.24 × 5,000 + 0.36 × 3,000 + 0.30 × 1,000 + 0.18 × 1,000) / 10,000 = 2,760 / 10,000.
# Borrowers with OB > 0: C1 5,000, C2 3,000, C3 2,000 → 3 (C4 is written off).
# Repeat: C1 (L1, L4) and C3 (L3, L6) of C1..C4 (L7 is after R, so C2 has one loan) → 2 / 4.
# Concentration: shares 0.5, 0.3, 0.2 → top-1 0.5, top-10 1, HHI 50² + 30² + 20² = 3,800.
GOLDEN_PORTFOLIO = {
    **NO_BUCKETS,
    **NO_RESIDUALS,
    **NO_MONTHLY_RATES,
    **due("4000", 2),
    "outstanding_principal": D("10000"),
    "written_off_balance": D("1000"),
    "par_1": D("0.6"),
    "par_7": D("0.6"),
    "par_30": D("0.1"),
    "par_60": D("0.1"),
    "par_90": D("0.1"),
    "bucket_balance_current": D("4000"),
    "bucket_balance_8_30": D("5000"),
    "bucket_balance_91_180": D("1000"),
    "bucket_balance_written_off": D("1000"),
    "bucket_count_current": D(2),
    "bucket_count_8_30": D(1),
    "bucket_count_91_180": D(1),
    "bucket_count_written_off": D(1),
    "disbursements": D("4000"),
    "disbursement_count": D(2),
    "average_ticket": D("2000"),
    "collection_rate": D("0.2"),
    "collections_overdue": D("1250"),
    "collections_current": D("0"),
    "collections_advance": D("0"),
    "weighted_average_interest_rate": D("0.276"),
    "active_borrowers": D(3),
    "repeat_borrower_rate": D("0.5"),
    "top_1_share": D("0.5"),
    "top_10_share": D("1"),
    "hhi": D("3800"),
}

# Tech = factoring slice without L5: L1 5,000 (DPD 16), L2 3,000 (current), L4 paid off.
# OB 8,000; PAR1 = PAR7 = 5,000 / 8,000 = 0.625; disbursed L2 3,000; collection 1,250 / 6,250;
# WAIR (1,200 + 1,080) / 8,000 = 0.285; C1, C2 active; repeat C1 of C1, C2 = 0.5;
# shares 0.625, 0.375 → HHI 62.5² + 37.5² = 3,906.25 + 1,406.25 = 5,312.5.
GOLDEN_TECH = {
    **NO_BUCKETS,
    **NO_RESIDUALS,
    **NO_MONTHLY_RATES,
    **due("3000", 1),
    "outstanding_principal": D("8000"),
    "written_off_balance": D("0"),
    "par_1": D("0.625"),
    "par_7": D("0.625"),
    "par_30": D("0"),
    "par_60": D("0"),
    "par_90": D("0"),
    "bucket_balance_current": D("3000"),
    "bucket_balance_8_30": D("5000"),
    "bucket_count_current": D(1),
    "bucket_count_8_30": D(1),
    "disbursements": D("3000"),
    "disbursement_count": D(1),
    "average_ticket": D("3000"),
    "collection_rate": D("0.2"),
    "collections_overdue": D("1250"),
    "collections_current": D("0"),
    "collections_advance": D("0"),
    "weighted_average_interest_rate": D("0.285"),
    "active_borrowers": D(2),
    "repeat_borrower_rate": D("0.5"),
    "top_1_share": D("0.625"),
    "top_10_share": D("1"),
    "hhi": D("5312.5"),
}
# Factoring = Tech plus L5 (written off, C4): the same live numbers, 1,000 written off, and
# repeaters C1 of C1, C2, C4 = 1/3 (stored to ten places).
GOLDEN_FACTORING = {
    **GOLDEN_TECH,
    "written_off_balance": D("1000"),
    "bucket_balance_written_off": D("1000"),
    "bucket_count_written_off": D(1),
    "repeat_borrower_rate": D("0.3333333333"),
}
# Working capital = L3 (1,000, DPD 150) and L6 (1,000, on R), both C3: OB 2,000, every PAR
# 1,000 / 2,000; disbursed L6; nothing due in March → no collection rate;
# WAIR (300 + 180) / 2,000 = 0.24; C3 alone: repeat 1/1, top-1 1, HHI 10,000.
GOLDEN_WORKING_CAPITAL = {
    **NO_BUCKETS,
    **NO_RESIDUALS,
    **NO_MONTHLY_RATES,
    **due("1000", 1),
    "outstanding_principal": D("2000"),
    "written_off_balance": D("0"),
    **{f"par_{n}": D("0.5") for n in definitions.PAR_DAYS},
    "bucket_balance_current": D("1000"),
    "bucket_balance_91_180": D("1000"),
    "bucket_count_current": D(1),
    "bucket_count_91_180": D(1),
    "disbursements": D("1000"),
    "disbursement_count": D(1),
    "average_ticket": D("1000"),
    "collection_rate": None,
    "collections_overdue": D("0"),
    "collections_current": D("0"),
    "collections_advance": D("0"),
    "weighted_average_interest_rate": D("0.24"),
    "active_borrowers": D(1),
    "repeat_borrower_rate": D("1"),
    "top_1_share": D("1"),
    "top_10_share": D("1"),
    "hhi": D("10000"),
}
# Financial = working capital plus L5 (written off, C4): repeaters C3 of C3, C4 = 0.5.
GOLDEN_FIN = {
    **GOLDEN_WORKING_CAPITAL,
    "written_off_balance": D("1000"),
    "bucket_balance_written_off": D("1000"),
    "bucket_count_written_off": D(1),
    "repeat_borrower_rate": D("0.5"),
}


@pytest.fixture
def golden_run() -> SnapshotRun:
    p.golden_book()
    return snapshot_compute(as_of=R)


def test_the_golden_book_has_the_loan_states_worked_out_by_hand(golden_run):
    assert states(golden_run) == GOLDEN_STATES
    assert golden_run.loans == 5


def test_the_golden_book_has_every_kpi_worked_out_by_hand_for_the_portfolio(golden_run):
    assert set(GOLDEN_PORTFOLIO) == set(definitions.BY_CODE)
    assert values(golden_run) == GOLDEN_PORTFOLIO


@pytest.mark.parametrize(
    ("dimension", "member", "expected"),
    [
        ("company", p.ABACO_TECH, GOLDEN_TECH),
        ("company", p.ABACO_FIN, GOLDEN_FIN),
        ("product", p.FACTORING, GOLDEN_FACTORING),
        ("product", p.WORKING_CAPITAL, GOLDEN_WORKING_CAPITAL),
        # Every golden loan is in USD: the currency slice is the whole portfolio.
        ("currency", "USD", GOLDEN_PORTFOLIO),
    ],
)
def test_the_golden_book_has_every_kpi_worked_out_by_hand_per_slice(
    golden_run, dimension, member, expected
):
    assert values(golden_run, dimension, member) == expected


def test_the_golden_book_stores_one_value_per_kpi_per_slice_and_nothing_else(golden_run):
    slices = set(
        KpiValue.objects.filter(run=golden_run).values_list("dimension", "member").distinct()
    )
    assert slices == {
        ("portfolio", ""),
        ("company", p.ABACO_TECH),
        ("company", p.ABACO_FIN),
        ("product", p.FACTORING),
        ("product", p.WORKING_CAPITAL),
        ("currency", "USD"),
        ("segment", ""),  # no customer has a segment yet (loans.segments sets them)
    }
    assert KpiValue.objects.filter(run=golden_run).count() == 7 * len(definitions.KPIS)
    assert set(
        KpiValue.objects.filter(run=golden_run).values_list("as_of", "definition_version")
    ) == {(R, definitions.VERSION)}


def test_ratios_store_their_numerator_and_denominator(golden_run):
    par_30 = value(golden_run, "par_30")
    assert (par_30.numerator, par_30.denominator) == (D("1000"), D("10000"))
    collection = value(golden_run, "collection_rate")
    assert (collection.numerator, collection.denominator) == (D("1250"), D("6250"))
    repeat = value(golden_run, "repeat_borrower_rate", "product", p.FACTORING)
    assert (repeat.numerator, repeat.denominator) == (D(1), D(3))
    nothing_due = value(golden_run, "collection_rate", "company", p.ABACO_FIN)
    assert (nothing_due.value, nothing_due.numerator, nothing_due.denominator) == (
        None,
        D(0),
        None,
    )


# --- Bullet loans: 1,000 due 2025-01-31 ----------------------------------------------------------


def test_a_bullet_loan_paid_on_its_due_date_is_never_past_due():
    p.bullet_book(paid_on=date(2025, 1, 31))
    # The day before: due tomorrow, nothing late.
    assert state(snapshot_compute(as_of=date(2025, 1, 30)), "B1") == live("1000", 0, "current")
    # ON the due date the payment (dated R) counts and the loan has no balance left.
    on_due = snapshot_compute(as_of=date(2025, 1, 31))
    assert states(on_due) == {}
    assert values(on_due)["outstanding_principal"] == 0


def test_a_bullet_loan_paid_late_is_past_due_until_the_payment():
    p.bullet_book(paid_on=date(2025, 2, 20))
    # 02-10 − 01-31 = 10 days.
    assert state(snapshot_compute(as_of=date(2025, 2, 10)), "B1") == live("1000", 10, "8_30")
    assert state(snapshot_compute(as_of=date(2025, 2, 19)), "B1") == live("1000", 19, "8_30")
    assert states(snapshot_compute(as_of=date(2025, 2, 20))) == {}


def test_an_unpaid_bullet_loan_grows_its_dpd_every_day():
    p.bullet_book()
    # Due ON R is not past due.
    assert state(snapshot_compute(as_of=date(2025, 1, 31)), "B1") == live("1000", 0, "current")
    assert state(snapshot_compute(as_of=date(2025, 2, 1)), "B1") == live("1000", 1, "1_7")
    assert state(snapshot_compute(as_of=date(2025, 2, 7)), "B1") == live("1000", 7, "1_7")
    assert state(snapshot_compute(as_of=date(2025, 2, 8)), "B1") == live("1000", 8, "8_30")
    # 01-31 → 02-28 is 28 days, → 03-02 is 30.
    assert state(snapshot_compute(as_of=date(2025, 3, 2)), "B1") == live("1000", 30, "8_30")
    assert state(snapshot_compute(as_of=date(2025, 3, 3)), "B1") == live("1000", 31, "31_60")


def test_an_unpaid_bullet_loan_is_written_off_after_180_days_past_due():
    p.bullet_book()
    due = date(2025, 1, 31)
    at_180 = snapshot_compute(as_of=due + timedelta(days=180))  # 2025-07-30
    assert state(at_180, "B1") == live("1000", 180, "91_180")
    assert values(at_180)["par_90"] == 1
    at_181 = snapshot_compute(as_of=due + timedelta(days=181))  # 2025-07-31
    assert state(at_181, "B1") == gone("1000", 181)
    # The balance leaves OB and PAR (an empty live book has no PAR) and is reported written off.
    assert {
        code: values(at_181)[code]
        for code in (
            "outstanding_principal",
            "written_off_balance",
            "par_1",
            "par_90",
            "bucket_balance_91_180",
            "bucket_balance_written_off",
            "bucket_count_written_off",
            "active_borrowers",
        )
    } == {
        "outstanding_principal": 0,
        "written_off_balance": D("1000"),
        "par_1": None,
        "par_90": None,
        "bucket_balance_91_180": 0,
        "bucket_balance_written_off": D("1000"),
        "bucket_count_written_off": 1,
        "active_borrowers": 0,
    }


def test_the_write_off_threshold_is_the_setting(settings):
    settings.WRITE_OFF_DPD = 90
    p.bullet_book()
    due = date(2025, 1, 31)
    assert state(snapshot_compute(as_of=due + timedelta(days=90)), "B1") == live(
        "1000", 90, "61_90"
    )
    assert state(snapshot_compute(as_of=due + timedelta(days=91)), "B1") == gone("1000", 91)


# --- Instalment loans: 3 × 1,000 due 02-01, 03-01, 04-01 -----------------------------------------


def test_a_partial_payment_is_applied_to_the_oldest_instalment_first():
    p.instalment_book()
    # Paid 1,000 + 400 = 1,400: 02-01 (cumulative 1,000) is covered, 03-01 (2,000) is not.
    # 03-20 − 03-01 = 19 days; OB 3,000 − 1,400 = 1,600.
    assert state(snapshot_compute(as_of=date(2025, 3, 20)), "I1") == live("1600", 19, "8_30")
    # Before the partial payment only 1,000 was paid; 03-01 was unpaid for 3 days.
    assert state(snapshot_compute(as_of=date(2025, 3, 4)), "I1") == live("2000", 3, "1_7")
    # ON 04-01 the 04-01 instalment is not past due; 03-01 still sets DPD: 31 days.
    assert state(snapshot_compute(as_of=date(2025, 4, 1)), "I1") == live("1600", 31, "31_60")


def test_an_instalment_due_on_the_as_of_date_is_not_past_due():
    book = p.instalment_book()
    book.cash("I1", date(2025, 3, 25), "600")  # 2,000 paid: 02-01 and 03-01 covered
    assert state(snapshot_compute(as_of=date(2025, 4, 1)), "I1") == live("1000", 0, "current")
    assert state(snapshot_compute(as_of=date(2025, 4, 2)), "I1") == live("1000", 1, "1_7")


def test_a_prepayment_lowers_the_balance_and_keeps_the_loan_current():
    p.prepaid_book()
    # P1 prepaid 2,500 on 01-20: 02-01 (1,000) and 03-01 (2,000) are covered → DPD 0, OB 500.
    run = snapshot_compute(as_of=date(2025, 3, 15))
    assert state(run, "P1") == live("500", 0, "current")
    # 04-01 (3,000) is not: one day late on 04-02.
    assert state(snapshot_compute(as_of=date(2025, 4, 2)), "P1") == live("500", 1, "1_7")


def test_an_overpaid_loan_floors_at_zero_and_leaves_the_loan_states():
    p.prepaid_book()
    # P2: 1,000 lent, 1,200 paid → OB max(−200, 0) = 0; only P1 (500 left) has a state.
    run = snapshot_compute(as_of=date(2025, 3, 15))
    assert set(states(run)) == {"P1"}
    assert values(run)["outstanding_principal"] == D("500")
    assert values(run)["active_borrowers"] == 1


# --- PAR and bucket boundaries --------------------------------------------------------------------

LADDER_AS_OF = date(2025, 6, 30)


def test_par_n_counts_a_loan_exactly_n_days_past_due():
    # One unpaid loan due exactly N days before R; "D0" is due ON R (current).
    p.dpd_ladder_book(
        as_of=LADDER_AS_OF,
        rungs={0: "4900", 1: "100", 7: "200", 30: "400", 60: "800", 90: "1600"},
    )
    run = snapshot_compute(as_of=LADDER_AS_OF)
    # OB = 4,900 + 100 + 200 + 400 + 800 + 1,600 = 8,000.
    # PAR1 = 3,100 / 8,000; PAR7 = 3,000 / 8,000; PAR30 = 2,800 / 8,000; PAR60 = 2,400 / 8,000;
    # PAR90 = 1,600 / 8,000.
    assert {code: values(run)[code] for code in ("outstanding_principal", *PAR_CODES)} == {
        "outstanding_principal": D("8000"),
        "par_1": D("0.3875"),
        "par_7": D("0.375"),
        "par_30": D("0.35"),
        "par_60": D("0.3"),
        "par_90": D("0.2"),
    }


def test_dpd_buckets_have_inclusive_upper_bounds():
    days = (7, 8, 30, 31, 60, 61, 90, 91, 180, 181)
    p.dpd_ladder_book(as_of=LADDER_AS_OF, rungs=dict.fromkeys(days, "1000"))
    run = snapshot_compute(as_of=LADDER_AS_OF)
    assert states(run) == {
        "D7": live("1000", 7, "1_7"),
        "D8": live("1000", 8, "8_30"),
        "D30": live("1000", 30, "8_30"),
        "D31": live("1000", 31, "31_60"),
        "D60": live("1000", 60, "31_60"),
        "D61": live("1000", 61, "61_90"),
        "D90": live("1000", 90, "61_90"),
        "D91": live("1000", 91, "91_180"),
        "D180": live("1000", 180, "91_180"),
        "D181": gone("1000", 181),
    }
    got = values(run)
    assert {code: got[code] for code in NO_BUCKETS} == {
        **NO_BUCKETS,
        "bucket_balance_1_7": D("1000"),
        "bucket_balance_8_30": D("2000"),
        "bucket_balance_31_60": D("2000"),
        "bucket_balance_61_90": D("2000"),
        "bucket_balance_91_180": D("2000"),
        "bucket_balance_written_off": D("1000"),
        "bucket_count_1_7": 1,
        "bucket_count_8_30": 2,
        "bucket_count_31_60": 2,
        "bucket_count_61_90": 2,
        "bucket_count_91_180": 2,
        "bucket_count_written_off": 1,
    }
    # Nine live loans of 1,000; D181 is written off: OB 9,000, every live loan is 1+ and 7+.
    assert got["outstanding_principal"] == D("9000")
    assert got["par_7"] == 1
    # 30+: D30 … D180 = 7 loans → 7,000 / 9,000 (ten places).
    assert got["par_30"] == D("0.7777777778")


# --- Cash that is not a plain payment -------------------------------------------------------------


def test_a_rebate_lowers_collections_but_not_the_principal():
    p.rebate_book()
    run = snapshot_compute(as_of=date(2025, 3, 31))
    # Principal paid 1,000 (the rebate has none) → OB 1,000; 03-10 covered → DPD 0.
    assert state(run, "R1") == live("1000", 0, "current")
    # Due in March 1,000 + 250 = 1,250; paid 1,000 + 250 − 125 = 1,125 → 0.9.
    collection = value(run, "collection_rate")
    assert (collection.value, collection.numerator, collection.denominator) == (
        D("0.9"),
        D("1125"),
        D("1250"),
    )


def test_a_reversal_is_ignored_by_the_engine():
    # The engine counts PAYMENT principal only (docs/kpis.md: "principal of PAYMENT
    # transactions"): a bounced payment reversed on 02-03 still pays the loan off and still
    # counts as collected. Recorded here so a change of definition is a deliberate new version.
    p.reversal_book()
    run = snapshot_compute(as_of=date(2025, 2, 28))
    assert states(run) == {}
    assert values(run)["outstanding_principal"] == 0
    # Due in February 1,020, paid 1,020 (the reversal is not subtracted) → 1.
    assert values(run)["collection_rate"] == 1


def test_an_explicit_write_off_before_180_days_writes_the_loan_off():
    p.write_off_book()
    # 02-28: 27 DPD, live.
    assert state(snapshot_compute(as_of=date(2025, 2, 28)), "W1") == live("1000", 27, "8_30")
    # 03-01: the WRITE_OFF transaction (its principal is not a payment) → 1,000 written off at 28 DPD.
    on_write_off = snapshot_compute(as_of=date(2025, 3, 1))
    assert state(on_write_off, "W1") == gone("1000", 28)
    assert values(on_write_off)["outstanding_principal"] == 0
    assert values(on_write_off)["written_off_balance"] == D("1000")
    # 300 recovered on 04-01 lowers the written-off balance; the loan stays written off.
    assert state(snapshot_compute(as_of=date(2025, 4, 30)), "W1")[2:] == (
        "written_off",
        True,
        D("700"),
    )


def test_collections_are_split_by_the_instalment_each_payment_meets():
    p.prepaid_book()
    run = snapshot_compute(as_of=date(2025, 1, 31))
    # P1's 2,500 on 01-20 meets its first instalment, due 02-01: after January → advance.
    # P2's 1,200 + 30 on 01-31 meets its instalment due that day → current.
    # (Golden book: L1's payment meets an instalment already late → overdue.)
    got = values(run)
    assert {code: got[code] for code in COLLECTION_CODES} == {
        "collections_overdue": D("0"),
        "collections_current": D("1230"),
        "collections_advance": D("2500"),
        # Due in January: P2 1,000 + 30; paid 2,500 + 1,230 → 3,730 / 1,030 (ten places): a
        # prepayment pushes the rate above 1.
        "collection_rate": D("3.6213592233"),
    }


COLLECTION_CODES = (
    "collections_overdue",
    "collections_current",
    "collections_advance",
    "collection_rate",
)


# --- Dates at the edge of the period --------------------------------------------------------------


def test_a_loan_disbursed_on_the_as_of_date_counts_from_that_day():
    p.bullet_book()  # disbursed 2025-01-01
    before = snapshot_compute(as_of=date(2024, 12, 31))
    assert states(before) == {}
    assert values(before)["outstanding_principal"] == 0
    on = snapshot_compute(as_of=date(2025, 1, 1))
    assert state(on, "B1") == live("1000", 0, "current")
    assert values(on)["outstanding_principal"] == D("1000")
    assert values(on)["disbursements"] == D("1000")


def test_a_month_with_nothing_due_has_no_collection_rate():
    # Due 01-31, paid late on 03-10: cash comes in during March, but nothing falls due in it.
    p.bullet_book(paid_on=date(2025, 3, 10))
    collection = value(snapshot_compute(as_of=date(2025, 3, 15)), "collection_rate")
    assert (collection.value, collection.numerator, collection.denominator) == (
        None,
        D("1030"),
        None,
    )


def test_collection_rate_counts_only_the_month_of_the_as_of_date_up_to_it():
    p.instalment_book()  # due 02-01, 03-01, 04-01; paid 1,030 on 02-01 and 400 on 03-05
    # R = 03-04: due in March up to R = 1,030; paid in March up to R = 0.
    assert values(snapshot_compute(as_of=date(2025, 3, 4)))["collection_rate"] == 0
    # R = 03-31: paid 400 / due 1,030 (ten places).
    assert values(snapshot_compute(as_of=date(2025, 3, 31)))["collection_rate"] == D("0.3883495146")


def test_disbursements_count_only_the_month_of_the_as_of_date(golden_run):
    # At R = 2025-04-01 only L7 (2,000, disbursed that day) is in April.
    april = snapshot_compute(as_of=date(2025, 4, 1))
    assert {code: values(april)[code] for code in ("disbursements", "disbursement_count")} == {
        "disbursements": D("2000"),
        "disbursement_count": 1,
    }
    assert values(april)["average_ticket"] == D("2000")


def test_an_empty_book_has_zero_balance_and_no_ratios():
    run = snapshot_compute(as_of=R)
    got = values(run)
    assert got["outstanding_principal"] == 0
    assert got["disbursement_count"] == 0
    assert [got[code] for code in (*PAR_CODES, "collection_rate", "hhi", "average_ticket")] == [
        None
    ] * 8


def test_currency_slices_split_the_book_by_loan_currency():
    p.two_currency_book()
    run = snapshot_compute(as_of=R)
    # USD: U1 1,000 current, disbursed in March; nothing due in March.
    usd = values(run, "currency", "USD")
    assert {code: usd[code] for code in SLICE_CODES} == {
        "outstanding_principal": D("1000"),
        "par_30": D("0"),
        "disbursements": D("1000"),
        "collection_rate": None,
        "weighted_average_interest_rate": D("0.24"),
        "active_borrowers": 1,
        "top_1_share": D("1"),
        "hhi": D("10000"),
    }
    # GTQ: G1 7,700 at 30 DPD (03-01 → 03-31), G2 2,300 current → OB 10,000, PAR30 0.77;
    # disbursed in March G2 2,300; due 7,890 in March, nothing paid → 0;
    # WAIR (0.30 × 7,700 + 0.20 × 2,300) / 10,000 = 2,770 / 10,000; HHI 77² + 23² = 6,458.
    gtq = values(run, "currency", "GTQ")
    assert {code: gtq[code] for code in SLICE_CODES} == {
        "outstanding_principal": D("10000"),
        "par_30": D("0.77"),
        "disbursements": D("2300"),
        "collection_rate": D("0"),
        "weighted_average_interest_rate": D("0.277"),
        "active_borrowers": 2,
        "top_1_share": D("0.77"),
        "hhi": D("6458"),
    }


# --- Monthly rates against the previous month-end (books.monthly_rates_book) -----------------

MONTHLY_CODES = ("liquidation_rate", "cdr", "smm", "cpr", "cac")


def test_monthly_rates_are_measured_from_the_previous_month_end():
    p.monthly_rates_book()
    february = snapshot_compute(as_of=p.MONTH_BEFORE)
    # 02-28: A 6,000 + B 1,000 (166 DPD, live) + D 3,000 = 10,000.
    assert values(february)["outstanding_principal"] == D("10000")
    run = snapshot_compute(as_of=R)
    # Liquidation: B (1,000) written off in March (197 DPD) / 10,000 = 0.1;
    #   CDR = 1 − 0.9^12 = 1 − 0.282429536481 = 0.717570463519.
    # SMM: principal paid in March 2,000 + 1,000 (A), scheduled in March 2,000 (A 03-10)
    #   → (3,000 − 2,000) / (10,000 − 2,000) = 0.125; CPR = 1 − 0.875^12 = 0.79858276199956…
    # CAC: March spend 600 + 300 = 900 / new customers C4, C5 (C1's A2 is a second loan,
    #   C6 borrows in April) = 450.
    codes = ("liquidation_rate", "cdr", "cpr", "cac")
    got = {code: value(run, code) for code in codes}
    assert {code: (v.value, v.numerator, v.denominator) for code, v in got.items()} == {
        "liquidation_rate": (D("0.1"), D("1000"), D("10000")),
        "cdr": (D("0.7175704635"), D("1000"), D("10000")),
        "cpr": (D("0.7985827620"), D("1000"), D("8000")),
        "cac": (D("450"), D("900"), D("2")),
    }
    smm = value(run, "smm")
    assert (smm.numerator, smm.denominator) == (D("1000"), D("8000"))
    # One entity, product and currency: the slices carry the same rates; CAC is portfolio only.
    company = values(run, "company", p.ABACO_TECH)
    assert [company[code] for code in codes] == [
        D("0.1"),
        D("0.7175704635"),
        D("0.7985827620"),
        None,
    ]


def test_smm_divides_by_the_opening_balance_net_of_scheduled_principal():
    p.monthly_rates_book()
    snapshot_compute(as_of=p.MONTH_BEFORE)
    run = snapshot_compute(as_of=R)
    # (3,000 − 2,000) / (10,000 − 2,000), as worked out above.
    assert value(run, "smm").value == D("0.125")
    assert values(run, "company", p.ABACO_TECH)["smm"] == D("0.125")


def test_monthly_rates_have_no_value_without_the_previous_month_end():
    p.monthly_rates_book()
    got = values(snapshot_compute(as_of=R))
    assert {code: got[code] for code in MONTHLY_CODES} == {
        **NO_MONTHLY_RATES,
        "cac": D("450"),  # needs no earlier snapshot
    }


def test_computing_a_missing_month_end_later_is_not_a_restatement():
    p.monthly_rates_book()
    reported = snapshot_compute(as_of=R)
    snapshot_compute(as_of=p.MONTH_BEFORE)
    again = snapshot_compute(as_of=R)
    assert not SnapshotRun.objects.of_date(R).restated().exists()
    assert again.basis == SnapshotRun.Basis.AS_REPORTED
    assert again.pk == reported.pk or not SnapshotRun.objects.filter(pk=reported.pk).exists()


# --- Residuals (definitions v2; books.residual_book, RESIDUAL_TOLERANCE 0.02) ------------------

# At 2024-12-31 (nothing repaid yet but CENT's first installment):
#   CENT  20,000 − 6,595.91 = 13,404.09, 12-20 unpaid → DPD 11 → 8–30
#   THREE 1,000, 12-25 unpaid → DPD 6 → 1–7
#   CUR   2,000 current; W 300, 12-10 unpaid → DPD 21 → 8–30; LATE 700, 12-15 unpaid → DPD 16 → 8–30
# At 2025-01-31:
#   CENT  0.01 left: repaid (v1: 12-20 still unpaid → DPD 42, 31–60)
#   THREE 0.03 left: above the tolerance → live, 12-25 unpaid → DPD 37 → 31–60
#   TWO   0.02 left: at the tolerance → repaid
#   W     written off 01-15, 0.01 left after the recovery: repaid (v1: written off with 0.01)
#   CUR   2,000 current; LATE 700, DPD 47 → 31–60
RESIDUAL_STATES = {
    "THREE": live("0.03", 37, "31_60"),
    "CUR": live("2000", 0, "current"),
    "LATE": live("700", 47, "31_60"),
}
# Portfolio at 01-31: OB 2,000 + 0.03 + 700 = 2,700.03; PAR30 = 700.03 / 2,700.03; active
# borrowers C1 (CUR), C2, C5; residuals CENT 0.01 + TWO 0.02 + W 0.01 = 3 loans, 0.04.
RESIDUAL_PORTFOLIO = {
    "outstanding_principal": D("2700.03"),
    "written_off_balance": D("0"),
    "par_1": D("0.2592674896"),
    "par_30": D("0.2592674896"),
    "par_60": D("0"),
    "bucket_balance_31_60": D("700.03"),
    "bucket_count_31_60": D(2),
    "bucket_count_written_off": D(0),
    "active_borrowers": D(3),
    "residual_loans": D(3),
    "residual_balance": D("0.04"),
}
# Roll rates 12-31 → 01-31, by balance at 12-31: current 2,000 → current; 1–7 1,000 (THREE) →
# 31–60; 8–30 = CENT 13,404.09 + W 300 + LATE 700 = 14,404.09 → repaid 13,704.09 (0.9514026919),
# 31–60 700 (0.0485973081).
RESIDUAL_ROLL_RATES = [
    {"from": "current", "to": "current", "balance": "2000", "share": "1"},
    {"from": "1_7", "to": "31_60", "balance": "1000", "share": "1"},
    {"from": "8_30", "to": "31_60", "balance": "700", "share": "0.0485973081"},
    {"from": "8_30", "to": "repaid", "balance": "13704.09", "share": "0.9514026919"},
]
# Vintages: 2024-11 = CENT + LATE 20,700; 2024-12 = THREE + CUR + W 3,300; 2025-01 = TWO 500.
# Nothing written off at R (W is repaid); ever 30+: none at 12-31 (DPD 21 at most), LATE and THREE
# at 01-31 → 700 / 20,700 = 0.0338164251 and 1,000 / 3,300 = 0.3030303030 (v1 would count CENT's
# 20,000 too).
RESIDUAL_VINTAGES = [
    {"cohort": "2024-11", "months_on_book": 1, "written_off_share": "0", "ever_30_share": "0"},
    {
        "cohort": "2024-11",
        "months_on_book": 2,
        "written_off_share": "0",
        "ever_30_share": "0.0338164251",
    },
    {"cohort": "2024-12", "months_on_book": 0, "written_off_share": "0", "ever_30_share": "0"},
    {
        "cohort": "2024-12",
        "months_on_book": 1,
        "written_off_share": "0",
        "ever_30_share": "0.303030303",
    },
    {"cohort": "2025-01", "months_on_book": 0, "written_off_share": "0", "ever_30_share": "0"},
]


@pytest.fixture
def residual_runs() -> dict[date, SnapshotRun]:
    return p.residual_book().compute()


def test_a_loan_repaid_but_for_a_cent_has_no_state_and_rolls_to_repaid(residual_runs):
    december, january = (residual_runs[day] for day in p.RESIDUAL_MONTH_ENDS)
    assert state(december, "CENT") == live("13404.09", 11, "8_30")
    assert state(december, "W") == live("300", 21, "8_30")
    assert states(january) == RESIDUAL_STATES
    assert january.loans == 3
    rolls = {(r.from_bucket, r.to_bucket): (r.balance, r.share) for r in january.roll_rates.all()}
    assert rolls == {
        (row["from"], row["to"]): (D(row["balance"]), D(row["share"]))
        for row in RESIDUAL_ROLL_RATES
    }


def test_a_loan_with_three_cents_left_stays_delinquent(residual_runs):
    january = residual_runs[p.RESIDUAL_MONTH_ENDS[-1]]
    assert state(january, "THREE") == live("0.03", 37, "31_60")
    assert value(january, "par_30").numerator == D("700.03")


def test_the_residuals_are_reported_on_their_own_for_every_slice(residual_runs):
    january = residual_runs[p.RESIDUAL_MONTH_ENDS[-1]]
    got = values(january)
    assert {code: got[code] for code in RESIDUAL_PORTFOLIO} == RESIDUAL_PORTFOLIO
    assert values(january, "company", p.ABACO_TECH)["residual_balance"] == D("0.04")
    assert values(january, "currency", "USD")["residual_loans"] == D(3)
    # 12-31 has no residual: every loan has more than 0.02 left.
    assert [values(residual_runs[p.RESIDUAL_MONTH_ENDS[0]])[c] for c in NO_RESIDUALS] == [0, 0]


def test_the_residual_tolerance_is_the_setting(settings):
    settings.RESIDUAL_TOLERANCE = D("0")
    january = p.residual_book().compute()[p.RESIDUAL_MONTH_ENDS[-1]]
    # The v1 rule: every cent is a balance. CENT 42 DPD; W written off with 0.01 (12-10 unpaid →
    # 21 + 31 = 52 DPD); TWO 0.02 (due 01-25, paid that day but for 0.02: not covered → DPD 6, 1–7).
    assert states(january) == {
        **RESIDUAL_STATES,
        "CENT": live("0.01", 42, "31_60"),
        "TWO": live("0.02", 6, "1_7"),
        "W": gone("0.01", 52),
    }
    assert [values(january)[c] for c in NO_RESIDUALS] == [0, 0]


def test_a_date_reported_under_v1_is_restated_under_v2_with_the_version_as_reason(monkeypatch):
    p.residual_book()
    january = p.RESIDUAL_MONTH_ENDS[-1]
    with monkeypatch.context() as v1:
        # Definitions v1 counted every cent as a balance.
        v1.setattr(definitions, "VERSION", 1)
        v1.setattr("django.conf.settings.RESIDUAL_TOLERANCE", D("0"))
        reported = snapshot_compute(as_of=january)
    assert (reported.basis, reported.definition_version) == (SnapshotRun.Basis.AS_REPORTED, 1)
    assert state(reported, "CENT") == live("0.01", 42, "31_60")
    restated = snapshot_compute(as_of=january)
    assert (restated.basis, restated.definition_version) == (SnapshotRun.Basis.RESTATED, 2)
    assert restated.restatement_reason == "definition version 1 → 2"
    assert state(restated, "CENT") is None
    assert values(restated)["residual_loans"] == D(3)
    assert set(
        KpiValue.objects.filter(run=restated).values_list("definition_version", flat=True)
    ) == {2}
    # The as-reported run keeps its v1 numbers beside it: OB 2,700.03 + CENT 0.01 + TWO 0.02 (W's
    # 0.01 is written off).
    assert value(reported, "outstanding_principal").value == D("2700.06")
    assert value(reported, "outstanding_principal").definition_version == 1


def test_vintages_read_each_earlier_dates_restatement_not_what_v1_reported(monkeypatch):
    book = p.residual_book()
    with monkeypatch.context() as v1:
        v1.setattr(definitions, "VERSION", 1)
        v1.setattr("django.conf.settings.RESIDUAL_TOLERANCE", D("0"))
        book.compute()  # v1: CENT 42 DPD at 01-31, so cohort 2024-11 was all ever 30+
    book.compute()  # restated under v2
    february = snapshot_compute(as_of=date(2025, 2, 28))
    # Ever 30+ by 02-28 under v2: LATE (700 of 2024-11's 20,700) and THREE (1,000 of 3,300).
    ever_30 = {f"{point.cohort:%Y-%m}": point.ever_30 for point in february.vintage_points.all()}
    assert ever_30 == {"2024-11": D("700"), "2024-12": D("1000"), "2025-01": D(0)}


def test_a_v1_date_is_restated_under_v2_even_when_its_numbers_are_the_same(golden_run):
    SnapshotRun.objects.filter(pk=golden_run.pk).update(definition_version=1)
    KpiValue.objects.filter(run=golden_run).update(definition_version=1)
    restated = snapshot_compute(as_of=R)
    assert restated.basis == SnapshotRun.Basis.RESTATED
    assert restated.restatement_reason == "definition version 1 → 2"
    assert values(restated) == GOLDEN_PORTFOLIO
    # Recomputed again under v2, it stays a restatement (the new run replaces the old one).
    again = snapshot_compute(as_of=R)
    assert list(SnapshotRun.objects.of_date(R).order_by("basis").values_list("pk", "basis")) == [
        (golden_run.pk, SnapshotRun.Basis.AS_REPORTED),
        (again.pk, SnapshotRun.Basis.RESTATED),
    ]


# --- Reproducibility and restatement --------------------------------------------------------------


@pytest.fixture
def steward():
    return get_user_model().objects.create_user(username="sam.steward")


def test_the_first_run_of_a_date_is_as_reported_with_its_lineage(steward):
    book = p.golden_book()
    batch_create(kind=Batch.Kind.TAPE)  # not a book kind: not read
    batch_create(kind=Batch.Kind.LOANS, status=Batch.Status.PENDING, source="other")
    run = snapshot_compute(as_of=R, by=steward, job="compute_kpis")
    run.refresh_from_db()
    assert run.basis == SnapshotRun.Basis.AS_REPORTED
    assert run.definition_version == definitions.VERSION == 2
    assert run.restatement_reason == ""
    assert set(run.batches.all()) == set(book.tape.batches())
    assert (run.computed_by, run.job, run.provisional, run.provisional_reasons) == (
        steward,
        "compute_kpis",
        False,
        [],
    )
    assert len(run.data_fingerprint) == 64


def test_recomputing_unchanged_data_returns_the_as_reported_run(golden_run):
    again = snapshot_compute(as_of=R, job="again")
    assert again.pk == golden_run.pk
    assert list(SnapshotRun.objects.of_date(R).values_list("basis", flat=True)) == [
        SnapshotRun.Basis.AS_REPORTED
    ]
    assert values(again) == GOLDEN_PORTFOLIO
    assert KpiValue.objects.count() == 7 * len(definitions.KPIS)
    assert LoanState.objects.count() == 5


def late_payment(book: p.Book, loan: str, on: date, principal: str) -> Batch:
    """A correction: a new transactions batch bringing a payment dated before R."""
    batch = batch_create(kind=Batch.Kind.TRANSACTIONS)
    book.cash(loan, on, principal, batch=batch)
    return batch


def test_a_late_correction_is_stored_as_a_restatement_beside_the_as_reported_run():
    book = p.golden_book()
    reported = snapshot_compute(as_of=R)
    correction = late_payment(book, "L3", date(2025, 3, 20), "1000")
    restated = snapshot_compute(as_of=R)
    assert restated.basis == SnapshotRun.Basis.RESTATED
    assert restated.pk != reported.pk
    assert restated.restatement_reason == (
        "the numbers changed since it was reported (a late correction)"
    )
    # L3 paid off in March: OB 10,000 − 1,000 = 9,000, no 30+ left; collected 1,250 + 1,000.
    assert [
        values(restated)[c] for c in ("outstanding_principal", "par_30", "collection_rate")
    ] == [
        D("9000"),
        D("0"),
        D("0.36"),
    ]
    assert "L3" not in states(restated)
    # The as-reported run is untouched and both can be read.
    assert values(reported) == GOLDEN_PORTFOLIO
    assert states(reported) == GOLDEN_STATES
    assert set(SnapshotRun.objects.of_date(R).values_list("basis", "pk")) == {
        (SnapshotRun.Basis.AS_REPORTED, reported.pk),
        (SnapshotRun.Basis.RESTATED, restated.pk),
    }
    assert correction in restated.batches.all()
    assert correction not in reported.batches.all()


def test_a_later_recompute_replaces_the_restatement():
    book = p.golden_book()
    reported = snapshot_compute(as_of=R)
    late_payment(book, "L3", date(2025, 3, 20), "1000")
    first = snapshot_compute(as_of=R)
    late_payment(book, "L2", date(2025, 3, 25), "1000")
    second = snapshot_compute(as_of=R)
    restated = SnapshotRun.objects.of_date(R).restated()
    assert list(restated) == [second]
    assert not SnapshotRun.objects.filter(pk=first.pk).exists()
    assert not KpiValue.objects.filter(run_id=first.pk).exists()
    assert not LoanState.objects.filter(run_id=first.pk).exists()
    # 10,000 − 1,000 (L3) − 1,000 (L2) = 8,000; the as-reported run still says 10,000.
    assert values(second)["outstanding_principal"] == D("8000")
    assert values(reported)["outstanding_principal"] == D("10000")


def test_a_correction_that_is_withdrawn_withdraws_the_restatement():
    book = p.golden_book()
    reported = snapshot_compute(as_of=R)
    late_payment(book, "L3", date(2025, 3, 20), "1000")
    snapshot_compute(as_of=R)
    Transaction.objects.filter(loan=book.loans["L3"]).delete()
    assert snapshot_compute(as_of=R).pk == reported.pk
    assert list(SnapshotRun.objects.of_date(R)) == [reported]


# --- Consistency with imports ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # two connections: the import's and the snapshot's
def test_a_snapshot_waits_for_a_running_import_to_commit():
    p.golden_book()
    locked, release = threading.Event(), threading.Event()

    def importing() -> None:  # holds the lock every tape import holds for its transaction
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [BOOK_LOCK])
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    def computing() -> SnapshotRun:
        try:
            return snapshot_compute(as_of=R)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        held = pool.submit(importing)
        assert locked.wait(10)
        snapshot = pool.submit(computing)
        time.sleep(0.5)
        waited = not snapshot.done()
        release.set()
        assert waited  # for the import to commit
        held.result(timeout=10)
        run = snapshot.result(timeout=30)
    assert run.loans == 5  # the golden book read whole


# --- Quality gate ---------------------------------------------------------------------------------


def test_a_failed_latest_import_makes_the_run_provisional_and_says_which():
    p.golden_book()
    failed = batch_create(
        source="cascade", kind=Batch.Kind.TRANSACTIONS, status=Batch.Status.FAILED
    )
    run = snapshot_compute(as_of=R)
    assert run.provisional
    assert run.provisional_reasons == [
        f"the latest transactions import from cascade (batch {failed.pk}) failed with errors"
    ]
    assert failed not in run.batches.all()


def test_a_failed_import_followed_by_a_good_one_is_not_a_reason():
    book = p.golden_book()
    batch_create(source="cascade", kind=Batch.Kind.TRANSACTIONS, status=Batch.Status.FAILED)
    late_payment(book, "L2", date(2025, 3, 25), "1")
    run = snapshot_compute(as_of=R)
    assert (run.provisional, run.provisional_reasons) == (False, [])


def test_a_tape_change_waiting_for_a_steward_makes_the_run_provisional():
    book = p.golden_book()
    BatchChange.objects.create(
        batch=book.tape.loans,
        kind="loans",
        key="L1",
        fields={"disburse_principal": ["10000.00", "11000.00"]},
        review=BatchChange.Review.PENDING,
    )
    BatchChange.objects.create(
        batch=book.tape.loans, kind="loans", key="L2", review=BatchChange.Review.ACCEPTED
    )
    run = snapshot_compute(as_of=R)
    assert run.provisional
    assert run.provisional_reasons == ["1 tape-diff change(s) wait for a steward's review"]


def test_a_recompute_after_the_review_clears_the_provisional_flag():
    book = p.golden_book()
    change = BatchChange.objects.create(
        batch=book.tape.loans, kind="loans", key="L1", review=BatchChange.Review.PENDING
    )
    assert snapshot_compute(as_of=R).provisional
    change.review = BatchChange.Review.ACCEPTED
    change.save()
    run = snapshot_compute(as_of=R)
    run.refresh_from_db()
    assert (run.provisional, run.provisional_reasons) == (False, [])


def test_the_segment_dimension_slices_every_kpi_by_the_customers_segment_at_the_snapshot():
    p.golden_book()
    customer_segments_refresh(as_of=R)
    run = snapshot_compute(as_of=R)
    # C1 (L1 after the repaid L4) and C3 (L6 while L3 is open) borrow again without a break;
    # C2 and C4 have one loan each by R.
    recurrent, new = values(run, "segment", "recurrent"), values(run, "segment", "new")
    assert (recurrent["outstanding_principal"], recurrent["par_30"]) == (
        D("7000"),
        D("0.1428571429"),  # stored at the KPI value column's precision
    )
    assert (new["outstanding_principal"], new["written_off_balance"], new["par_30"]) == (
        D("3000"),
        D("1000"),
        D(0),
    )
    assert (recurrent["disbursements"], new["disbursements"]) == (D("1000"), D("3000"))
    assert set(LoanState.objects.filter(run=run).values_list("segment", flat=True)) == {
        "new",
        "recurrent",
    }


def test_vintages_count_loans_30_plus_at_a_month_end_not_on_a_day_in_between():
    """Ever-30+ observes month-ends (docs/kpis.md): a loan 30+ DPD on a day kpi_daily or an
    operator happened to store, and caught up by the month-end, is not in the curve."""
    book = p.Book(month_ends=(date(2024, 12, 31), date(2025, 1, 31)))
    # Due 12-10, paid 01-12: 21 DPD at 12-31, 32 DPD on 01-11, current at 01-31.
    book.lend(
        "CAUGHT_UP",
        customer="C1",
        principal="1000",
        on=date(2024, 11, 10),
        schedule=((date(2024, 12, 10), "500"), (date(2025, 2, 10), "500")),
        paid=((date(2025, 1, 12), "500"),),
    )
    # Due 12-01, never paid: 30 DPD at 12-31, in the curve.
    book.lend(
        "LATE",
        customer="C2",
        principal="3000",
        on=date(2024, 11, 1),
        schedule=((date(2024, 12, 1), "3000"),),
    )
    snapshot_compute(as_of=date(2024, 12, 31))
    mid_month = snapshot_compute(as_of=date(2025, 1, 11))
    assert state(mid_month, "CAUGHT_UP")[1] == 32
    january = snapshot_compute(as_of=date(2025, 1, 31))
    points = {v.cohort: v.ever_30 for v in january.vintage_points.all()}
    assert points == {date(2024, 11, 1): D("3000")}


# --- plans under the table's statistics ------------------------------------------------------------


def _scans(plan: dict, relation: str) -> list[dict]:
    """The plan's nodes that scan ``relation``."""
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += _scans(child, relation)
    return found


def test_a_run_s_states_are_not_estimated_as_one_row_once_the_stored_runs_are_analyzed():
    # Once ANALYZE (autovacuum, on a server) lists every stored run among the most common values,
    # a run id compared as a constant is estimated at one row while the run is computed: the roll
    # rates then joined its states in a nested loop over every pair (over ten minutes on the
    # 1M-loan book). The engine compares run ids the planner does not see.
    p.monthly_rates_book()
    snapshot_compute(as_of=p.MONTH_BEFORE)
    run = snapshot_compute(as_of=R)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE kpis_loanstate")
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) {facts.ROLL_RATES}",
            {"run": run.pk + 1000, "month_before": p.MONTH_BEFORE},
        )
        plan = cursor.fetchone()[0][0]["Plan"]
    scans = _scans(plan, "kpis_loanstate")
    assert len(scans) == 2
    # A probe of one loan's state (a parameterized index scan) is one row; a scan of the run's
    # states is not.
    conditions = {
        scan.get("Index Cond") or scan.get("Recheck Cond") or scan.get("Filter", ""): scan[
            "Plan Rows"
        ]
        for scan in scans
    }
    whole_run = {cond: rows for cond, rows in conditions.items() if "loan_id" not in cond}
    assert whole_run, conditions
    assert all(rows > 1 for rows in whole_run.values()), conditions


def test_no_engine_statement_compares_a_run_of_loan_states_with_a_constant():
    constant = re.compile(r"run_id = %\(")
    statements = {
        f"{module.__name__}.{name}": text
        for module in (book, facts, incremental)
        for name, text in vars(module).items()
        if isinstance(text, str) and ("kpis_loanstate" in text or "kpis_loanresidual" in text)
    }
    assert "kpis.engine.facts.ROLL_RATES" in statements
    assert [name for name, text in statements.items() if constant.search(text)] == []
