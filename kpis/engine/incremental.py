"""The incremental daily snapshot: a date's loan states carried forward from an earlier stored
run (the base) instead of recomputed from the whole book, with only the loans touched since
recomputed from their cash flows (README, "KPIs").

A loan's state at R depends on its principal paid and write-offs booked by R, its installments
due before R, its disbursement and its own attributes. Between the base's date B and R, a loan
that none of the following touched keeps its balance, its write-off and its oldest unpaid
installment, so its state at R is its state at B with days past due advanced by R - B (when it
was past due), written off once DPD passes WRITE_OFF_DPD, and its attributes and customer
segment read again:

- a payment or write-off dated in (B, R]; and, unless the base kept the month's openings, a
  payment in R's month (the collections split needs every payer's principal paid and due before
  the month: see below);
- an installment falling due in [B, R);
- a disbursement dated in (B, R];
- a loans file the base did not read rewrote its row, when such a file changed more than the
  tape's as-of view of a loan disbursed by B (``Batch.changes_from``); or a schedules or
  transactions file the base did not read wrote a row of it dated on or before B (a correction
  of the past: its rows carry that batch's id);
- an edit by hand in the admin of the loan or an installment since the base was computed (the
  audit log has its id; transactions are read-only there).

Loans that were repaid, not yet disbursed or without a balance at B stay so unless touched. Loan
states, the residual loans beside them and the principal due in the next 90 days are then the
same as a full computation's; every fact and KPI is computed from them as in a full run, and the
tests prove each stored value equal (tests/kpis/test_incremental.py, and ``make bench`` on the
1M-loan book).

The month's collections split classifies each payment of the month by the payer's principal
paid and principal due before the month began (kpis.engine.book.MONTH_LOANS). A run that has a
base (a daily run) keeps those two sums for the payers it computed in ``kpis_monthopening``
(kpis.models.MonthOpening) and says so (``SnapshotRun.opening_kept``). They depend on the book
and the month alone, so a run carried from a base that kept them reads the rows of the month's
payers it did not recompute: each paid by B, and untouched since B means unchanged since the
run that wrote its row. A base that did not keep them (computed in full, with no base of its own)
makes the run recompute every payer of the month and keep their openings, which starts the chain
again. Months before the last two are dropped, with the claim of the runs that kept them.

The base is the standing run of the latest date in the KPI_CARRY_DAYS before R, computed under
the same definition version and engine settings, whose batches are all still loaded; otherwise
(a removed batch, a first run, a definition change) the date is computed in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db.backends.utils import CursorWrapper
from psycopg import sql

from kpis import definitions as d
from kpis.engine import book
from kpis.engine.compose import BASE_RUN, rendered
from kpis.engine.runs import BOOK_KINDS, engine_settings, fingerprint
from kpis.models import SnapshotRun
from loans.models import Batch, Installment, Loan

# An admin edit saved this long before its base run was computed still counts as new: its
# transaction may have committed after the base read the book.
EDIT_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class Base:
    """The run a date's states are carried forward from, and the files loaded since that
    touched loans it had read."""

    run: SnapshotRun
    loan_batches: list[int]
    cash_batches: list[int]

    def params(self) -> dict[str, Any]:
        types = ContentType.objects.get_for_models(Loan, Installment)
        return {
            "base": self.run.pk,
            "base_as_of": self.run.as_of,
            "base_opening_kept": self.run.opening_kept,
            "loan_batches": self.loan_batches,
            "cash_batches": self.cash_batches,
            "edited_since": self.run.computed_at - EDIT_MARGIN,
            "loan_type": types[Loan].pk,
            "installment_type": types[Installment].pk,
        }


def carry_base(*, as_of: date) -> Base | None:
    """The run ``as_of``'s states can be carried forward from, or None (computed in full)."""
    days = settings.KPI_CARRY_DAYS
    if days <= 0:
        return None
    # Locked until this run commits: a recomputation of the base's date on another connection
    # (a series computes dates at once) would delete its states under this run's statements.
    # It waits here instead, or this run waits for it and then carries from what stands.
    run = (
        SnapshotRun.objects.standing()
        .filter(as_of__lt=as_of, as_of__gte=as_of - timedelta(days=days))
        .order_by("-as_of")
        .select_for_update(no_key=True, of=("self",))
        .first()
    )
    if run is None or run.definition_version != d.VERSION:
        return None
    if run.engine_settings != engine_settings():
        return None  # other settings, or a run from before residual loans were kept
    read = list(run.batches.values_list("pk", flat=True))
    if fingerprint(read) != run.data_fingerprint:
        return None  # a batch it read was removed (demo data): its rows are gone
    if Batch.objects.filter(pk__in=read).exclude(status=Batch.Status.LOADED).exists():
        return None
    since = (
        Batch.objects.loaded()
        .filter(kind__in=BOOK_KINDS)
        .exclude(pk__in=read)
        .values_list("pk", "kind", "changes_from")
    )
    loans = [(pk, changes_from) for pk, kind, changes_from in since if kind == Batch.Kind.LOANS]
    return Base(
        run=run,
        # A loans file that changed only the tape's as-of view, or only loans disbursed after
        # the base (touched by date), changed nothing the base read: no scan of every loan. One
        # that did: every loan a file since rewrote (a loan keeps only its latest file's id).
        loan_batches=[pk for pk, _ in loans]
        if any(changed is not None and changed <= run.as_of for _, changed in loans)
        else [],
        cash_batches=[
            pk
            for pk, kind, changes_from in since
            if kind in (Batch.Kind.SCHEDULES, Batch.Kind.TRANSACTIONS)
            and changes_from is not None
            and changes_from <= run.as_of
        ],
    )


TOUCHED_CREATE = rendered(
    sql.SQL("CREATE TEMP TABLE loan_touched (loan_id bigint PRIMARY KEY) ON COMMIT DROP")
)

TOUCHED_COUNT = rendered(sql.SQL("SELECT count(*) FROM loan_touched"))

TOUCHED_IDS = rendered(sql.SQL("SELECT coalesce(array_agg(loan_id), '{}') FROM loan_touched"))

# The touched loans on another connection (kpis.engine.aside), from their ids.
TOUCHED_FROM_IDS = rendered(
    sql.SQL("INSERT INTO loan_touched SELECT unnest(%(touched)s::bigint[])")
)

# What dates tell (each through its date index) and what the audit log tells.
TOUCHED_BY_DATE = rendered(
    sql.SQL("""
INSERT INTO loan_touched
SELECT loan_id FROM loans_transaction
WHERE transaction_type = 'PAYMENT' AND date <= %(as_of)s
  AND date >= least(CASE WHEN %(base_opening_kept)s THEN %(base_as_of)s + 1 ELSE %(month_start)s END, %(base_as_of)s + 1)
UNION
SELECT loan_id FROM loans_transaction
WHERE transaction_type = 'WRITE_OFF' AND date > %(base_as_of)s AND date <= %(as_of)s
UNION
SELECT loan_id FROM loans_installment WHERE due_date >= %(base_as_of)s AND due_date < %(as_of)s
UNION
SELECT id FROM loans_loan WHERE disburse_date > %(base_as_of)s AND disburse_date <= %(as_of)s
UNION
SELECT e.object_id FROM auditlog_logentry e
WHERE e.content_type_id = %(loan_type)s AND e.timestamp >= %(edited_since)s AND e.object_id IS NOT NULL
UNION
SELECT i.loan_id FROM auditlog_logentry e JOIN loans_installment i ON i.id = e.object_id
WHERE e.content_type_id = %(installment_type)s AND e.timestamp >= %(edited_since)s
""")
)

# The rows files loaded since the base wrote (the merge writes its batch id on exactly those):
# a loans file's loans; a schedules or transactions file that changed the past, its rows' loans.
TOUCHED_BY_LOAN_FILES = rendered(
    sql.SQL(
        "INSERT INTO loan_touched SELECT id FROM loans_loan WHERE batch_id = ANY(%(loan_batches)s) "
        "ON CONFLICT DO NOTHING"
    )
)

TOUCHED_BY_CASH_FILES = rendered(
    sql.SQL("""
INSERT INTO loan_touched
SELECT loan_id FROM loans_transaction WHERE batch_id = ANY(%(cash_batches)s)
UNION
SELECT loan_id FROM loans_installment WHERE batch_id = ANY(%(cash_batches)s)
ON CONFLICT DO NOTHING
""")
)

# The base's states of the loans not touched, carried to R: the same balance, DPD advanced with
# the calendar when past due, written off once it passes WRITE_OFF_DPD (a write-off booked
# before stays), the loan's attributes and its customer's segment as they are now.
CARRY_STATES = rendered(
    sql.SQL("""
WITH carried AS (
    SELECT b.loan_id, l.customer_id, l.company, l.product_type, l.currency, cu.segment, l.interest_rate,
           b.outstanding_principal + b.written_off_balance AS balance,
           CASE WHEN b.dpd > 0 THEN b.dpd + (%(as_of)s - %(base_as_of)s) ELSE 0 END AS dpd,
           b.written_off AS was_written_off
    FROM kpis_loanstate b
    JOIN loans_loan l ON l.id = b.loan_id JOIN loans_customer cu ON cu.id = l.customer_id
    WHERE b.run_id = {base} AND NOT EXISTS (SELECT 1 FROM loan_touched t WHERE t.loan_id = b.loan_id)
), state AS (
    SELECT c.*, (c.was_written_off OR c.dpd > %(write_off_dpd)s) AS written_off FROM carried c
)
{insert}
""").format(insert=book.STATE_INSERT, base=BASE_RUN)
)

# The base's residual loans not touched: the same balance, the slice as it is now.
CARRY_RESIDUALS = rendered(
    sql.SQL("""
INSERT INTO loan_residual
SELECT b.loan_id, l.company, l.product_type, l.currency, cu.segment, b.balance
FROM kpis_loanresidual b JOIN loans_loan l ON l.id = b.loan_id JOIN loans_customer cu ON cu.id = l.customer_id
WHERE b.run_id = {base} AND NOT EXISTS (SELECT 1 FROM loan_touched t WHERE t.loan_id = b.loan_id)
""").format(base=BASE_RUN)
)

# The principal falling due in the next 30/60/90 days of the loans not recomputed, from the
# installments in that window alone (through the due-date index).
DUE_WINDOW = rendered(
    sql.SQL("""
INSERT INTO loan_schedule (loan_id, {columns})
SELECT s.loan_id, {due}
FROM loans_installment s
WHERE s.due_date > %(as_of)s AND s.due_date <= {due_last}
  AND NOT EXISTS (SELECT 1 FROM loan_touched t WHERE t.loan_id = s.loan_id)
GROUP BY s.loan_id
""").format(
        columns=sql.SQL(", ").join(sql.Identifier(f"due_{n}") for n in d.DUE_DAYS),
        due=book.DUE_SUMS,
        due_last=book.DUE_LAST,
    )
)


# Carried forward, a run recomputes the touched loans on its own connection (the side connection
# gets their ids, for the month's flows: kpis.engine.aside), then inserts the rest's states: when
# most of the base's loans are touched (every payer of the month is when the base kept no
# openings, so a month-end then touches most of an instalment book), two connections computing
# every loan are about as fast. On the 1M-loan book (medians of three, benchmarks/README.md),
# from a base that kept its openings, under a server's statistics: 2025-11-15, 5% touched, 8.3 s
# carried against 13.0 s in full; 2025-11-30, 6% touched, 10.8 against 17.0 s. Above
# KPI_CARRY_MAX_TOUCHED (0.5) of the base's loans a date is computed in full.
TOUCHED_DROP = rendered(sql.SQL("DROP TABLE loan_touched"))


def touched_collect(cursor: CursorWrapper, params: dict[str, Any], base: Base) -> int | None:
    """The loans to recompute (temporary table ``loan_touched``), how many; None, and no table,
    when they are more than KPI_CARRY_MAX_TOUCHED of the base's loans (then computed in full)."""
    cursor.execute(TOUCHED_CREATE)
    cursor.execute(TOUCHED_BY_DATE, params)
    if base.loan_batches:
        cursor.execute(TOUCHED_BY_LOAN_FILES, params)
    if base.cash_batches:
        cursor.execute(TOUCHED_BY_CASH_FILES, params)
    cursor.execute(TOUCHED_COUNT)
    touched: int = cursor.fetchone()[0]
    if touched > settings.KPI_CARRY_MAX_TOUCHED * base.run.loans:
        cursor.execute(TOUCHED_DROP)
        return None
    cursor.execute(book.analyze("loan_touched"))
    return touched


def touched_ids(cursor: CursorWrapper) -> list[int]:
    """The loans ``touched_collect`` found, for another connection (``touched_cash``)."""
    cursor.execute(TOUCHED_IDS)
    ids: list[int] = cursor.fetchone()[0]
    return ids


def touched_cash(cursor: CursorWrapper, params: dict[str, Any], *, ids: bool = False) -> None:
    """loan_cash and loan_schedule of the touched loans: those of ``loan_touched``, or (``ids``)
    of ``params["touched"]``, on a connection that has no ``loan_touched`` yet."""
    if ids:
        cursor.execute(TOUCHED_CREATE)
        cursor.execute(TOUCHED_FROM_IDS, params)
        cursor.execute(book.analyze("loan_touched"))
    cursor.execute(book.LOAN_CASH_TOUCHED, params)
    cursor.execute(book.analyze("loan_cash"))
    cursor.execute(book.LOAN_SCHEDULE_TOUCHED, params)
    cursor.execute(book.analyze("loan_schedule"))


def loan_states_carried(cursor: CursorWrapper, params: dict[str, Any]) -> int:
    """The run's loan states and residual loans from the base's, the touched loans
    (``touched_collect``) recomputed: returns how many loans have a balance at R."""
    touched_cash(cursor, params)
    cursor.execute(book.LOAN_RESIDUALS)
    cursor.execute(book.LOAN_STATES, params)
    balances: int = cursor.rowcount
    cursor.execute(CARRY_STATES, params)
    balances += cursor.rowcount
    cursor.execute(CARRY_RESIDUALS, params)
    cursor.execute(DUE_WINDOW, params)
    cursor.execute(book.analyze("loan_schedule"))
    return balances
