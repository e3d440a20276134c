"""The snapshot's statements, composed once with psycopg ``sql``: the book's cash and schedule
per loan, the loan states, the facts per slice that the KPIs' queries read (kpis.definitions),
the stored tables beside the values (top borrowers, roll rates, vintages).

Run-time values are ``%(name)s`` parameters (kpis.engine.steps.params makes them); everything
composed here is fixed by the definitions.
"""

from __future__ import annotations

from psycopg import sql

from kpis import definitions as d

# Borrowers kept per slice for the concentration page.
TOP_BORROWERS = 10


def _rendered(statement: sql.Composable) -> str:
    """A statement's text, rendered once here: psycopg would otherwise compose it again at every
    execute (milliseconds per snapshot for VALUES_INSERT alone). Only the definitions' constants
    are composed in, never run-time values: those are %(name)s parameters."""
    return statement.as_string()


# The book as no import is changing it (loans.lineage.BOOK_LOCK, the parameter): an import
# running now commits first.
BOOK_LOCK_SHARED = _rendered(sql.SQL("SELECT pg_advisory_xact_lock_shared(hashtext(%s))"))
# Aggregates over millions of cash flows: hash them in memory, not in 4 MB batches on disk.
WORK_MEM = _rendered(sql.SQL("SET LOCAL work_mem = '256MB'"))
# The snapshot's transaction lends its view of the data to the side connection.
EXPORT_SNAPSHOT = _rendered(sql.SQL("SELECT pg_export_snapshot()"))
REPEATABLE_READ = _rendered(sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
SNAPSHOT_SET = _rendered(sql.SQL("SET TRANSACTION SNAPSHOT %s"))

# Each loan's cash and schedule read once per snapshot, for both the loan states and the month's
# collections split: the loans that can have a balance at R or paid in R's month (disbursed by R
# and not repaid before the month began, and the month's payers), with principal paid by R and
# before the month, whether a write-off was booked by R ...
# These two tables are the heaviest reads of a snapshot, and each loan's rows depend on that loan
# alone: they are computed in parts by loan id (mod(id, parts) = part), each on its own
# connection (see kpis.engine.aside), and put together on the snapshot's.
LOAN_CASH = _rendered(
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
SELECT c.loan_id,
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT'), 0) AS paid,
       coalesce(sum(t.principal) FILTER (WHERE t.transaction_type = 'PAYMENT' AND t.date < %(month_start)s), 0) AS paid_before_month,
       coalesce(bool_or(t.transaction_type = 'WRITE_OFF'), false) AS write_off_booked
FROM cash_loans c
LEFT JOIN loans_transaction t ON t.loan_id = c.loan_id AND t.transaction_type IN ('PAYMENT', 'WRITE_OFF') AND t.date <= %(as_of)s
    AND mod(t.loan_id, %(parts)s) = %(part)s  -- a cheap test before the join's probe
GROUP BY c.loan_id
""")
)


def _due_within(n: int) -> sql.Placeholder:
    """The parameter of R + n days."""
    return sql.Placeholder(f"due_{n}")


# ... and, from the schedule, principal due before the month and the oldest installment unpaid at
# R: principal paid is applied to installments in due-date order, so the oldest installment that
# fell due before R and whose cumulative principal exceeds what was paid sets DPD. The same pass
# sums the principal falling due in the next 30/60/90 days.
LOAN_SCHEDULE = _rendered(
    sql.SQL("""
CREATE TEMP TABLE loan_schedule ON COMMIT DROP AS
SELECT s.loan_id,
       min(s.due_date) FILTER (WHERE s.due_date < %(as_of)s AND s.due_so_far > s.paid + 0.005) AS oldest_unpaid,
       sum(s.principal) FILTER (WHERE s.due_date < %(month_start)s) AS due_before_month,
       {due}
FROM (
    SELECT i.loan_id, i.due_date, i.principal, c.paid,
           sum(i.principal) OVER (PARTITION BY i.loan_id ORDER BY i.due_date) AS due_so_far
    FROM loan_cash c JOIN loans_installment i ON i.loan_id = c.loan_id AND i.due_date <= {due_last}
) s
GROUP BY s.loan_id
""").format(
        due=sql.SQL(", ").join(
            sql.SQL(
                "sum(s.principal) FILTER (WHERE s.due_date > %(as_of)s AND s.due_date <= {}) AS {}"
            ).format(_due_within(n), sql.Identifier(f"due_{n}"))
            for n in d.DUE_DAYS
        ),
        due_last=_due_within(max(d.DUE_DAYS)),
    )
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

# Loan state at end of day R for every loan disbursed on or before R that still has a balance
# (live or written off).
LOAN_STATES = _rendered(
    sql.SQL("""
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
""").format(bucket=BUCKET)
)


# Slices (kpis.definitions.DIMENSION_COLUMNS) as GROUPING SETS. Loans read the segment from their
# customer: join ``loans_customer cu`` (WITH_SEGMENT) and pass segment_alias "cu".
WITH_SEGMENT = sql.SQL("JOIN loans_customer cu ON cu.id = l.customer_id")


def _columns(alias: str, segment_alias: str | None) -> dict[str, sql.Identifier]:
    prefix = (alias,) if alias else ()
    columns = {dim: sql.Identifier(*prefix, col) for dim, col in d.DIMENSION_COLUMNS.items()}
    if segment_alias is not None:
        columns["segment"] = sql.Identifier(segment_alias, "segment")
    return columns


def slice_columns(alias: str = "", segment_alias: str | None = None) -> sql.Composed:
    """The slice of a grouping-sets row: its ``dimension`` and ``member``."""
    columns = _columns(alias, segment_alias)
    dimension = sql.SQL(" ").join(
        sql.SQL("WHEN GROUPING({}) = 0 THEN {}").format(c, sql.Literal(dim))
        for dim, c in columns.items()
    )
    member = sql.SQL(" ").join(
        sql.SQL("WHEN GROUPING({c}) = 0 THEN {c}").format(c=c) for c in columns.values()
    )
    # "C" collation: the slices are sorted and grouped by these, and byte order is all they need.
    return sql.SQL(
        "CASE {dimension} ELSE 'portfolio' END COLLATE \"C\" AS dimension, "
        "coalesce(CASE {member} END, '') COLLATE \"C\" AS member"
    ).format(dimension=dimension, member=member)


def slices(alias: str = "", segment_alias: str | None = None, *, per: str = "") -> sql.Composed:
    """GROUPING SETS of the slices; with ``per`` (a column), each slice grouped by it too."""
    extra = [sql.Identifier(per)] if per else []
    sets = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join([c, *extra]))
        for c in _columns(alias, segment_alias).values()
    )
    return sql.SQL("GROUPING SETS (({}), {})").format(sql.SQL(", ").join(extra), sets)


SLICE_COLUMNS = slice_columns()
SLICES = slices()


def _aliased(aggregates: dict[str, sql.Composable]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(aggregate, sql.Identifier(name))
        for name, aggregate in aggregates.items()
    )


def _summed(names) -> sql.Composed:
    return _aliased({name: sql.SQL("sum({})").format(sql.Identifier(name)) for name in names})


# Each fact's aggregate over a combination's states; the slices add them up.
_BALANCE = sql.SQL(
    "sum(CASE WHEN bucket = 'written_off' THEN written_off_balance ELSE outstanding_principal END)"
)
_STATE_SUMS: dict[str, sql.Composable] = {
    "ob": sql.SQL("sum(outstanding_principal)"),
    "written_off": sql.SQL("sum(written_off_balance)"),
    **{
        f"par_{n}": sql.SQL(
            "sum(outstanding_principal) FILTER (WHERE dpd >= {} AND NOT written_off)"
        ).format(sql.Literal(n))
        for n in d.PAR_DAYS
    },
    **{
        f"bucket_balance_{code}": sql.SQL("{} FILTER (WHERE bucket = {})").format(
            _BALANCE, sql.Literal(code)
        )
        for code, *_ in d.BUCKETS
    },
    **{
        f"bucket_count_{code}": sql.SQL("count(*) FILTER (WHERE bucket = {})").format(
            sql.Literal(code)
        )
        for code, *_ in d.BUCKETS
    },
    "rate_x_ob": sql.SQL("sum(interest_rate * outstanding_principal)"),
}
# A run's state facts: summed per slice combination first (a few dozen rows, one pass over the
# states), then the slices' grouping sets over those.
STATE_FACTS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_state ON COMMIT DROP AS
WITH per_combination AS (
    SELECT company, product_type, currency, segment,
        {aggregates}
    FROM kpis_loanstate WHERE run_id = %(run)s
    GROUP BY company, product_type, currency, segment
)
SELECT {slice_columns}, {sums}
FROM per_combination GROUP BY {slices}
""").format(
        aggregates=_aliased(_STATE_SUMS),
        slice_columns=SLICE_COLUMNS,
        sums=_summed(_STATE_SUMS),
        slices=SLICES,
    )
)

# Each slice's customers with a balance (one row per slice and customer), for the run's
# concentration facts, its top ten and its active borrowers.
SLICE_CUSTOMERS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE slice_customers ON COMMIT DROP AS
SELECT {slice_columns}, customer_id, sum(ob) AS ob, sum(loans) AS loans
FROM (  -- a customer's loans summed per slice combination first: the grouping sets run on fewer rows
    SELECT customer_id, company, product_type, currency, segment, sum(outstanding_principal) AS ob, count(*) AS loans
    FROM kpis_loanstate WHERE run_id = %(run)s AND outstanding_principal > 0
    GROUP BY customer_id, company, product_type, currency, segment
) per_combination
GROUP BY {slices}
""").format(slice_columns=SLICE_COLUMNS, slices=slices(per="customer_id"))
)

# Each slice's largest customers by OB: the first TOP_BORROWERS of each slice, not a sort of every
# slice's every customer.
TOP_CUSTOMERS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE top_customers ON COMMIT DROP AS
SELECT s.dimension, s.member, top.customer_id, top.ob, top.loans,
       row_number() OVER (PARTITION BY s.dimension, s.member ORDER BY top.ob DESC, top.customer_id) AS rank
FROM (SELECT DISTINCT dimension, member FROM slice_customers) s
CROSS JOIN LATERAL (
    SELECT customer_id, ob, loans FROM slice_customers c
    WHERE c.dimension = s.dimension AND c.member = s.member
    ORDER BY ob DESC, customer_id LIMIT {top}
) top
""").format(top=sql.Literal(TOP_BORROWERS))
)

# Per slice: its customers with a balance (active borrowers), the top one's and top ten's OB and HHI.
CONCENTRATION = _rendered(
    sql.SQL("""
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
""")
)

TOP_BORROWERS_INSERT = _rendered(
    sql.SQL("""
INSERT INTO kpis_topborrower (run_id, dimension, member, rank, customer_id, outstanding_principal, loans)
SELECT %(run)s, dimension, member, rank, customer_id, ob, loans FROM top_customers
""")
)

# The month's cash flows per loan (month start to R), one pass each over the month's payments,
# installments and disbursements; slices join loans and customers once, in FLOW_FACTS.
# The collections split classifies each payment by the installment it meets first (the oldest one
# its loan's earlier principal has not covered): overdue when that installment fell due before the
# payment, current when it falls due by the month's end, advance otherwise. Cumulative principal
# due rises with the due date, so this needs only two sums per payment, not the loan's whole
# schedule: principal due before the payment's date and by the month's end, against principal
# paid before the payment.
MONTH_LOANS = _rendered(
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
""")
)

# Borrowers and repeaters per slice, from the book facts read aside (kpis.engine.steps).
FACTS_BORROWERS = _rendered(
    sql.SQL(
        'CREATE TEMP TABLE facts_borrowers (dimension text COLLATE "C", member text COLLATE "C", '
        "borrowers bigint, repeaters bigint) ON COMMIT DROP"
    )
)
FACTS_BORROWERS_INSERT = _rendered(sql.SQL("INSERT INTO facts_borrowers VALUES (%s, %s, %s, %s)"))

FLOW_FACTS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_flow ON COMMIT DROP AS
WITH flows AS (
    SELECT {slice_columns},
           sum(m.disbursed) AS disbursements, count(m.disbursed) AS disbursement_count,
           sum(m.collected) AS collected, sum(m.paid_principal) AS paid_in_month,
           sum(m.collected_overdue) AS collected_overdue, sum(m.collected_current) AS collected_current,
           sum(m.collected_advance) AS collected_advance,
           sum(m.scheduled) AS scheduled, sum(m.scheduled_principal) AS scheduled_in_month
    FROM month_loans m JOIN loans_loan l ON l.id = m.loan_id {with_segment}
    GROUP BY {slices}
)
SELECT dimension, member, disbursements, disbursement_count, collected, scheduled, borrowers, repeaters,
       collected_overdue, collected_current, collected_advance, paid_in_month, scheduled_in_month
FROM facts_borrowers FULL JOIN flows USING (dimension, member)
""").format(
        slice_columns=slice_columns("l", "cu"), with_segment=WITH_SEGMENT, slices=slices("l", "cu")
    )
)

# Facts of the book alone, not of loan states or cash: read on a connection of their own while
# the states are computed (see kpis.engine.steps.book_facts). Borrowers and repeat borrowers per
# slice ...
BORROWER_FACTS = _rendered(
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
NEW_CUSTOMERS = _rendered(
    sql.SQL("""
SELECT count(*) FROM (SELECT customer_id FROM loans_loan GROUP BY customer_id
                      HAVING min(disburse_date) BETWEEN %(month_start)s AND %(as_of)s) first_loans
""")
)

# ... and, at month-ends, each vintage's disbursed principal.
COHORTS = _rendered(
    sql.SQL("""
SELECT date_trunc('month', disburse_date)::date, sum(disburse_principal) FROM loans_loan
WHERE disburse_date <= %(as_of)s GROUP BY 1 ORDER BY 1
""")
)


# Principal falling due in the next 30/60/90 days on the run's live loans (summed per loan in
# loan_schedule), per slice combination first, then over the slices.
DUE_FACTS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_due ON COMMIT DROP AS
WITH per_combination AS (
    SELECT s.company, s.product_type, s.currency, s.segment,
        {per_combination}
    FROM kpis_loanstate s JOIN loan_schedule ls ON ls.loan_id = s.loan_id
    WHERE s.run_id = %(run)s AND s.outstanding_principal > 0
    GROUP BY s.company, s.product_type, s.currency, s.segment
)
SELECT {slice_columns},
    {principal},
    {loans}
FROM per_combination
GROUP BY {slices}
""").format(
        per_combination=sql.SQL(", ").join(
            sql.SQL("sum({due}) AS {name}, count({due}) AS {loans}").format(
                due=sql.Identifier("ls", f"due_{n}"),
                name=sql.Identifier(f"due_{n}"),
                loans=sql.Identifier(f"due_{n}_loans"),
            )
            for n in d.DUE_DAYS
        ),
        slice_columns=SLICE_COLUMNS,
        principal=_aliased(
            {
                f"due_{n}_principal": sql.SQL("sum({})").format(sql.Identifier(f"due_{n}"))
                for n in d.DUE_DAYS
            }
        ),
        loans=_summed(f"due_{n}_loans" for n in d.DUE_DAYS),
        slices=SLICES,
    )
)

# The previous month-end's run: its restatement when it has one (restated sorts after as_reported).
_PREVIOUS = sql.SQL(
    "SELECT id FROM kpis_snapshotrun WHERE as_of = %(month_before)s ORDER BY basis DESC LIMIT 1"
)

# Monthly rates against the previous month-end's snapshot (its loan states and OB), and CAC.
RATE_FACTS = _rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_rates ON COMMIT DROP AS
WITH previous AS (
    {previous}
), start_ob AS (
    SELECT dimension, member, value AS start_ob FROM kpis_kpivalue
    WHERE run_id = (SELECT id FROM previous) AND code = 'outstanding_principal'
), newly_written_off AS (
    SELECT {slice_columns}, sum(now.written_off_balance) AS written_off_in_month
    FROM kpis_loanstate now
    LEFT JOIN kpis_loanstate before ON before.run_id = (SELECT id FROM previous) AND before.loan_id = now.loan_id
    WHERE now.run_id = %(run)s AND now.written_off AND NOT coalesce(before.written_off, false)
    GROUP BY {slices}
), acquisition AS (
    SELECT 'portfolio'::text AS dimension, ''::text AS member,
           (SELECT sum(spend) FROM loans_marketingspend WHERE month = %(month_start)s) AS spend,
           %(new_customers)s::bigint AS new_customers
)
SELECT dimension, member, start_ob, written_off_in_month, spend, new_customers
FROM start_ob
FULL JOIN newly_written_off USING (dimension, member)
FULL JOIN acquisition USING (dimension, member)
""").format(previous=_PREVIOUS, slice_columns=slice_columns("now"), slices=slices("now"))
)

# Every KPI's value per slice, from its definition's query over the facts (kpis.definitions).
_FACTS_ROW = sql.SQL(
    "FROM dims LEFT JOIN facts_state s USING (dimension, member) LEFT JOIN facts_flow f USING (dimension, member) "
    "LEFT JOIN facts_concentration c USING (dimension, member) LEFT JOIN facts_rates r USING (dimension, member) "
    "LEFT JOIN facts_due u USING (dimension, member)"
)
VALUES_INSERT = _rendered(
    sql.SQL(
        "INSERT INTO kpis_kpivalue (run_id, as_of, code, dimension, member, value, numerator, denominator, definition_version) "
        "WITH dims AS (SELECT dimension, member FROM facts_state UNION SELECT dimension, member FROM facts_flow) "
        "{}"
    ).format(
        sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT %(run)s, %(as_of)s, {code}, dims.dimension, dims.member, ({value})::numeric, "
                "({numerator})::numeric, ({denominator})::numeric, %(version)s {facts}"
            ).format(
                code=sql.Literal(kpi.code),
                value=kpi.query.value,
                numerator=kpi.query.numerator,
                denominator=kpi.query.denominator,
                facts=_FACTS_ROW,
            )
            for kpi in d.KPIS
        )
    )
)

ROLL_RATES = _rendered(
    sql.SQL("""
WITH previous AS (
    {previous}
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
""").format(previous=_PREVIOUS)
)

# Vintages at month-ends only: each cohort's disbursed principal (a book fact, COHORTS), its
# written-off balance now and its ever-30+ principal.
VINTAGES = _rendered(
    sql.SQL("""
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
""")
)

# The temporary tables a snapshot makes (dropped first: a caller's transaction may hold them).
TEMP_TABLES = (
    "loan_cash",
    "loan_schedule",
    "facts_state",
    "slice_customers",
    "top_customers",
    "month_loans",
    "facts_borrowers",
    "facts_flow",
    "facts_concentration",
    "facts_rates",
    "facts_due",
)
DROP_TEMP_TABLES = _rendered(
    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, TEMP_TABLES)))
)


def copy_from(table: str) -> sql.Composed:
    return sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))


def copy_to(table: str) -> sql.Composed:
    return sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))


def analyze(table: str) -> sql.Composed:
    return sql.SQL("ANALYZE {}").format(sql.Identifier(table))
