"""Customer segments from loan behaviour: the KPI engine's ``segment`` dimension.

At a date R, a customer's segment reads their loans disbursed on or before R:

- **new**: one loan so far;
- **recovered**: an earlier loan defaulted — it was written off, repaid more than
  ``RECOVERY_DPD`` days after its maturity, or is unpaid that long past it — and they borrowed
  again;
- **reactivated**: they came back after more than ``BREAK_DAYS`` days without a loan open (from
  the last repayment of their earlier loans to the latest loan; an unpaid loan is still open);
- **recurrent**: borrowing again without such a break.

Segments are refreshed set-based for every customer in one statement (the ``daily_ingest`` job
runs it after the CRM sync, which sets sector and size); only rows whose segment changed are
written.
"""

from __future__ import annotations

from datetime import date

from django.db import connection, transaction

BREAK_DAYS = 90
RECOVERY_DPD = 90

SEGMENTS_SQL = """
WITH ranked AS (
    SELECT l.id, l.customer_id, l.disburse_date, l.maturity_date,
           CASE WHEN l.repaid_on <= %(as_of)s THEN l.repaid_on END AS repaid_on,
           row_number() OVER (PARTITION BY l.customer_id ORDER BY l.disburse_date DESC, l.id DESC) AS recency
    FROM loans_loan l WHERE l.disburse_date <= %(as_of)s
), written_off AS (
    SELECT DISTINCT loan_id FROM loans_transaction WHERE transaction_type = 'WRITE_OFF' AND date <= %(as_of)s
), earlier AS (
    SELECT r.customer_id,
           max(coalesce(r.repaid_on, %(as_of)s)) AS last_end,  -- an unpaid loan is still open
           bool_or(w.loan_id IS NOT NULL OR r.repaid_on - r.maturity_date > %(recovery)s
                   OR (r.repaid_on IS NULL AND %(as_of)s - r.maturity_date > %(recovery)s)) AS defaulted
    FROM ranked r LEFT JOIN written_off w ON w.loan_id = r.id
    WHERE r.recency > 1 GROUP BY r.customer_id
), segments AS (
    SELECT c.id,
           CASE WHEN latest.customer_id IS NULL THEN ''
                WHEN e.customer_id IS NULL THEN 'new'
                WHEN e.defaulted THEN 'recovered'
                WHEN latest.disburse_date - e.last_end > %(break)s THEN 'reactivated'
                ELSE 'recurrent' END AS segment
    FROM loans_customer c
    LEFT JOIN ranked latest ON latest.customer_id = c.id AND latest.recency = 1
    LEFT JOIN earlier e ON e.customer_id = c.id
)
UPDATE loans_customer c SET segment = s.segment
FROM segments s WHERE s.id = c.id AND c.segment IS DISTINCT FROM s.segment
"""


def customer_segments_refresh(*, as_of: date) -> int:
    """Set every customer's behavioural segment at ``as_of``; returns how many changed."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            SEGMENTS_SQL, {"as_of": as_of, "break": BREAK_DAYS, "recovery": RECOVERY_DPD}
        )
        return cursor.rowcount
