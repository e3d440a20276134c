"""The KPI engine: loan states at an as-of date and KPI values per portfolio slice, set-based in
PostgreSQL, stored as a dated snapshot (docs/design.md, "Where data lives"; definitions in kpis.definitions).

Dashboards and the API read snapshots; nothing here runs in a request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from kpis import definitions as d
from kpis.models import SnapshotRun
from loans.lineage import BOOK_LOCK
from loans.models import Batch, BatchChange
from loans.selectors import batches_latest_per_source

logger = logging.getLogger(__name__)

# Borrowers kept per slice for the concentration page.
TOP_BORROWERS = 10

BOOK_KINDS = [Batch.Kind.CUSTOMERS, Batch.Kind.LOANS, Batch.Kind.SCHEDULES, Batch.Kind.TRANSACTIONS]

# Each loan's cash and schedule read once per snapshot, for both the loan states and the month's
# collections split: the loans that can have a balance at R or paid in R's month (disbursed by R
# and not repaid before the month began, and the month's payers), with principal paid by R and
# before the month, whether a write-off was booked by R ...
# These two tables are the heaviest reads of a snapshot, and each loan's rows depend on that loan
# alone: they are computed in parts by loan id (mod(id, parts) = part), each on its own
# connection (see _loan_cash_aside), and put together on the snapshot's.
LOAN_CASH_SQL = """
CREATE TEMP TABLE loan_cash ON COMMIT DROP AS
WITH cash_loans AS (
    SELECT id AS loan_id FROM loans_loan
    WHERE disburse_date <= %(as_of)s AND (repaid_on IS NULL OR repaid_on >= %(month_start)s)
      AND mod(id, %(parts)s) = %(part)s
    UNION
    SELECT loan_id FROM loans_transaction
    WHERE transaction_type = 'PAYMENT' AND date BETWEEN %(month_start)s AND %(as_of)s
      AND mod(loan_id, %(parts)s) = %(part)s
)
SELECT c.loan_id,
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT'), 0) AS paid,
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT' AND t.date < %(month_start)s), 0) AS paid_before_month,
       coalesce(bool_or(t.transaction_type = 'WRITE_OFF'), false) AS write_off_booked
FROM cash_loans c
LEFT JOIN loans_transaction t ON t.loan_id = c.loan_id AND t.transaction_type IN ('PAYMENT', 'WRITE_OFF') AND t.date <= %(as_of)s
    AND mod(t.loan_id, %(parts)s) = %(part)s  -- a cheap test before the join's probe
GROUP BY c.loan_id
"""

# ... and, from the schedule, principal due before the month and the oldest installment unpaid at
# R: principal paid is applied to installments in due-date order, so the oldest installment that
# fell due before R and whose cumulative principal exceeds what was paid sets DPD. The same pass
# sums the principal falling due in the next 30/60/90 days.
LOAN_SCHEDULE_SQL = f"""
CREATE TEMP TABLE loan_schedule ON COMMIT DROP AS
SELECT s.loan_id,
       min(s.due_date) FILTER (WHERE s.due_date < %(as_of)s AND s.due_so_far > s.paid + 0.005) AS oldest_unpaid,
       sum(s.principal) FILTER (WHERE s.due_date < %(month_start)s) AS due_before_month,
       {", ".join(f"sum(s.principal) FILTER (WHERE s.due_date > %(as_of)s AND s.due_date <= %(due_{n})s) AS due_{n}" for n in d.DUE_DAYS)}
FROM (
    SELECT i.loan_id, i.due_date, i.principal, c.paid,
           sum(i.principal) OVER (PARTITION BY i.loan_id ORDER BY i.due_date) AS due_so_far
    FROM loan_cash c JOIN loans_installment i ON i.loan_id = c.loan_id AND i.due_date <= %(due_{max(d.DUE_DAYS)})s
) s
GROUP BY s.loan_id
"""

# Loan state at end of day R for every loan disbursed on or before R that still has a balance
# (live or written off).
LOAN_STATES_SQL = """
WITH open AS (
    SELECT l.id AS loan_id, l.customer_id, l.company, l.product_type, l.currency, cu.segment, l.interest_rate,
           l.disburse_principal - c.paid AS balance, c.write_off_booked
    FROM loan_cash c JOIN loans_loan l ON l.id = c.loan_id JOIN loans_customer cu ON cu.id = l.customer_id
    WHERE l.disburse_date <= %(as_of)s AND l.disburse_principal - c.paid >= 0.01
      AND (l.repaid_on IS NULL OR l.repaid_on > %(as_of)s)
), state AS (
    SELECT o.*, coalesce(%(as_of)s - s.oldest_unpaid, 0) AS dpd,
           (o.write_off_booked OR coalesce(%(as_of)s - s.oldest_unpaid, 0) > %(write_off_dpd)s) AS written_off
    FROM open o LEFT JOIN loan_schedule s ON s.loan_id = o.loan_id
)
INSERT INTO kpis_loanstate (run_id, loan_id, customer_id, company, product_type, currency, segment, interest_rate,
                            outstanding_principal, dpd, bucket, written_off, written_off_balance)
SELECT %(run)s, loan_id, customer_id, company, product_type, currency, segment, interest_rate,
       CASE WHEN written_off THEN 0 ELSE balance END, dpd, {bucket}, written_off,
       CASE WHEN written_off THEN balance ELSE 0 END
FROM state
"""

BUCKET_SQL = (
    "CASE WHEN written_off THEN 'written_off' "
    + " ".join(
        f"WHEN dpd BETWEEN {low} AND {high} THEN '{code}'"
        for code, _, low, high in d.BUCKETS
        if low is not None
    )
    + " END"
)


# Slices: the whole portfolio and one per entity, product, currency and customer segment
# (GROUPING SETS). Dimension name -> column of kpis_loanstate (and of loans_loan, but for the
# segment, which loans read from their customer: join ``loans_customer cu`` and pass "cu.").
DIMENSIONS = {
    "company": "company",
    "product": "product_type",
    "currency": "currency",
    "segment": "segment",
}
WITH_SEGMENT = "JOIN loans_customer cu ON cu.id = l.customer_id"


def _columns(alias: str, segment_alias: str | None) -> dict[str, str]:
    a = f"{alias}." if alias else ""
    columns = {dim: f"{a}{column}" for dim, column in DIMENSIONS.items()}
    if segment_alias is not None:
        columns["segment"] = f"{segment_alias}.segment"
    return columns


def _slice_columns(alias: str = "", segment_alias: str | None = None) -> str:
    columns = _columns(alias, segment_alias)
    dimension = " ".join(f"WHEN GROUPING({c}) = 0 THEN '{dim}'" for dim, c in columns.items())
    member = " ".join(f"WHEN GROUPING({c}) = 0 THEN {c}" for c in columns.values())
    # "C" collation: the slices are sorted and grouped by these, and byte order is all they need.
    return (
        f"CASE {dimension} ELSE 'portfolio' END COLLATE \"C\" AS dimension, "
        f"coalesce(CASE {member} END, '') COLLATE \"C\" AS member"
    )


def _slices(alias: str = "", segment_alias: str | None = None, *, per: str = "") -> str:
    """GROUPING SETS of the slices; with ``per`` (a column), each slice grouped by it too."""
    columns = list(_columns(alias, segment_alias).values())
    sets = [f"({c}, {per})" if per else f"({c})" for c in columns]
    return f"GROUPING SETS (({per}), {', '.join(sets)})"


SLICE_COLUMNS = _slice_columns()
SLICES = _slices()
# Loans joined to their customer (WITH_SEGMENT) as "l" and "cu".
SLICE_COLUMNS_L = _slice_columns("l", "cu")
SLICES_L = _slices("l", "cu")

# Each fact's aggregate over a combination's states; the slices add them up.
_STATE_SUMS = {
    "ob": "sum(outstanding_principal)",
    "written_off": "sum(written_off_balance)",
    **{
        f"par_{n}": f"sum(outstanding_principal) FILTER (WHERE dpd >= {n} AND NOT written_off)"
        for n in d.PAR_DAYS
    },
    **{
        f"bucket_balance_{code}": "sum(CASE WHEN bucket = 'written_off' THEN written_off_balance "
        f"ELSE outstanding_principal END) FILTER (WHERE bucket = '{code}')"
        for code, *_ in d.BUCKETS
    },
    **{
        f"bucket_count_{code}": f"count(*) FILTER (WHERE bucket = '{code}')"
        for code, *_ in d.BUCKETS
    },
    "rate_x_ob": "sum(interest_rate * outstanding_principal)",
}
# A run's state facts: summed per slice combination first (a few dozen rows, one pass over the
# states), then the slices' grouping sets over those.
STATE_FACTS_SQL = f"""
CREATE TEMP TABLE facts_state ON COMMIT DROP AS
WITH per_combination AS (
    SELECT company, product_type, currency, segment,
        {", ".join(f"{aggregate} AS {name}" for name, aggregate in _STATE_SUMS.items())}
    FROM kpis_loanstate WHERE run_id = %(run)s
    GROUP BY company, product_type, currency, segment
)
SELECT {SLICE_COLUMNS}, {", ".join(f"sum({name}) AS {name}" for name in _STATE_SUMS)}
FROM per_combination GROUP BY {SLICES}
"""

# Each slice's customers with a balance (one row per slice and customer), for the run's
# concentration facts, its top ten and its active borrowers.
SLICE_CUSTOMERS_SQL = f"""
CREATE TEMP TABLE slice_customers ON COMMIT DROP AS
SELECT {SLICE_COLUMNS}, customer_id, sum(ob) AS ob, sum(loans) AS loans
FROM (  -- a customer's loans summed per slice combination first: the grouping sets run on fewer rows
    SELECT customer_id, company, product_type, currency, segment, sum(outstanding_principal) AS ob, count(*) AS loans
    FROM kpis_loanstate WHERE run_id = %(run)s AND outstanding_principal > 0
    GROUP BY customer_id, company, product_type, currency, segment
) per_combination
GROUP BY {_slices(per="customer_id")}
"""

# Each slice's largest customers by OB: the first TOP_BORROWERS of each slice, not a sort of every
# slice's every customer.
TOP_CUSTOMERS_SQL = f"""
CREATE TEMP TABLE top_customers ON COMMIT DROP AS
SELECT s.dimension, s.member, top.customer_id, top.ob, top.loans,
       row_number() OVER (PARTITION BY s.dimension, s.member ORDER BY top.ob DESC, top.customer_id) AS rank
FROM (SELECT DISTINCT dimension, member FROM slice_customers) s
CROSS JOIN LATERAL (
    SELECT customer_id, ob, loans FROM slice_customers c
    WHERE c.dimension = s.dimension AND c.member = s.member
    ORDER BY ob DESC, customer_id LIMIT {TOP_BORROWERS}
) top
"""

# Per slice: its customers with a balance (active borrowers), the top one's and top ten's OB and HHI.
CONCENTRATION_SQL = """
CREATE TEMP TABLE facts_concentration ON COMMIT DROP AS
WITH totals AS (
    SELECT dimension, member, sum(ob) AS total, count(*) AS active_borrowers
    FROM slice_customers GROUP BY dimension, member
), hhi AS (
    SELECT c.dimension, c.member, t.active_borrowers, sum(power(c.ob / t.total * 100, 2)) AS hhi
    FROM slice_customers c JOIN totals t USING (dimension, member) WHERE t.total > 0
    GROUP BY c.dimension, c.member, t.active_borrowers
)
SELECT hhi.dimension, hhi.member, hhi.active_borrowers, top.top_1, top.top_10, hhi.hhi
FROM hhi JOIN (
    SELECT dimension, member, sum(ob) FILTER (WHERE rank = 1) AS top_1, sum(ob) AS top_10
    FROM top_customers GROUP BY dimension, member
) top USING (dimension, member)
"""

TOP_BORROWERS_SQL = """
INSERT INTO kpis_topborrower (run_id, dimension, member, rank, customer_id, outstanding_principal, loans)
SELECT %(run)s, dimension, member, rank, customer_id, ob, loans FROM top_customers
"""

# The month's cash flows per loan (month start to R), one pass each over the month's payments,
# installments and disbursements; slices join loans and customers once, in FLOW_FACTS_SQL.
# The collections split classifies each payment by the installment it meets first (the oldest one
# its loan's earlier principal has not covered): overdue when that installment fell due before the
# payment, current when it falls due by the month's end, advance otherwise. Cumulative principal
# due rises with the due date, so this needs only two sums per payment, not the loan's whole
# schedule: principal due before the payment's date and by the month's end, against principal
# paid before the payment.
MONTH_LOANS_SQL = """
CREATE TEMP TABLE month_loans ON COMMIT DROP AS
WITH pay AS (
    SELECT t.id, t.loan_id, t.date, t.sequence, t.principal, t.principal + t.interest + t.fees + t.other AS amount
    FROM loans_transaction t
    WHERE t.transaction_type = 'PAYMENT' AND t.date BETWEEN %(month_start)s AND %(as_of)s
), due AS (
    SELECT i.loan_id, i.due_date, i.principal, i.principal + i.interest + i.fees + i.other AS amount
    FROM loans_installment i WHERE i.due_date BETWEEN %(month_start)s AND %(month_end)s
), ordered AS (
    SELECT p.id, p.loan_id, p.date, p.principal, p.amount,
           coalesce(sum(p.principal) OVER (PARTITION BY p.loan_id ORDER BY p.date, p.sequence, p.id
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS paid_in_month_before
    FROM pay p
), classified AS (
    SELECT o.loan_id, o.principal, o.amount,
           c.paid_before_month + o.paid_in_month_before + 0.005 AS covered,
           coalesce(ls.due_before_month, 0) + coalesce(sum(d.principal) FILTER (WHERE d.due_date < o.date), 0) AS due_before,
           coalesce(ls.due_before_month, 0) + coalesce(sum(d.principal), 0) AS due_by_month_end
    FROM ordered o
    JOIN loan_cash c ON c.loan_id = o.loan_id  -- every payer of the month is there
    LEFT JOIN loan_schedule ls ON ls.loan_id = o.loan_id
    LEFT JOIN due d ON d.loan_id = o.loan_id
    GROUP BY o.id, o.loan_id, o.principal, o.amount, c.paid_before_month, ls.due_before_month, o.paid_in_month_before
), collected AS (
    SELECT loan_id, sum(amount) AS collected, sum(principal) AS paid_principal,
           sum(amount) FILTER (WHERE due_before > covered) AS collected_overdue,
           sum(amount) FILTER (WHERE due_before <= covered AND due_by_month_end > covered) AS collected_current,
           sum(amount) FILTER (WHERE due_by_month_end <= covered) AS collected_advance
    FROM classified GROUP BY loan_id
), scheduled AS (
    SELECT loan_id, sum(amount) AS scheduled, sum(principal) AS scheduled_principal
    FROM due WHERE due_date <= %(as_of)s GROUP BY loan_id
), disbursed AS (
    SELECT id AS loan_id, disburse_principal AS disbursed FROM loans_loan
    WHERE disburse_date BETWEEN %(month_start)s AND %(as_of)s
)
SELECT loan_id, d.disbursed, c.collected, c.paid_principal, c.collected_overdue, c.collected_current,
       c.collected_advance, s.scheduled, s.scheduled_principal
FROM collected c FULL JOIN scheduled s USING (loan_id) FULL JOIN disbursed d USING (loan_id)
"""

FLOW_FACTS_SQL = f"""
CREATE TEMP TABLE facts_flow ON COMMIT DROP AS
WITH flows AS (
    SELECT {SLICE_COLUMNS_L},
           sum(m.disbursed) AS disbursements, count(m.disbursed) AS disbursement_count,
           sum(m.collected) AS collected, sum(m.paid_principal) AS paid_in_month,
           sum(m.collected_overdue) AS collected_overdue, sum(m.collected_current) AS collected_current,
           sum(m.collected_advance) AS collected_advance,
           sum(m.scheduled) AS scheduled, sum(m.scheduled_principal) AS scheduled_in_month
    FROM month_loans m JOIN loans_loan l ON l.id = m.loan_id {WITH_SEGMENT}
    GROUP BY {SLICES_L}
)
SELECT dimension, member, disbursements, disbursement_count, collected, scheduled, borrowers, repeaters,
       collected_overdue, collected_current, collected_advance, paid_in_month, scheduled_in_month
FROM facts_borrowers FULL JOIN flows USING (dimension, member)
"""

# Facts of the book alone, not of loan states or cash: read on a connection of their own while
# the states are computed (see _book_facts). Borrowers and repeat borrowers per slice ...
BORROWER_FACTS_SQL = f"""
SELECT dimension, member, count(*) AS borrowers, count(*) FILTER (WHERE loans > 1) AS repeaters
FROM (
    SELECT {SLICE_COLUMNS}, customer_id, sum(n) AS loans
    FROM (  -- one pass over the loans; the grouping sets then run on far fewer rows
        -- Counted per customer and slice first; the customer's segment joins the far fewer rows.
        SELECT l.customer_id, l.company, l.product_type, l.currency, cu.segment, l.n
        FROM (
            SELECT customer_id, company, product_type, currency, count(*) AS n FROM loans_loan
            WHERE disburse_date <= %(as_of)s GROUP BY 1, 2, 3, 4
        ) l {WITH_SEGMENT}
    ) per_slice
    GROUP BY {_slices(per="customer_id")}
) per_customer GROUP BY dimension, member
"""

# ... the customers whose first loan was disbursed in R's month (CAC's denominator) ...
NEW_CUSTOMERS_SQL = """
SELECT count(*) FROM (SELECT customer_id FROM loans_loan GROUP BY customer_id
                      HAVING min(disburse_date) BETWEEN %(month_start)s AND %(as_of)s) first_loans
"""

# ... and, at month-ends, each vintage's disbursed principal.
COHORTS_SQL = """
SELECT date_trunc('month', disburse_date)::date, sum(disburse_principal) FROM loans_loan
WHERE disburse_date <= %(as_of)s GROUP BY 1 ORDER BY 1
"""


# Principal falling due in the next 30/60/90 days on the run's live loans (summed per loan in
# loan_schedule), per slice combination first, then over the slices.
DUE_FACTS_SQL = f"""
CREATE TEMP TABLE facts_due ON COMMIT DROP AS
WITH per_combination AS (
    SELECT s.company, s.product_type, s.currency, s.segment,
        {", ".join(f"sum(ls.due_{n}) AS due_{n}, count(ls.due_{n}) AS due_{n}_loans" for n in d.DUE_DAYS)}
    FROM kpis_loanstate s JOIN loan_schedule ls ON ls.loan_id = s.loan_id
    WHERE s.run_id = %(run)s AND s.outstanding_principal > 0
    GROUP BY s.company, s.product_type, s.currency, s.segment
)
SELECT {SLICE_COLUMNS},
    {", ".join(f"sum(due_{n}) AS due_{n}_principal" for n in d.DUE_DAYS)},
    {", ".join(f"sum(due_{n}_loans) AS due_{n}_loans" for n in d.DUE_DAYS)}
FROM per_combination
GROUP BY {SLICES}
"""

# Monthly rates against the previous month-end's snapshot (its loan states and OB), and CAC.
RATE_FACTS_SQL = f"""
CREATE TEMP TABLE facts_rates ON COMMIT DROP AS
WITH previous AS (
    SELECT id FROM kpis_snapshotrun WHERE as_of = %(month_before)s ORDER BY basis DESC LIMIT 1  -- restated wins
), start_ob AS (
    SELECT dimension, member, value AS start_ob FROM kpis_kpivalue
    WHERE run_id = (SELECT id FROM previous) AND code = 'outstanding_principal'
), newly_written_off AS (
    SELECT {_slice_columns("now")}, sum(now.written_off_balance) AS written_off_in_month
    FROM kpis_loanstate now
    LEFT JOIN kpis_loanstate before ON before.run_id = (SELECT id FROM previous) AND before.loan_id = now.loan_id
    WHERE now.run_id = %(run)s AND now.written_off AND NOT coalesce(before.written_off, false)
    GROUP BY {_slices("now")}
), acquisition AS (
    SELECT 'portfolio'::text AS dimension, ''::text AS member,
           (SELECT sum(spend) FROM loans_marketingspend WHERE month = %(month_start)s) AS spend,
           %(new_customers)s::bigint AS new_customers
)
SELECT dimension, member, start_ob, written_off_in_month, spend, new_customers
FROM start_ob
FULL JOIN newly_written_off USING (dimension, member)
FULL JOIN acquisition USING (dimension, member)
"""


ROLL_RATES_SQL = """
WITH previous AS (
    SELECT id FROM kpis_snapshotrun WHERE as_of = %(month_before)s ORDER BY basis DESC LIMIT 1
), moves AS (
    SELECT before.bucket AS from_bucket, coalesce(now.bucket, 'repaid') AS to_bucket,
           CASE WHEN before.written_off THEN before.written_off_balance ELSE before.outstanding_principal END AS balance
    FROM kpis_loanstate before
    LEFT JOIN kpis_loanstate now ON now.run_id = %(run)s AND now.loan_id = before.loan_id
    WHERE before.run_id = (SELECT id FROM previous)
)
INSERT INTO kpis_rollrate (run_id, from_bucket, to_bucket, balance, share)
SELECT %(run)s, from_bucket, to_bucket, sum(balance),
       CASE WHEN sum(sum(balance)) OVER (PARTITION BY from_bucket) > 0
            THEN sum(balance) / sum(sum(balance)) OVER (PARTITION BY from_bucket) ELSE 0 END
FROM moves GROUP BY from_bucket, to_bucket
"""

# Vintages at month-ends only: each cohort's disbursed principal (a book fact, COHORTS_SQL), its
# written-off balance now and its ever-30+ principal.
VINTAGES_SQL = """
WITH ever_30 AS MATERIALIZED (
    -- The loans at 30+ DPD in this run or any earlier one (a partial index holds just those).
    SELECT DISTINCT ls.loan_id FROM kpis_loanstate ls JOIN kpis_snapshotrun r ON r.id = ls.run_id
    WHERE ls.dpd >= 30 AND r.as_of <= %(as_of)s AND (r.id = %(run)s OR r.as_of < %(as_of)s)
), written_off AS (
    SELECT date_trunc('month', l.disburse_date)::date AS cohort, sum(s.written_off_balance) AS written_off
    FROM kpis_loanstate s JOIN loans_loan l ON l.id = s.loan_id
    WHERE s.run_id = %(run)s AND s.written_off
    GROUP BY 1
), ever AS (
    SELECT date_trunc('month', l.disburse_date)::date AS cohort, sum(l.disburse_principal) AS ever_30
    FROM ever_30 e JOIN loans_loan l ON l.id = e.loan_id
    WHERE l.disburse_date <= %(as_of)s
    GROUP BY 1
)
INSERT INTO kpis_vintagepoint (run_id, cohort, months_on_book, disbursed, written_off, ever_30)
SELECT %(run)s, c.cohort,
       (extract(year FROM age(%(as_of)s, c.cohort)) * 12 + extract(month FROM age(%(as_of)s, c.cohort)))::int,
       c.disbursed, coalesce(w.written_off, 0), coalesce(e.ever_30, 0)
FROM unnest(%(cohorts)s::date[], %(cohorts_disbursed)s::numeric[]) AS c (cohort, disbursed)
LEFT JOIN written_off w USING (cohort)
LEFT JOIN ever e USING (cohort)
"""


@dataclass(frozen=True)
class _Value:
    code: str
    value: str  # SQL over the facts row
    numerator: str = "NULL"
    denominator: str = "NULL"


def _ratio(code: str, numerator: str, denominator: str) -> _Value:
    return _Value(
        code,
        # numeric division: counts are bigint, and bigint / bigint truncates to 0
        f"CASE WHEN ({denominator}) > 0 THEN ({numerator})::numeric / ({denominator}) END",
        numerator,
        denominator,
    )


VALUES: list[_Value] = [
    _Value("outstanding_principal", "coalesce(s.ob, 0)"),
    _Value("written_off_balance", "coalesce(s.written_off, 0)"),
    *[_ratio(f"par_{n}", f"coalesce(s.par_{n}, 0)", "s.ob") for n in d.PAR_DAYS],
    *[
        _Value(f"bucket_balance_{code}", f"coalesce(s.bucket_balance_{code}, 0)")
        for code, *_ in d.BUCKETS
    ],
    *[
        _Value(f"bucket_count_{code}", f"coalesce(s.bucket_count_{code}, 0)")
        for code, *_ in d.BUCKETS
    ],
    _Value("disbursements", "coalesce(f.disbursements, 0)"),
    _Value("disbursement_count", "coalesce(f.disbursement_count, 0)"),
    _ratio("average_ticket", "f.disbursements", "f.disbursement_count"),
    _ratio("collection_rate", "coalesce(f.collected, 0)", "f.scheduled"),
    _Value("collections_overdue", "coalesce(f.collected_overdue, 0)"),
    _Value("collections_current", "coalesce(f.collected_current, 0)"),
    _Value("collections_advance", "coalesce(f.collected_advance, 0)"),
    _ratio("weighted_average_interest_rate", "s.rate_x_ob", "s.ob"),
    _Value("active_borrowers", "coalesce(c.active_borrowers, 0)"),
    _ratio("repeat_borrower_rate", "coalesce(f.repeaters, 0)", "f.borrowers"),
    _ratio("top_1_share", "c.top_1", "s.ob"),
    _ratio("top_10_share", "c.top_10", "s.ob"),
    _Value("hhi", "c.hhi"),
    _ratio("liquidation_rate", "coalesce(r.written_off_in_month, 0)", "r.start_ob"),
    _Value(
        "cdr",
        "CASE WHEN r.start_ob > 0 THEN 1 - power(1 - coalesce(r.written_off_in_month, 0) / r.start_ob, 12) END",
        "coalesce(r.written_off_in_month, 0)",
        "r.start_ob",
    ),
    _ratio(
        "smm",
        "coalesce(f.paid_in_month, 0) - coalesce(f.scheduled_in_month, 0)",
        "r.start_ob - coalesce(f.scheduled_in_month, 0)",
    ),
    _Value(
        "cpr",
        "CASE WHEN r.start_ob - coalesce(f.scheduled_in_month, 0) > 0 AND abs(coalesce(f.paid_in_month, 0) - coalesce(f.scheduled_in_month, 0))"
        " <= r.start_ob - coalesce(f.scheduled_in_month, 0) THEN 1 - power(1 - "
        "(coalesce(f.paid_in_month, 0) - coalesce(f.scheduled_in_month, 0)) / (r.start_ob - coalesce(f.scheduled_in_month, 0)), 12) END",
        "coalesce(f.paid_in_month, 0) - coalesce(f.scheduled_in_month, 0)",
        "r.start_ob - coalesce(f.scheduled_in_month, 0)",
    ),
    *[_Value(f"due_{n}_principal", f"coalesce(u.due_{n}_principal, 0)") for n in d.DUE_DAYS],
    *[_Value(f"due_{n}_loans", f"coalesce(u.due_{n}_loans, 0)") for n in d.DUE_DAYS],
    _Value(
        "cac",
        "CASE WHEN r.spend IS NOT NULL AND r.new_customers > 0 THEN r.spend / r.new_customers END",
        "r.spend",
        "r.new_customers",
    ),
]
assert {v.code for v in VALUES} == set(d.BY_CODE), "every definition is computed, and nothing else"


def _insert_values_sql() -> str:
    selects = [
        f"SELECT %(run)s, %(as_of)s, '{v.code}', dims.dimension, dims.member, ({v.value})::numeric, ({v.numerator})::numeric, ({v.denominator})::numeric, %(version)s "
        "FROM dims LEFT JOIN facts_state s USING (dimension, member) LEFT JOIN facts_flow f USING (dimension, member) "
        "LEFT JOIN facts_concentration c USING (dimension, member) LEFT JOIN facts_rates r USING (dimension, member) "
        "LEFT JOIN facts_due u USING (dimension, member)"
        for v in VALUES
    ]
    return (
        "INSERT INTO kpis_kpivalue (run_id, as_of, code, dimension, member, value, numerator, denominator, definition_version) "
        "WITH dims AS (SELECT dimension, member FROM facts_state UNION SELECT dimension, member FROM facts_flow) "
        + " UNION ALL ".join(selects)
    )


def snapshot_quality(*, as_of: date) -> list[str]:
    """Why a snapshot would be provisional: a source whose latest import failed, or tape-diff
    flags still waiting for a steward."""
    reasons = [
        f"the latest {batch.kind} import from {batch.source} (batch {batch.pk}) failed with errors"
        for batch in batches_latest_per_source(kinds=BOOK_KINDS)
        if batch.status == Batch.Status.FAILED
    ]
    pending = BatchChange.objects.filter(review=BatchChange.Review.PENDING).count()
    if pending:
        reasons.append(f"{pending} tape-diff change(s) wait for a steward's review")
    return reasons


# KPIs measured from the previous month-end's snapshot (no value until that snapshot exists).
FROM_PREVIOUS_MONTH_END = ("liquidation_rate", "cdr", "smm", "cpr")


def month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _fingerprint(batch_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(batch_ids))).encode()).hexdigest()


def _run_delete(cursor, run: SnapshotRun) -> None:
    # Set-based: the ORM's cascade would load a million loan states to delete them.
    cursor.execute("DELETE FROM kpis_loanstate WHERE run_id = %s", [run.pk])
    for table in ("kpis_kpivalue", "kpis_rollrate", "kpis_vintagepoint", "kpis_topborrower"):
        cursor.execute(f"DELETE FROM {table} WHERE run_id = %s", [run.pk])
    run.batches.clear()
    run.delete()


def snapshot_compute(
    *, as_of: date, by=None, job: str = "", before_history: Callable[[], object] | None = None
) -> SnapshotRun:
    """Compute and store loan states and KPI values for end of day ``as_of``, in one transaction.

    The first run of a date is kept *as reported*. Recomputed later: when the numbers come out
    the same, the as-reported run stands (nothing to restate, and an earlier restatement is
    withdrawn); when they differ (a late correction), the new run is stored as *restated* beside
    the as-reported one, replacing an earlier restatement.

    Everything up to the facts that read earlier snapshots (the monthly rates and roll rates
    against the previous month-end, vintages' ever-30+) depends on the book alone; the history
    is read last, after ``before_history`` returns. A series computed on several connections
    (kpis.services.snapshot_series) waits there for the earlier dates to commit; read committed,
    the statements after it see them.
    """
    started = time.perf_counter()
    # Part of the work goes to a second connection (see _aside), unless a transaction is already
    # open: its uncommitted rows (a caller's atomic block, a test) are invisible to any other.
    aside = not connection.in_atomic_block
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-aside") as pool,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # The book as no import is changing it (an import running now commits first), for this
        # transaction's statements and the second connection's exported snapshot alike.
        cursor.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", [BOOK_LOCK])
        # Aggregates over millions of cash flows: hash them in memory, not in 4 MB batches on disk.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        existing = {
            run.basis: run for run in SnapshotRun.objects.select_for_update().filter(as_of=as_of)
        }
        reported = existing.get(SnapshotRun.Basis.AS_REPORTED)
        if SnapshotRun.Basis.RESTATED in existing:
            _run_delete(cursor, existing[SnapshotRun.Basis.RESTATED])
        batch_ids = list(
            Batch.objects.filter(kind__in=BOOK_KINDS, status=Batch.Status.LOADED).values_list(
                "pk", flat=True
            )
        )
        reasons = snapshot_quality(as_of=as_of)
        run = SnapshotRun.objects.create(
            as_of=as_of,
            basis=SnapshotRun.Basis.RESTATED if reported else SnapshotRun.Basis.AS_REPORTED,
            definition_version=d.VERSION,
            computed_at=timezone.now(),
            computed_by=by,
            job=job,
            data_fingerprint=_fingerprint(batch_ids),
            provisional=bool(reasons),
            provisional_reasons=reasons,
        )
        params = {
            "run": run.pk,
            "as_of": as_of,
            "month_start": as_of.replace(day=1),
            "month_before": as_of.replace(day=1) - timedelta(days=1),
            "month_end": month_end(as_of),
            **{f"due_{n}": as_of + timedelta(days=n) for n in d.DUE_DAYS},
            "write_off_dpd": settings.WRITE_OFF_DPD,
            "version": d.VERSION,
        }
        if aside:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
            params["parts"], params["part"] = 2, 0  # odd loan ids there, even ones here
            part = pool.submit(_loan_cash_aside, snapshot, {**params, "part": 1})
            book_facts = pool.submit(_book_facts_aside, snapshot, dict(params))
        else:
            params["parts"], params["part"] = 1, 0
            part = book_facts = None
        cursor.execute(
            "DROP TABLE IF EXISTS loan_cash, loan_schedule, facts_state, slice_customers, top_customers, "
            "month_loans, facts_borrowers, facts_flow, facts_concentration, facts_rates, facts_due"
        )
        cursor.execute(LOAN_CASH_SQL, params)
        cursor.execute("ANALYZE loan_cash")
        cursor.execute(LOAN_SCHEDULE_SQL, params)
        if part is not None:
            for table, rows in zip(("loan_cash", "loan_schedule"), part.result(), strict=True):
                with cursor.cursor.copy(f"COPY {table} FROM STDIN") as copy:
                    copy.write(rows)
            cursor.execute("ANALYZE loan_cash")
        cursor.execute("ANALYZE loan_schedule")
        cursor.execute(LOAN_STATES_SQL.format(bucket=BUCKET_SQL), params)
        run.loans = cursor.rowcount
        cursor.execute(SLICE_CUSTOMERS_SQL, params)
        cursor.execute("ANALYZE slice_customers")
        cursor.execute(TOP_CUSTOMERS_SQL, params)
        cursor.execute(STATE_FACTS_SQL, params)
        cursor.execute(CONCENTRATION_SQL, params)
        cursor.execute(TOP_BORROWERS_SQL, params)
        cursor.execute(MONTH_LOANS_SQL, params)
        cursor.execute("ANALYZE month_loans")
        borrowers, params["new_customers"], cohorts = (
            book_facts.result() if book_facts else _book_facts(cursor, params)
        )
        params["cohorts"] = [cohort for cohort, _ in cohorts]
        params["cohorts_disbursed"] = [disbursed for _, disbursed in cohorts]
        cursor.execute(
            'CREATE TEMP TABLE facts_borrowers (dimension text COLLATE "C", member text COLLATE "C", '
            "borrowers bigint, repeaters bigint) ON COMMIT DROP"
        )
        cursor.executemany("INSERT INTO facts_borrowers VALUES (%s, %s, %s, %s)", borrowers)
        cursor.execute(FLOW_FACTS_SQL, params)
        cursor.execute(DUE_FACTS_SQL, params)
        if before_history is not None:
            waiting = time.perf_counter()
            before_history()
            started += time.perf_counter() - waiting  # its duration is its own work
        cursor.execute(RATE_FACTS_SQL, params)
        cursor.execute(_insert_values_sql(), params)
        cursor.execute(ROLL_RATES_SQL, params)
        if as_of == month_end(as_of):
            cursor.execute(VINTAGES_SQL, params)
        if reported is not None and not _values_differ(cursor, run, reported):
            if not _adds_values(cursor, run, reported):
                _run_delete(cursor, run)
                # The numbers stand; whether they are provisional is a fact of now.
                reported.provisional, reported.provisional_reasons = bool(reasons), reasons
                reported.save(update_fields=["provisional", "provisional_reasons"])
                logger.info("snapshot unchanged", extra={"as_of": str(as_of)})
                return reported
            # Same numbers plus KPIs that did not exist when it was reported: nothing is restated,
            # so the new run becomes the as-reported one.
            _run_delete(cursor, reported)
            run.basis = SnapshotRun.Basis.AS_REPORTED
            run.save(update_fields=["basis"])
        run.batches.set(batch_ids)
        run.duration_ms = round((time.perf_counter() - started) * 1000)
        run.save(update_fields=["loans", "duration_ms"])
    logger.info(
        "snapshot computed", extra={"as_of": str(as_of), "basis": run.basis, "ms": run.duration_ms}
    )
    return run


def _book_facts(cursor, params: dict) -> tuple[list[tuple], int, list[tuple]]:
    """Borrowers and repeaters per slice, the month's new customers and, at a month-end, each
    vintage's disbursed principal."""
    cursor.execute(BORROWER_FACTS_SQL, params)
    borrowers = cursor.fetchall()
    cursor.execute(NEW_CUSTOMERS_SQL, params)
    new_customers = cursor.fetchone()[0]
    cohorts = []
    if params["as_of"] == params["month_end"]:
        cursor.execute(COHORTS_SQL, params)
        cohorts = cursor.fetchall()
    return borrowers, new_customers, cohorts


# Work done aside, on a second connection (this thread's own), while the snapshot's connection
# computes: a second core at work. Each task reads in the snapshot the snapshot's transaction
# exported, so it sees the data that transaction sees (no import commits meanwhile: BOOK_LOCK).
# The tasks run in the order submitted.


@contextmanager
def _aside(snapshot: str) -> Iterator:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        cursor.execute("SET LOCAL work_mem = '256MB'")
        yield cursor
        transaction.set_rollback(True)  # it wrote nothing worth keeping, only temporary tables


def _loan_cash_aside(snapshot: str, params: dict) -> tuple[bytes, bytes]:
    """One part of loan_cash and loan_schedule, as COPY rows for the snapshot's connection."""
    with _aside(snapshot) as cursor:
        cursor.execute(LOAN_CASH_SQL, params)
        cursor.execute("ANALYZE loan_cash")
        cursor.execute(LOAN_SCHEDULE_SQL, params)
        rows = []
        for table in ("loan_cash", "loan_schedule"):
            with cursor.cursor.copy(f"COPY {table} TO STDOUT") as copy:
                rows.append(b"".join(bytes(block) for block in copy))
        return tuple(rows)


def _book_facts_aside(snapshot: str, params: dict) -> tuple[list[tuple], int, list[tuple]]:
    """_book_facts aside (the last task: it closes the connection)."""
    try:
        with _aside(snapshot) as cursor:
            return _book_facts(cursor, params)
    finally:
        connection.close()


def _values_differ(cursor, run: SnapshotRun, reported: SnapshotRun) -> bool:
    """Did any number that was reported change? KPIs added since are not a restatement, and
    neither is a monthly rate appearing because the previous month-end was computed later."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM kpis_kpivalue b LEFT JOIN kpis_kpivalue a "
        "ON a.run_id = %s AND a.code = b.code AND a.dimension = b.dimension AND a.member = b.member "
        "WHERE b.run_id = %s AND a.value IS DISTINCT FROM b.value "
        "AND NOT (b.value IS NULL AND b.code = ANY(%s)))",
        [run.pk, reported.pk, list(FROM_PREVIOUS_MONTH_END)],
    )
    return cursor.fetchone()[0]


def _adds_values(cursor, run: SnapshotRun, reported: SnapshotRun) -> bool:
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM kpis_kpivalue a WHERE a.run_id = %s AND NOT EXISTS ("
        "SELECT 1 FROM kpis_kpivalue b WHERE b.run_id = %s AND b.code = a.code AND b.dimension = a.dimension AND b.member = a.member))",
        [run.pk, reported.pk],
    )
    return cursor.fetchone()[0]
