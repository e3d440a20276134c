"""KPI definitions, version 2 (docs/kpis.md): each KPI's code, name, unit, formula, thresholds and
the SQL that computes it, side by side.

Each KPI's ``query`` reads one row of facts per slice (kpis.engine.facts builds them); the
engine stores exactly these; dashboards show ``formula`` next to the number; ``docs/kpis.md`` is
generated from this module (``manage.py kpi_docs``) and a test fails when the two differ. A
change of meaning is a new version: snapshots record the version that made them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from psycopg import sql

# 1: the first definitions. 2: a loan whose unpaid principal is at or below RESIDUAL_TOLERANCE counts as
# repaid (it was live down to 0.01), and the residuals are reported on their own.
VERSION = 2

PAR_DAYS = (1, 7, 30, 60, 90)
# (code suffix, label, lowest DPD, highest DPD); written-off loans are their own bucket.
BUCKETS = (
    ("current", "Current (0 DPD)", 0, 0),
    ("1_7", "1–7 DPD", 1, 7),
    ("8_30", "8–30 DPD", 8, 30),
    ("31_60", "31–60 DPD", 31, 60),
    ("61_90", "61–90 DPD", 61, 90),
    ("91_180", "91–180 DPD", 91, 180),
    ("written_off", "Written off", None, None),
)
# Slices: the whole portfolio and one per entity, product, currency and customer segment.
# Dimension -> its column of kpis_loanstate (and of loans_loan, but for the segment, which loans
# read from their customer).
DIMENSION_COLUMNS = {
    "company": "company",
    "product": "product_type",
    "currency": "currency",
    "segment": "segment",
}
DIMENSIONS = ("portfolio", *DIMENSION_COLUMNS)

# The facts a KPI's query reads, one row per slice (dimension, member), each table by its alias:
# s = facts_state (loan states: ob, written_off, par_N, bucket_balance_X, bucket_count_X,
# rate_x_ob), f = facts_flow (the month's cash flows and borrowers), c = facts_concentration,
# r = facts_rates (against the previous month-end, and CAC's inputs), u = facts_due, x =
# facts_residual (loans repaid but for a residual).


NULL = sql.SQL("NULL")


@dataclass(frozen=True)
class Query:
    """A KPI's SQL over the facts row: its value, and the numerator and denominator stored
    beside it (NULL when the KPI is no ratio)."""

    value: sql.Composable
    numerator: sql.Composable = field(default_factory=lambda: NULL)
    denominator: sql.Composable = field(default_factory=lambda: NULL)


def column(text: str) -> Query:
    """A fact as it is (SQL text over the facts row)."""
    return Query(sql.SQL(text))


def fact(alias: str, name: str, *, default: int | None = 0) -> Query:
    """A fact by name (``s.par_30``), coalesced to ``default``."""
    ident = sql.Identifier(alias, name)
    if default is None:
        return Query(ident)
    return Query(sql.SQL("coalesce({}, {})").format(ident, sql.Literal(default)))


def ratio(numerator: str | sql.Composable, denominator: str | sql.Composable) -> Query:
    """numerator / denominator, no value when the denominator is not positive."""
    n = sql.SQL(numerator) if isinstance(numerator, str) else numerator
    den = sql.SQL(denominator) if isinstance(denominator, str) else denominator
    # numeric division: counts are bigint, and bigint / bigint truncates to 0
    value = sql.SQL("CASE WHEN ({d}) > 0 THEN ({n})::numeric / ({d}) END").format(n=n, d=den)
    return Query(value, n, den)


@dataclass(frozen=True)
class Kpi:
    code: str
    name: str
    unit: str  # "USD", "ratio" (a fraction), "count", "index"
    formula: str
    query: Query
    example: str = ""
    edge_cases: str = ""
    amber: Decimal | None = None  # thresholds, in the KPI's unit
    red: Decimal | None = None
    higher_is_worse: bool = True
    version: int = VERSION
    dimensions: tuple[str, ...] = field(default=DIMENSIONS)
    # Measured from the previous month-end's snapshot: no value until that snapshot exists, and a
    # value appearing later (the month-end computed after) is no restatement.
    from_previous_month_end: bool = False
    # Summed from the first of R's month to R: before a month-end it covers part of a month, so
    # it is no change against the previous month-end's whole month (kpis.insights.digest).
    month_to_date: bool = False

    def status(self, value: Decimal | None) -> str:
        """ "red", "amber" or "ok" against the thresholds ("" when the KPI has none)."""
        if value is None or self.amber is None:
            return ""
        worse: Callable[[Decimal, Decimal], bool] = (
            (lambda a, b: a >= b) if self.higher_is_worse else (lambda a, b: a <= b)
        )
        if self.red is not None and worse(value, self.red):
            return "red"
        return "amber" if worse(value, self.amber) else "ok"


RESIDUAL_RULE = (
    "A loan whose unpaid principal at R is at or below RESIDUAL_TOLERANCE (a setting; 0.02 in the loan's "
    "currency by default) counts as repaid: it has no OB, DPD or bucket, live or written off, and is in no "
    "count, list or table of loans; residual_loans and residual_balance report those residuals."
)
OB_RULE = (
    "OB(R) = principal disbursed on or before R − principal of PAYMENT transactions on or before R, "
    "floored at 0; a written-off loan's balance leaves OB. " + RESIDUAL_RULE
)
DPD_RULE = (
    "DPD(R): principal paid up to R is applied to the installments in due-date order; DPD = R − due date "
    "of the oldest installment still unpaid whose due date is before R; 0 when none. A loan with DPD > "
    "WRITE_OFF_DPD (180) or a WRITE_OFF transaction on or before R is written off. A loan repaid but for a "
    "residual at or below RESIDUAL_TOLERANCE counts as repaid: no DPD, not written off."
)

KPIS: list[Kpi] = [
    Kpi(
        "outstanding_principal",
        "Outstanding principal",
        "USD",
        "Σ OB(R) over loans disbursed on or before R and not written off. " + OB_RULE,
        query=fact("s", "ob"),
        example="Loan A: 1,000 lent, 400 repaid → 600; loan B written off with 300 left → 0. OB = 600.",
        edge_cases="A loan disbursed on R counts in full; a payment dated R reduces OB on R; overpayment floors at 0.",
    ),
    Kpi(
        "written_off_balance",
        "Written-off balance",
        "USD",
        "Σ (principal disbursed − principal paid) on or before R over written-off loans. "
        + DPD_RULE,
        query=fact("s", "written_off"),
        example="Loan B: 1,000 lent, 700 repaid, 181 days past due → 300 written off.",
        edge_cases="Recoveries after write-off (payments) reduce the written-off balance.",
    ),
    *[
        Kpi(
            f"par_{n}",
            f"Portfolio at risk {n}+",
            "ratio",
            f"Σ OB of loans with DPD ≥ {n} / Σ OB, both net of write-offs. " + DPD_RULE,
            query=ratio(fact("s", f"par_{n}").value, "s.ob"),
            example=f"OB 1,000 of which 150 on loans {n}+ days past due → {Decimal('0.15')}.",
            edge_cases="An empty portfolio (Σ OB = 0) has no PAR (no value is stored).",
            amber=Decimal(amber),
            red=Decimal(red),
        )
        for n, amber, red in (
            (1, "0.15", "0.25"),
            (7, "0.10", "0.18"),
            (30, "0.05", "0.10"),
            (60, "0.04", "0.08"),
            (90, "0.03", "0.06"),
        )
    ],
    *[
        Kpi(
            f"bucket_balance_{code}",
            f"Balance {label}",
            "USD",
            (
                f"Σ OB of loans with {low} ≤ DPD ≤ {high} at R, not written off."
                if low is not None
                else "Σ written-off balance at R (see written_off_balance)."
            ),
            query=fact("s", f"bucket_balance_{code}"),
        )
        for code, label, low, high in BUCKETS
    ],
    *[
        Kpi(
            f"bucket_count_{code}",
            f"Loans {label}",
            "count",
            (
                f"Number of loans with OB > 0, {low} ≤ DPD ≤ {high} at R, not written off."
                if low is not None
                else "Number of written-off loans with a balance at R."
            ),
            query=fact("s", f"bucket_count_{code}"),
        )
        for code, label, low, high in BUCKETS
    ],
    Kpi(
        "disbursements",
        "Disbursements (month to date)",
        "USD",
        "Σ disbursed principal of loans with a disbursement date in the calendar month of R, up to R.",
        query=fact("f", "disbursements"),
        higher_is_worse=False,
        month_to_date=True,
    ),
    Kpi(
        "disbursement_count",
        "Loans disbursed (month to date)",
        "count",
        "Number of loans with a disbursement date in the calendar month of R, up to R.",
        query=fact("f", "disbursement_count"),
        higher_is_worse=False,
        month_to_date=True,
    ),
    Kpi(
        "average_ticket",
        "Average ticket (month to date)",
        "USD",
        "disbursements / disbursement_count for the calendar month of R, up to R.",
        query=ratio("f.disbursements", "f.disbursement_count"),
        edge_cases="No disbursements in the month: no value.",
        higher_is_worse=False,
        month_to_date=True,
    ),
    Kpi(
        "collection_rate",
        "Collection rate (month to date)",
        "ratio",
        "Σ paid (principal + interest + fees + other) of PAYMENT transactions dated in the month of R up to R"
        " / Σ scheduled (same parts) of installments due in the month of R up to R.",
        query=ratio("coalesce(f.collected, 0)", "f.scheduled"),
        example="Due 1,000 this month, collected 930 → 0.93. Prepayments can push it above 1.",
        edge_cases="A month with nothing due: no value.",
        amber=Decimal("0.90"),
        red=Decimal("0.80"),
        higher_is_worse=False,
        month_to_date=True,
    ),
    *[
        Kpi(
            f"collections_{kind}",
            f"Collections: {kind} (month to date)",
            "USD",
            "Σ paid (principal + interest + fees + other) of PAYMENT transactions dated in the month of R up to R, "
            f"where {rule}. A payment meets the oldest installment its loan's earlier principal payments have not covered.",
            query=fact("f", f"collected_{kind}"),
            example="A payment on 03-20 against an installment due 03-01 is overdue; due 03-25 current; due 04-15 advance.",
            higher_is_worse=kind == "overdue",
            month_to_date=True,
        )
        for kind, rule in (
            ("overdue", "the installment the payment meets fell due before the payment date"),
            (
                "current",
                "that installment falls due on or after the payment date, within the month of R",
            ),
            (
                "advance",
                "that installment falls due after the month of R, or nothing is left to cover (prepayment)",
            ),
        )
    ],
    Kpi(
        "weighted_average_interest_rate",
        "Weighted average interest rate",
        "ratio",
        "Σ (interest rate × OB) / Σ OB over loans with OB > 0 at R (the tape's rate, as a fraction).",
        query=ratio("s.rate_x_ob", "s.ob"),
    ),
    Kpi(
        "active_borrowers",
        "Active borrowers",
        "count",
        "Distinct customers with OB > 0 at R.",
        query=fact("c", "active_borrowers"),
        higher_is_worse=False,
    ),
    Kpi(
        "repeat_borrower_rate",
        "Repeat-borrower rate",
        "ratio",
        "Customers with more than one loan disbursed on or before R / customers with a loan disbursed on or before R.",
        query=ratio("coalesce(f.repeaters, 0)", "f.borrowers"),
        higher_is_worse=False,
    ),
    Kpi(
        "top_1_share",
        "Largest borrower's share",
        "ratio",
        "OB of the customer with the largest OB / Σ OB at R.",
        query=ratio("c.top_1", "s.ob"),
        amber=Decimal("0.05"),
        red=Decimal("0.10"),
    ),
    Kpi(
        "top_10_share",
        "Top-10 borrowers' share",
        "ratio",
        "Σ OB of the ten customers with the largest OB / Σ OB at R.",
        query=ratio("c.top_10", "s.ob"),
        amber=Decimal("0.25"),
        red=Decimal("0.40"),
    ),
    Kpi(
        "hhi",
        "Herfindahl–Hirschman index",
        "index",
        "Σ over customers of (customer OB / Σ OB × 100)² at R; 10,000 = one borrower.",
        query=fact("c", "hhi", default=None),
        amber=Decimal("1000"),
        red=Decimal("1800"),
    ),
]

# Principal falling due after R: the collections page's next 30/60/90 days (a read of the schedule
# too large for a request at a million loans, so the snapshot keeps it).
DUE_DAYS = (30, 60, 90)
DUE_SCOPE = "loans with OB > 0 at R (live, not written off)"
KPIS += [
    *[
        Kpi(
            f"due_{n}_principal",
            f"Principal due in the next {n} days",
            "USD",
            f"Σ principal of installments due after R, up to R + {n} days, of {DUE_SCOPE}.",
            query=fact("u", f"due_{n}_principal"),
            example=f"At 03-31, a live loan with 2,000 due 04-15 and 1,000 due 07-15 adds 2,000 to the next {n} days.",
            edge_cases="Principal already prepaid still counts: this is the schedule, not a forecast of cash.",
            higher_is_worse=False,
        )
        for n in DUE_DAYS
    ],
    *[
        Kpi(
            f"due_{n}_loans",
            f"Loans with principal due in the next {n} days",
            "count",
            f"Number of {DUE_SCOPE} with an installment due after R, up to R + {n} days.",
            query=fact("u", f"due_{n}_loans"),
            higher_is_worse=False,
        )
        for n in DUE_DAYS
    ],
]

# Loans repaid but for a residual (RESIDUAL_RULE): what the tolerance leaves out, so that nothing
# disappears silently. x = facts_residual.
RESIDUAL_SCOPE = "loans disbursed on or before R whose unpaid principal at R is above 0 and at or below RESIDUAL_TOLERANCE (0.02 by default)"
KPIS += [
    Kpi(
        "residual_loans",
        "Loans closed with a residual",
        "count",
        f"Number of {RESIDUAL_SCOPE}: they count as repaid. " + RESIDUAL_RULE,
        query=fact("x", "residual_loans"),
        example="A loan of 13,404.09 repaid but for 0.01 at R: no state, not in PAR or roll rates; counted here.",
        edge_cases="A loan with 0.03 left (above the tolerance) is live, with its DPD, and not counted here.",
    ),
    Kpi(
        "residual_balance",
        "Residual balance of loans closed with a residual",
        "USD",
        f"Σ unpaid principal at R of {RESIDUAL_SCOPE}. " + RESIDUAL_RULE,
        query=fact("x", "residual_balance"),
        example="Two loans with 0.01 and 0.02 left at R → 0.03.",
    ),
]

MONTHLY = (
    "The month is the calendar month of R up to R, measured from the previous month-end's snapshot"
    " (no value when that snapshot does not exist: run the backfill in date order)."
)
# SMM's and CPR's parts: principal prepaid in the month, over what could have been prepaid.
PREPAID = "coalesce(f.paid_in_month, 0) - coalesce(f.scheduled_in_month, 0)"
PREPAYABLE = "r.start_ob - coalesce(f.scheduled_in_month, 0)"
KPIS += [
    Kpi(
        "liquidation_rate",
        "Liquidation rate (monthly)",
        "ratio",
        "Principal written off in the month (balance of loans written off at R but not at the previous month-end)"
        " / OB at the previous month-end. " + MONTHLY,
        query=ratio("coalesce(r.written_off_in_month, 0)", "r.start_ob"),
        from_previous_month_end=True,
    ),
    Kpi(
        "cdr",
        "Constant default rate (annualized)",
        "ratio",
        "CDR = 1 − (1 − liquidation rate)^12. " + MONTHLY,
        query=Query(
            sql.SQL(
                "CASE WHEN r.start_ob > 0 THEN 1 - power(1 - coalesce(r.written_off_in_month, 0) / r.start_ob, 12) END"
            ),
            sql.SQL("coalesce(r.written_off_in_month, 0)"),
            sql.SQL("r.start_ob"),
        ),
        from_previous_month_end=True,
        example="1% of the opening balance written off in a month → CDR 1 − 0.99^12 = 0.1136.",
        amber=Decimal("0.10"),
        red=Decimal("0.20"),
    ),
    Kpi(
        "smm",
        "Single monthly mortality (prepayment)",
        "ratio",
        "SMM = (principal paid in the month − principal scheduled in the month) / (OB at the previous month-end"
        " − principal scheduled in the month). " + MONTHLY,
        query=ratio(PREPAID, PREPAYABLE),
        from_previous_month_end=True,
        edge_cases="Negative when borrowers paid less than scheduled (arrears), by definition.",
        higher_is_worse=False,
    ),
    Kpi(
        "cpr",
        "Constant prepayment rate (annualized)",
        "ratio",
        "CPR = 1 − (1 − SMM)^12. " + MONTHLY,
        query=Query(
            sql.SQL(
                "CASE WHEN {d} > 0 AND abs({n}) <= {d} THEN 1 - power(1 - ({n}) / ({d}), 12) END"
            ).format(n=sql.SQL(PREPAID), d=sql.SQL(PREPAYABLE)),
            sql.SQL(PREPAID),
            sql.SQL(PREPAYABLE),
        ),
        from_previous_month_end=True,
        edge_cases="No value when SMM is outside [−1, 1]: in a short-tenor book the month's scheduled principal can"
        " come close to the opening balance, and the annualized power then means nothing.",
        higher_is_worse=False,
    ),
    Kpi(
        "cac",
        "Customer acquisition cost",
        "USD",
        "Marketing spend of the month of R / customers whose first loan was disbursed in the month of R, up to R.",
        query=Query(
            sql.SQL(
                "CASE WHEN r.spend IS NOT NULL AND r.new_customers > 0 THEN r.spend / r.new_customers END"
            ),
            sql.SQL("r.spend"),
            sql.SQL("r.new_customers"),
        ),
        edge_cases="No marketing spend loaded for the month, or no new customers: no value. Portfolio level only.",
        dimensions=("portfolio",),
    ),
]

BY_CODE: dict[str, Kpi] = {kpi.code: kpi for kpi in KPIS}
FROM_PREVIOUS_MONTH_END = tuple(kpi.code for kpi in KPIS if kpi.from_previous_month_end)
