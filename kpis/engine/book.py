"""The snapshot's statements over the book: its session (the book lock, memory, the snapshot lent
to the side connection), each loan's cash and schedule, the loan states, the month's flows per
loan and the book facts (borrowers, new customers, cohorts), and the temporary tables they make.

Run-time values are ``%(name)s`` parameters (kpis.engine.steps.params makes them); what is
composed in is fixed by the definitions.
"""

from __future__ import annotations

from psycopg import sql

from kpis import definitions as d
from kpis.engine.compose import SLICE_COLUMNS, WITH_SEGMENT, rendered, slices

# The book as no import is changing it (loans.lineage.BOOK_LOCK, the parameter): an import
# running now commits first.
BOOK_LOCK_SHARED = rendered(sql.SQL("SELECT pg_advisory_xact_lock_shared(hashtext(%s))"))

# Aggregates over millions of cash flows: hash them in memory, not in 4 MB batches on disk.
WORK_MEM = rendered(sql.SQL("SET LOCAL work_mem = '256MB'"))

# The snapshot's transaction lends its view of the data to the side connection.
EXPORT_SNAPSHOT = rendered(sql.SQL("SELECT pg_export_snapshot()"))

REPEATABLE_READ = rendered(sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))

SNAPSHOT_SET = rendered(sql.SQL("SET TRANSACTION SNAPSHOT %s"))

# Each loan's cash and schedule read once per snapshot, for both the loan states and the month's
# collections split: the loans that can have a balance at R or paid in R's month (disbursed by R
# and not repaid before the month began, and the month's payers), with principal paid by R and
# before the month, whether a write-off was booked by R ...
# These two tables are the heaviest reads of a snapshot, and each loan's rows depend on that loan
# alone: they are computed in parts by loan id (mod(id, parts) = part), each on its own
# connection (see kpis.engine.aside), and put together on the snapshot's.

# Per loan: principal paid by R and before R's month, whether a write-off was booked by R.
_CASH_COLUMNS = sql.SQL("""
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT'), 0) AS paid,
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT' AND t.date < %(month_start)s), 0) AS paid_before_month,
       coalesce(bool_or(t.transaction_type = 'WRITE_OFF'), false) AS write_off_booked
""")

LOAN_CASH = rendered(
    sql.SQL("""
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
SELECT c.loan_id, {cash}
FROM cash_loans c
LEFT JOIN loans_transaction t ON t.loan_id = c.loan_id AND t.transaction_type IN ('PAYMENT', 'WRITE_OFF') AND t.date <= %(as_of)s
    AND mod(t.loan_id, %(parts)s) = %(part)s  -- a cheap test before the join's probe
GROUP BY c.loan_id
""").format(cash=_CASH_COLUMNS)
)

# The incremental run's loan cash (kpis.engine.incremental): only the loans it recomputes, each
# read through the (loan, date) key rather than by a pass over every transaction.
LOAN_CASH_TOUCHED = rendered(
    sql.SQL("""
CREATE TEMP TABLE loan_cash ON COMMIT DROP AS
SELECT c.loan_id, x.paid, x.paid_before_month, x.write_off_booked
FROM loan_touched c CROSS JOIN LATERAL (
    SELECT {cash} FROM loans_transaction t
    WHERE t.loan_id = c.loan_id AND t.transaction_type IN ('PAYMENT', 'WRITE_OFF') AND t.date <= %(as_of)s
) x
""").format(cash=_CASH_COLUMNS)
)


def _due_within(n: int) -> sql.Placeholder:
    """The parameter of R + n days."""
    return sql.Placeholder(f"due_{n}")


# The principal falling due in the next 30/60/90 days, over installments ``s``.
DUE_SUMS = sql.SQL(", ").join(
    sql.SQL(
        "sum(s.principal) FILTER (WHERE s.due_date > %(as_of)s AND s.due_date <= {}) AS {}"
    ).format(_due_within(n), sql.Identifier(f"due_{n}"))
    for n in d.DUE_DAYS
)
DUE_LAST = _due_within(max(d.DUE_DAYS))


# ... and, from the schedule, principal due before the month and the oldest installment unpaid at
# R: principal paid is applied to installments in due-date order, so the oldest installment that
# fell due before R and whose cumulative principal exceeds what was paid sets DPD. The same pass
# sums the principal falling due in the next 30/60/90 days.
def _loan_schedule(installments: sql.Composable) -> str:
    """loan_schedule from the installments of loan_cash's loans (``installments``, joined to
    ``loan_cash c`` as ``i``, due by R + 90 days)."""
    return rendered(
        sql.SQL("""
CREATE TEMP TABLE loan_schedule ON COMMIT DROP AS
SELECT s.loan_id,
       min(s.due_date) FILTER (WHERE s.due_date < %(as_of)s AND s.due_so_far > s.paid + 0.005) AS oldest_unpaid,
       sum(s.principal) FILTER (WHERE s.due_date < %(month_start)s) AS due_before_month,
       {due}
FROM (
    SELECT c.loan_id, i.due_date, i.principal, c.paid,
           sum(i.principal) OVER (PARTITION BY c.loan_id ORDER BY i.due_date) AS due_so_far
    FROM loan_cash c {installments}
) s
GROUP BY s.loan_id
""").format(due=DUE_SUMS, installments=installments)
    )


LOAN_SCHEDULE = _loan_schedule(
    sql.SQL("JOIN loans_installment i ON i.loan_id = c.loan_id AND i.due_date <= {}").format(
        DUE_LAST
    )
)

# The incremental run's: each loan's installments through the (loan, due date) key (OFFSET 0
# keeps the planner from flattening the LATERAL into a join, which it would run as one scan of
# every installment due by R + 90 days: 4.7M on the 1M-loan book for 15,000 loans).
LOAN_SCHEDULE_TOUCHED = _loan_schedule(
    sql.SQL(
        "CROSS JOIN LATERAL (SELECT due_date, principal FROM loans_installment i "
        "WHERE i.loan_id = c.loan_id AND i.due_date <= {} OFFSET 0) i"
    ).format(DUE_LAST)
)

BUCKET = sql.SQL("CASE WHEN written_off THEN 'written_off' {} END").format(
    sql.SQL(" ").join(
        sql.SQL("WHEN dpd BETWEEN {} AND {} THEN {}").format(
            sql.Literal(low), sql.Literal(high), sql.Literal(code)
        )
        for code, _, low, high in d.BUCKETS
        if low is not None
    )
)

# The run's states from a query ``state`` (loan, its attributes, balance, dpd, written_off): the
# balance as outstanding or written off, the DPD bucket.
STATE_INSERT = sql.SQL("""
INSERT INTO kpis_loanstate (run_id, loan_id, customer_id, company, product_type, currency, segment, interest_rate,
                            outstanding_principal, dpd, bucket, written_off, written_off_balance)
SELECT %(run)s, loan_id, customer_id, company, product_type, currency, segment, interest_rate,
       CASE WHEN written_off THEN 0 ELSE balance END, dpd, {bucket}, written_off,
       CASE WHEN written_off THEN balance ELSE 0 END
FROM state
""").format(bucket=BUCKET)

# The loans repaid but for a residual at or below RESIDUAL_TOLERANCE (definitions.RESIDUAL_RULE):
# no state, counted on their own (facts_residual). LOAN_STATES fills it in the same pass.
LOAN_RESIDUALS = rendered(
    sql.SQL("""
CREATE TEMP TABLE loan_residual (
    loan_id bigint, company text, product_type text, currency text, segment text, balance numeric
) ON COMMIT DROP
""")
)

# Loan state at end of day R for every loan disbursed on or before R that still has a balance above
# the residual tolerance (live or written off): the one place that decides whether a loan is
# repaid, so every state-based KPI, list and table follows it.
LOAN_STATES = rendered(
    sql.SQL("""
WITH open AS (
    SELECT l.id AS loan_id, l.customer_id, l.company, l.product_type, l.currency, cu.segment, l.interest_rate,
           l.disburse_principal - c.paid AS balance, c.write_off_booked
    FROM loan_cash c JOIN loans_loan l ON l.id = c.loan_id JOIN loans_customer cu ON cu.id = l.customer_id
    WHERE l.disburse_date <= %(as_of)s AND l.disburse_principal - c.paid > 0
      AND (l.repaid_on IS NULL OR l.repaid_on > %(as_of)s)
), residual AS (
    INSERT INTO loan_residual
    SELECT loan_id, company, product_type, currency, segment, balance FROM open
    WHERE balance <= %(residual_tolerance)s
), state AS (
    SELECT o.*, coalesce(%(as_of)s - s.oldest_unpaid, 0) AS dpd,
           (o.write_off_booked OR coalesce(%(as_of)s - s.oldest_unpaid, 0) > %(write_off_dpd)s) AS written_off
    FROM open o LEFT JOIN loan_schedule s ON s.loan_id = o.loan_id
    WHERE o.balance > %(residual_tolerance)s
)
{insert}
""").format(insert=STATE_INSERT)
)

# The month's cash flows per loan (month start to R), one pass each over the month's payments,
# installments and disbursements; slices join loans and customers once, in FLOW_FACTS.
# The collections split classifies each payment by the installment it meets first (the oldest one
# its loan's earlier principal has not covered): overdue when that installment fell due before the
# payment, current when it falls due by the month's end, advance otherwise. Cumulative principal
# due rises with the due date, so this needs only two sums per payment, not the loan's whole
# schedule: principal due before the payment's date and by the month's end, against principal
# paid before the payment.
# What the split needs of a payer's history, principal paid and principal due before the month,
# comes from its loan_cash and loan_schedule rows (``_OPENING_COMPUTED``); a carried run has them
# only for the loans it recomputed, and reads the other payers' from the month's openings
# (``_OPENING_CARRIED``, kpis.models.MonthOpening; see kpis.engine.incremental).
_OPENING_COMPUTED = sql.SQL("""
    SELECT c.loan_id, c.paid_before_month, coalesce(ls.due_before_month, 0) AS due_before_month
    FROM loan_cash c LEFT JOIN loan_schedule ls ON ls.loan_id = c.loan_id
""")

_OPENING_CARRIED = sql.SQL("""{computed}
    UNION ALL
    SELECT o.loan_id, o.paid_before_month, o.due_before_month FROM kpis_monthopening o
    WHERE o.month = %(month_start)s AND NOT EXISTS (SELECT 1 FROM loan_cash c WHERE c.loan_id = o.loan_id)
""").format(computed=_OPENING_COMPUTED)


def _month_loans(opening: sql.Composable) -> str:
    """month_loans, with the payers' history from ``opening``."""
    return rendered(
        sql.SQL("""
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
), opening AS ({opening}
), classified AS (
    SELECT o.loan_id, o.principal, o.amount,
           c.paid_before_month + o.paid_in_month_before + 0.005 AS covered,
           c.due_before_month + coalesce(sum(d.principal) FILTER (WHERE d.due_date < o.date), 0) AS due_before,
           c.due_before_month + coalesce(sum(d.principal), 0) AS due_by_month_end
    FROM ordered o
    JOIN opening c ON c.loan_id = o.loan_id  -- every payer of the month is there
    LEFT JOIN due d ON d.loan_id = o.loan_id
    GROUP BY o.id, o.loan_id, o.principal, o.amount, c.paid_before_month, c.due_before_month, o.paid_in_month_before
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
""").format(opening=opening)
    )


MONTH_LOANS = _month_loans(_OPENING_COMPUTED)
MONTH_LOANS_CARRIED = _month_loans(_OPENING_CARRIED)
# The table alone, for rows computed on another connection (kpis.engine.aside.month_loans_aside).
MONTH_LOANS_EMPTY = f"{MONTH_LOANS}\nWITH NO DATA"

# The openings of the payers this run computed, kept for the runs carried from it (only rows
# that changed are rewritten); the months before the last two are dropped, and so is the claim
# of the runs that kept them.
OPENINGS_KEEP = rendered(
    sql.SQL("""
INSERT INTO kpis_monthopening (month, loan_id, paid_before_month, due_before_month)
SELECT %(month_start)s, o.loan_id, o.paid_before_month, o.due_before_month
FROM ({computed}) o
WHERE EXISTS (SELECT 1 FROM month_loans m WHERE m.loan_id = o.loan_id AND m.collected IS NOT NULL)
ORDER BY o.loan_id
ON CONFLICT (month, loan_id) DO UPDATE
SET paid_before_month = excluded.paid_before_month, due_before_month = excluded.due_before_month
WHERE (kpis_monthopening.paid_before_month, kpis_monthopening.due_before_month)
      IS DISTINCT FROM (excluded.paid_before_month, excluded.due_before_month)
""").format(computed=_OPENING_COMPUTED)
)

OPENINGS_PRUNE = rendered(
    sql.SQL("""
WITH pruned AS (
    DELETE FROM kpis_monthopening WHERE month < %(month_start)s - interval '2 months' RETURNING month
)
UPDATE kpis_snapshotrun SET opening_kept = false
WHERE opening_kept AND as_of < %(month_start)s - interval '2 months' AND EXISTS (SELECT 1 FROM pruned)
""")
)

# The run's residual loans kept beside its states (the next day's run carries them forward).
RESIDUALS_STORE = rendered(
    sql.SQL(
        "INSERT INTO kpis_loanresidual (run_id, loan_id, balance) "
        "SELECT %(run)s, loan_id, balance FROM loan_residual"
    )
)

# Facts of the book alone, not of loan states or cash: read on a connection of their own while
# the states are computed (see kpis.engine.steps.book_facts). Borrowers and repeat borrowers per
# slice ...
BORROWER_FACTS = rendered(
    sql.SQL("""
SELECT dimension, member, count(*) AS borrowers, count(*) FILTER (WHERE loans > 1) AS repeaters
FROM (
    SELECT {slice_columns}, customer_id, sum(n) AS loans
    FROM (  -- one pass over the loans; the grouping sets then run on far fewer rows
        -- Counted per customer and slice first; the customer's segment joins the far fewer rows.
        SELECT l.customer_id, l.company, l.product_type, l.currency, cu.segment, l.n
        FROM (
            SELECT customer_id, company, product_type, currency, count(*) AS n FROM loans_loan
            WHERE disburse_date <= %(as_of)s GROUP BY 1, 2, 3, 4
        ) l {with_segment}
    ) per_slice
    GROUP BY {slices}
) per_customer GROUP BY dimension, member
""").format(
        slice_columns=SLICE_COLUMNS, with_segment=WITH_SEGMENT, slices=slices(per="customer_id")
    )
)

# ... the customers whose first loan was disbursed in R's month (CAC's denominator) ...
NEW_CUSTOMERS = rendered(
    sql.SQL("""
SELECT count(*) FROM (SELECT customer_id FROM loans_loan GROUP BY customer_id
                      HAVING min(disburse_date) BETWEEN %(month_start)s AND %(as_of)s) first_loans
""")
)

# ... and, at month-ends, each vintage's disbursed principal.
COHORTS = rendered(
    sql.SQL("""
SELECT date_trunc('month', disburse_date)::date, sum(disburse_principal) FROM loans_loan
WHERE disburse_date <= %(as_of)s GROUP BY 1 ORDER BY 1
""")
)

# The temporary tables a snapshot makes (dropped first: a caller's transaction may hold them).
TEMP_TABLES = (
    "loan_touched",
    "loan_cash",
    "loan_schedule",
    "loan_residual",
    "facts_state",
    "slice_customers",
    "top_customers",
    "month_loans",
    "facts_borrowers",
    "facts_flow",
    "facts_concentration",
    "facts_rates",
    "facts_due",
    "facts_residual",
    "ever_30_before",
)

DROP_TEMP_TABLES = rendered(
    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, TEMP_TABLES)))
)


def copy_from(table: str) -> sql.Composed:
    return sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))


def copy_to(table: str) -> sql.Composed:
    return sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))


def analyze(table: str) -> sql.Composed:
    return sql.SQL("ANALYZE {}").format(sql.Identifier(table))
