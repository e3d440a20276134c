"""The snapshot's statements over its loan states and flows: the facts per slice that the KPIs'
queries read (kpis.definitions), every KPI's value, and the tables stored beside the values (top
borrowers, roll rates, vintages).

Run-time values are ``%(name)s`` parameters (kpis.engine.steps.params makes them); what is
composed in is fixed by the definitions.
"""

from __future__ import annotations

from psycopg import sql

from kpis import definitions as d
from kpis.engine.compose import (
    RUN,
    SLICE_COLUMNS,
    SLICES,
    WITH_SEGMENT,
    aliased,
    rendered,
    slice_columns,
    slices,
    summed,
)

# Borrowers kept per slice for the concentration page.
TOP_BORROWERS = 10

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
STATE_FACTS = rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_state ON COMMIT DROP AS
WITH per_combination AS (
    SELECT company, product_type, currency, segment,
        {aggregates}
    FROM kpis_loanstate WHERE run_id = {run}
    GROUP BY company, product_type, currency, segment
)
SELECT {slice_columns}, {sums}
FROM per_combination GROUP BY {slices}
""").format(
        run=RUN,
        aggregates=aliased(_STATE_SUMS),
        slice_columns=SLICE_COLUMNS,
        sums=summed(_STATE_SUMS),
        slices=SLICES,
    )
)

# Each slice's customers with a balance (one row per slice and customer), for the run's
# concentration facts, its top ten and its active borrowers.
SLICE_CUSTOMERS = rendered(
    sql.SQL("""
CREATE TEMP TABLE slice_customers ON COMMIT DROP AS
SELECT {slice_columns}, customer_id, sum(ob) AS ob, sum(loans) AS loans
FROM (  -- a customer's loans summed per slice combination first: the grouping sets run on fewer rows
    SELECT customer_id, company, product_type, currency, segment, sum(outstanding_principal) AS ob, count(*) AS loans
    FROM kpis_loanstate WHERE run_id = {run} AND outstanding_principal > 0
    GROUP BY customer_id, company, product_type, currency, segment
) per_combination
GROUP BY {slices}
""").format(run=RUN, slice_columns=SLICE_COLUMNS, slices=slices(per="customer_id"))
)

# Each slice's largest customers by OB: the first TOP_BORROWERS of each slice, not a sort of every
# slice's every customer.
TOP_CUSTOMERS = rendered(
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
CONCENTRATION = rendered(
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

TOP_BORROWERS_INSERT = rendered(
    sql.SQL("""
INSERT INTO kpis_topborrower (run_id, dimension, member, rank, customer_id, outstanding_principal, loans)
SELECT %(run)s, dimension, member, rank, customer_id, ob, loans FROM top_customers
""")
)

# Borrowers and repeaters per slice, from the book facts read aside (kpis.engine.steps).
FACTS_BORROWERS = rendered(
    sql.SQL(
        'CREATE TEMP TABLE facts_borrowers (dimension text COLLATE "C", member text COLLATE "C", '
        "borrowers bigint, repeaters bigint) ON COMMIT DROP"
    )
)

FACTS_BORROWERS_INSERT = rendered(sql.SQL("INSERT INTO facts_borrowers VALUES (%s, %s, %s, %s)"))

FLOW_FACTS = rendered(
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

# Principal falling due in the next 30/60/90 days on the run's live loans (summed per loan in
# loan_schedule), per slice combination first, then over the slices. Every live loan counts
# towards its combination, whether or not it has a schedule row (an incremental run's carried
# loans have one only when something falls due in the window).
DUE_FACTS = rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_due ON COMMIT DROP AS
WITH per_combination AS (
    SELECT s.company, s.product_type, s.currency, s.segment,
        {per_combination}
    FROM kpis_loanstate s LEFT JOIN loan_schedule ls ON ls.loan_id = s.loan_id
    WHERE s.run_id = {run} AND s.outstanding_principal > 0
    GROUP BY s.company, s.product_type, s.currency, s.segment
)
SELECT {slice_columns},
    {principal},
    {loans}
FROM per_combination
GROUP BY {slices}
""").format(
        run=RUN,
        per_combination=sql.SQL(", ").join(
            sql.SQL("sum({due}) AS {name}, count({due}) AS {loans}").format(
                due=sql.Identifier("ls", f"due_{n}"),
                name=sql.Identifier(f"due_{n}"),
                loans=sql.Identifier(f"due_{n}_loans"),
            )
            for n in d.DUE_DAYS
        ),
        slice_columns=SLICE_COLUMNS,
        principal=aliased(
            {
                f"due_{n}_principal": sql.SQL("sum({})").format(sql.Identifier(f"due_{n}"))
                for n in d.DUE_DAYS
            }
        ),
        loans=summed(f"due_{n}_loans" for n in d.DUE_DAYS),
        slices=SLICES,
    )
)

# Per slice: the loans repaid but for a residual (kpis.engine.book.LOAN_STATES keeps them aside).
RESIDUAL_FACTS = rendered(
    sql.SQL("""
CREATE TEMP TABLE facts_residual ON COMMIT DROP AS
SELECT {slice_columns}, count(*) AS residual_loans, sum(balance) AS residual_balance
FROM loan_residual GROUP BY {slices}
""").format(slice_columns=SLICE_COLUMNS, slices=SLICES)
)

# The previous month-end's run: its restatement when it has one (restated sorts after as_reported).
_PREVIOUS = sql.SQL(
    "SELECT id FROM kpis_snapshotrun WHERE as_of = %(month_before)s ORDER BY basis DESC LIMIT 1"
)

# Monthly rates against the previous month-end's snapshot (its loan states and OB), and CAC.
RATE_FACTS = rendered(
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
    WHERE now.run_id = {run} AND now.written_off AND NOT coalesce(before.written_off, false)
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
""").format(run=RUN, previous=_PREVIOUS, slice_columns=slice_columns("now"), slices=slices("now"))
)

# Every KPI's value per slice, from its definition's query over the facts (kpis.definitions).
_FACTS_ROW = sql.SQL(
    "FROM dims LEFT JOIN facts_state s USING (dimension, member) LEFT JOIN facts_flow f USING (dimension, member) "
    "LEFT JOIN facts_concentration c USING (dimension, member) LEFT JOIN facts_rates r USING (dimension, member) "
    "LEFT JOIN facts_due u USING (dimension, member) LEFT JOIN facts_residual x USING (dimension, member)"
)

VALUES_INSERT = rendered(
    sql.SQL(
        "INSERT INTO kpis_kpivalue (run_id, as_of, code, dimension, member, value, numerator, denominator, definition_version) "
        "WITH dims AS (SELECT dimension, member FROM facts_state UNION SELECT dimension, member FROM facts_flow "
        "UNION SELECT dimension, member FROM facts_residual) "
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

ROLL_RATES = rendered(
    sql.SQL("""
WITH previous AS (
    {previous}
), moves AS (
    SELECT before.bucket AS from_bucket, coalesce(now.bucket, 'repaid') AS to_bucket,
           CASE WHEN before.written_off THEN before.written_off_balance ELSE before.outstanding_principal END AS balance
    FROM kpis_loanstate before
    LEFT JOIN kpis_loanstate now ON now.run_id = {run} AND now.loan_id = before.loan_id
    WHERE before.run_id = (SELECT id FROM previous)
)
INSERT INTO kpis_rollrate (run_id, from_bucket, to_bucket, balance, share)
SELECT %(run)s, from_bucket, to_bucket, sum(balance),
       CASE WHEN sum(sum(balance)) OVER (PARTITION BY from_bucket) > 0
            THEN sum(balance) / sum(sum(balance)) OVER (PARTITION BY from_bucket) ELSE 0 END
FROM moves GROUP BY from_bucket, to_bucket
""").format(run=RUN, previous=_PREVIOUS)
)

# Vintages at month-ends only: each cohort's disbursed principal (a book fact, COHORTS), its
# written-off balance now and its ever-30+ principal.
# The loans at 30+ DPD in any earlier month-end's standing run (its restatement when it has one:
# a date reported under an earlier definition version, or before a correction, counts as
# restated); a partial index holds just those states. Month-ends only, as the definition says:
# the daily runs and dates computed on request in between would make the curve depend on which
# days happen to be stored. It reads only committed runs, so it can be read aside
# (kpis.engine.aside.ever_30_aside).
EVER_30_TABLE = rendered(
    sql.SQL("CREATE TEMP TABLE ever_30_before (loan_id bigint) ON COMMIT DROP")
)

EVER_30_BEFORE = rendered(
    sql.SQL("""
INSERT INTO ever_30_before
SELECT DISTINCT ls.loan_id FROM kpis_loanstate ls JOIN kpis_snapshotrun r ON r.id = ls.run_id
WHERE ls.dpd >= 30 AND r.as_of < %(as_of)s
  AND r.as_of = (date_trunc('month', r.as_of) + interval '1 month - 1 day')::date
  AND NOT EXISTS (
      SELECT 1 FROM kpis_snapshotrun later WHERE later.as_of = r.as_of AND later.basis > r.basis)
""")
)

VINTAGES = rendered(
    sql.SQL("""
WITH ever_30 AS MATERIALIZED (  -- those and this run's
    SELECT loan_id FROM ever_30_before
    UNION
    SELECT loan_id FROM kpis_loanstate WHERE run_id = {run} AND dpd >= 30
), written_off AS (
    SELECT date_trunc('month', l.disburse_date)::date AS cohort, sum(s.written_off_balance) AS written_off
    FROM kpis_loanstate s JOIN loans_loan l ON l.id = s.loan_id
    WHERE s.run_id = {run} AND s.written_off
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
""").format(run=RUN)
)
