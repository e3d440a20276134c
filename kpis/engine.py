"""The KPI engine: loan states at an as-of date and KPI values per portfolio slice, set-based in
PostgreSQL, stored as a dated snapshot (DESIGN.md "Snapshots"; definitions in kpis.definitions).

Dashboards and the API read snapshots; nothing here runs in a request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from kpis import definitions as d
from kpis.models import SnapshotRun
from loans.models import Batch, BatchChange

logger = logging.getLogger(__name__)

BOOK_KINDS = [Batch.Kind.CUSTOMERS, Batch.Kind.LOANS, Batch.Kind.SCHEDULES, Batch.Kind.TRANSACTIONS]

# Loan state at end of day R for every loan disbursed on or before R that still has a balance
# (live or written off). Principal paid is applied to installments in due-date order: the oldest
# installment whose cumulative principal exceeds what was paid, and that fell due before R, sets DPD.
LOAN_STATES_SQL = """
WITH paid AS (
    SELECT loan_id, sum(principal) AS paid FROM loans_transaction
    WHERE transaction_type = 'PAYMENT' AND date <= %(as_of)s GROUP BY loan_id
), written_off AS (
    SELECT DISTINCT loan_id FROM loans_transaction WHERE transaction_type = 'WRITE_OFF' AND date <= %(as_of)s
), overdue AS (
    SELECT i.loan_id, min(i.due_date) AS oldest_unpaid
    FROM (
        SELECT loan_id, due_date, sum(principal) OVER (PARTITION BY loan_id ORDER BY due_date) AS due_so_far
        FROM loans_installment WHERE due_date < %(as_of)s
    ) i LEFT JOIN paid p ON p.loan_id = i.loan_id
    WHERE i.due_so_far > coalesce(p.paid, 0) + 0.005
    GROUP BY i.loan_id
), state AS (
    SELECT l.id AS loan_id, l.customer_id, l.company, l.product_type, l.currency, l.interest_rate,
           CASE WHEN greatest(l.disburse_principal - coalesce(p.paid, 0), 0) < 0.01 THEN 0
                ELSE greatest(l.disburse_principal - coalesce(p.paid, 0), 0) END AS balance,
           coalesce(%(as_of)s - o.oldest_unpaid, 0) AS dpd,
           (w.loan_id IS NOT NULL OR coalesce(%(as_of)s - o.oldest_unpaid, 0) > %(write_off_dpd)s) AS written_off
    FROM loans_loan l
    LEFT JOIN paid p ON p.loan_id = l.id
    LEFT JOIN overdue o ON o.loan_id = l.id
    LEFT JOIN written_off w ON w.loan_id = l.id
    WHERE l.disburse_date <= %(as_of)s
)
INSERT INTO kpis_loanstate (run_id, loan_id, customer_id, company, product_type, currency, interest_rate,
                            outstanding_principal, dpd, bucket, written_off, written_off_balance)
SELECT %(run)s, loan_id, customer_id, company, product_type, currency, interest_rate,
       CASE WHEN written_off THEN 0 ELSE balance END, dpd, {bucket}, written_off,
       CASE WHEN written_off THEN balance ELSE 0 END
FROM state WHERE balance > 0
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


# Slices: the whole portfolio and one per entity, product and currency (GROUPING SETS).
def _slice_columns(alias: str = "") -> str:
    a = f"{alias}." if alias else ""
    return f"""
    CASE WHEN GROUPING({a}company) = 0 THEN 'company' WHEN GROUPING({a}product_type) = 0 THEN 'product'
         WHEN GROUPING({a}currency) = 0 THEN 'currency' ELSE 'portfolio' END AS dimension,
    coalesce(CASE WHEN GROUPING({a}company) = 0 THEN {a}company WHEN GROUPING({a}product_type) = 0 THEN {a}product_type
                  WHEN GROUPING({a}currency) = 0 THEN {a}currency END, '') AS member
"""


SLICE_COLUMNS = _slice_columns()
SLICES = "GROUPING SETS ((), (company), (product_type), (currency))"
SLICES_L = "GROUPING SETS ((), (l.company), (l.product_type), (l.currency))"

STATE_FACTS_SQL = f"""
CREATE TEMP TABLE facts_state ON COMMIT DROP AS
SELECT {SLICE_COLUMNS},
    sum(outstanding_principal) AS ob,
    sum(written_off_balance) AS written_off,
    {", ".join(f"sum(outstanding_principal) FILTER (WHERE dpd >= {n} AND NOT written_off) AS par_{n}" for n in d.PAR_DAYS)},
    {", ".join(f"sum(CASE WHEN bucket = 'written_off' THEN written_off_balance ELSE outstanding_principal END) FILTER (WHERE bucket = '{code}') AS bucket_balance_{code}" for code, *_ in d.BUCKETS)},
    {", ".join(f"count(*) FILTER (WHERE bucket = '{code}') AS bucket_count_{code}" for code, *_ in d.BUCKETS)},
    sum(interest_rate * outstanding_principal) AS rate_x_ob,
    count(DISTINCT customer_id) FILTER (WHERE outstanding_principal > 0) AS active_borrowers
FROM kpis_loanstate WHERE run_id = %(run)s
GROUP BY {SLICES}
"""

CONCENTRATION_SQL = f"""
CREATE TEMP TABLE facts_concentration ON COMMIT DROP AS
WITH per_customer AS (
    SELECT {SLICE_COLUMNS}, customer_id, sum(outstanding_principal) AS ob
    FROM kpis_loanstate WHERE run_id = %(run)s AND outstanding_principal > 0
    GROUP BY GROUPING SETS ((customer_id), (company, customer_id), (product_type, customer_id), (currency, customer_id))
), ranked AS (
    SELECT dimension, member, ob, sum(ob) OVER (PARTITION BY dimension, member) AS total,
           row_number() OVER (PARTITION BY dimension, member ORDER BY ob DESC, customer_id) AS rank
    FROM per_customer
)
SELECT dimension, member,
       sum(ob) FILTER (WHERE rank = 1) AS top_1, sum(ob) FILTER (WHERE rank <= 10) AS top_10,
       sum(power(ob / total * 100, 2)) AS hhi
FROM ranked WHERE total > 0 GROUP BY dimension, member
"""

FLOW_FACTS_SQL = f"""
CREATE TEMP TABLE facts_flow ON COMMIT DROP AS
WITH disbursed AS (
    SELECT {SLICE_COLUMNS}, sum(disburse_principal) AS disbursements, count(*) AS disbursement_count
    FROM loans_loan WHERE disburse_date BETWEEN %(month_start)s AND %(as_of)s GROUP BY {SLICES}
), collected AS (
    SELECT {_slice_columns("l")}, sum(t.principal + t.interest + t.fees + t.other) AS collected
    FROM loans_transaction t JOIN loans_loan l ON l.id = t.loan_id
    WHERE t.transaction_type = 'PAYMENT' AND t.date BETWEEN %(month_start)s AND %(as_of)s GROUP BY {SLICES_L}
), scheduled AS (
    SELECT {_slice_columns("l")}, sum(i.principal + i.interest + i.fees + i.other) AS scheduled
    FROM loans_installment i JOIN loans_loan l ON l.id = i.loan_id
    WHERE i.due_date BETWEEN %(month_start)s AND %(as_of)s GROUP BY {SLICES_L}
), borrowers AS (
    SELECT dimension, member, count(*) AS borrowers, count(*) FILTER (WHERE loans > 1) AS repeaters
    FROM (
        SELECT {SLICE_COLUMNS}, customer_id, count(*) AS loans FROM loans_loan WHERE disburse_date <= %(as_of)s
        GROUP BY GROUPING SETS ((customer_id), (company, customer_id), (product_type, customer_id), (currency, customer_id))
    ) per_customer GROUP BY dimension, member
)
SELECT dimension, member, disbursements, disbursement_count, collected, scheduled, borrowers, repeaters
FROM borrowers
FULL JOIN disbursed USING (dimension, member)
FULL JOIN collected USING (dimension, member)
FULL JOIN scheduled USING (dimension, member)
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
        f"CASE WHEN {denominator} > 0 THEN ({numerator})::numeric / {denominator} END",
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
    _ratio("weighted_average_interest_rate", "s.rate_x_ob", "s.ob"),
    _Value("active_borrowers", "coalesce(s.active_borrowers, 0)"),
    _ratio("repeat_borrower_rate", "coalesce(f.repeaters, 0)", "f.borrowers"),
    _ratio("top_1_share", "c.top_1", "s.ob"),
    _ratio("top_10_share", "c.top_10", "s.ob"),
    _Value("hhi", "c.hhi"),
]
assert {v.code for v in VALUES} == set(d.BY_CODE), "every definition is computed, and nothing else"


def _insert_values_sql() -> str:
    selects = [
        f"SELECT %(run)s, %(as_of)s, '{v.code}', dims.dimension, dims.member, ({v.value})::numeric, ({v.numerator})::numeric, ({v.denominator})::numeric, %(version)s "
        "FROM dims LEFT JOIN facts_state s USING (dimension, member) LEFT JOIN facts_flow f USING (dimension, member) "
        "LEFT JOIN facts_concentration c USING (dimension, member)"
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
    reasons = []
    latest: dict[tuple[str, str], Batch] = {}
    for batch in (
        Batch.objects.filter(kind__in=BOOK_KINDS)
        .exclude(status=Batch.Status.DUPLICATE)
        .order_by("created_at")
    ):
        latest[(batch.source, batch.kind)] = batch
    for (source, kind), batch in sorted(latest.items()):
        if batch.status == Batch.Status.FAILED:
            reasons.append(
                f"the latest {kind} import from {source} (batch {batch.pk}) failed with errors"
            )
    pending = BatchChange.objects.filter(review=BatchChange.Review.PENDING).count()
    if pending:
        reasons.append(f"{pending} tape-diff change(s) wait for a steward's review")
    return reasons


def _fingerprint(batch_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(batch_ids))).encode()).hexdigest()


def _run_delete(cursor, run: SnapshotRun) -> None:
    # Set-based: the ORM's cascade would load a million loan states to delete them.
    cursor.execute("DELETE FROM kpis_loanstate WHERE run_id = %s", [run.pk])
    cursor.execute("DELETE FROM kpis_kpivalue WHERE run_id = %s", [run.pk])
    run.batches.clear()
    run.delete()


def snapshot_compute(*, as_of: date, by=None, job: str = "") -> SnapshotRun:
    """Compute and store loan states and KPI values for end of day ``as_of``, in one transaction.

    The first run of a date is kept *as reported*. Recomputed later: when the numbers come out
    the same, the as-reported run stands (nothing to restate, and an earlier restatement is
    withdrawn); when they differ (a late correction), the new run is stored as *restated* beside
    the as-reported one, replacing an earlier restatement.
    """
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
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
            "write_off_dpd": settings.WRITE_OFF_DPD,
            "version": d.VERSION,
        }
        cursor.execute(LOAN_STATES_SQL.format(bucket=BUCKET_SQL), params)
        run.loans = cursor.rowcount
        cursor.execute("DROP TABLE IF EXISTS facts_state, facts_flow, facts_concentration")
        cursor.execute(STATE_FACTS_SQL, params)
        cursor.execute(CONCENTRATION_SQL, params)
        cursor.execute(FLOW_FACTS_SQL, params)
        cursor.execute(_insert_values_sql(), params)
        if reported is not None and not _values_differ(cursor, run, reported):
            _run_delete(cursor, run)
            logger.info("snapshot unchanged", extra={"as_of": str(as_of)})
            return reported
        run.batches.set(batch_ids)
        run.duration_ms = round((time.perf_counter() - started) * 1000)
        run.save(update_fields=["loans", "duration_ms"])
    logger.info(
        "snapshot computed", extra={"as_of": str(as_of), "basis": run.basis, "ms": run.duration_ms}
    )
    return run


def _values_differ(cursor, run: SnapshotRun, reported: SnapshotRun) -> bool:
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM (SELECT * FROM kpis_kpivalue WHERE run_id = %s) a "
        "FULL JOIN (SELECT * FROM kpis_kpivalue WHERE run_id = %s) b USING (code, dimension, member) "
        "WHERE a.value IS DISTINCT FROM b.value)",
        [run.pk, reported.pk],
    )
    return cursor.fetchone()[0]
