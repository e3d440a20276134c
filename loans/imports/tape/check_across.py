"""Check across files: references, date order and totals against the tape's other files and the
book, in the import's transaction (after ``check_keys``); then the file's rejected rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from psycopg import sql

from loans.imports.specs import TAPE_SPECS
from loans.imports.tape.compose import NO_AUTOVACUUM, Cursor, ident, one_row, staged
from loans.imports.tape.payments import payments_pass
from loans.imports.tape.staged import MAX_LISTED, StagedFile
from loans.lineage import Problem


def check_across(
    f: StagedFile, cursor: Cursor, loaded_kinds: Iterable[str], *, quarantine: bool = False
) -> None:
    """The checks against the other files of the tape and the book (after ``check_keys``)."""
    prepare_lookups(f, cursor, set(loaded_kinds))
    for check in _set_checks(f, set(loaded_kinds), quarantine):
        cursor.execute(
            sql.SQL("INSERT INTO {} (line, col, value, reason) {}").format(
                ident(f.rejects_table), check
            )
        )
    _collect_rejects(f, cursor)


@dataclass(frozen=True)
class PerLoan:
    """How a file whose rows refer to loans is checked loan by loan: its table of per-loan
    figures (``check_keys`` for schedules, the payments pass for transactions), the column of
    each loan's first date there, and how its principal reconciles with the loan's."""

    table: Callable[[StagedFile], str]
    first_date: str
    reason: str  # with {} for the file's total and the loan's disbursed principal
    bad: str  # the condition on s (the totals) and l (the loan) that makes a loan's total wrong


PER_LOAN = {
    "schedules": PerLoan(
        lambda f: f.totals_table,
        "first_due",
        "schedule principal {} does not add up to the loan's disbursed principal {}",
        "abs(round(s.total, 2) - round(l.disburse_principal, 2)) > 0.01",
    ),
    "transactions": PerLoan(
        lambda f: f.payments_table,
        "first_date",
        "payments' principal {} exceeds the loan's disbursed principal {}",
        "round(s.total, 2) > round(l.disburse_principal, 2) + 0.01",
    ),
}


def _set_checks(
    f: StagedFile, loaded_kinds: set[str], quarantine: bool = False
) -> list[sql.Composable]:
    """Checks across rows and tables: references, date order, totals."""
    t = ident(f.typed_table)
    spec = f.spec
    checks: list[sql.Composable] = []
    if spec.parent == "customers":
        in_file = (
            sql.SQL("AND NOT EXISTS (SELECT 1 FROM {} c WHERE btrim(c.customer_id) = {})").format(
                ident(f.typed("customers")), f.trimmed("l", "customer_id")
            )
            if "customers" in loaded_kinds
            else sql.SQL("")
        )
        checks.append(
            sql.SQL(
                "SELECT l.line, 'customer_id', l.customer_id, 'customer is neither in this tape nor in the database' FROM {t} l "
                "WHERE NULLIF({cid}, '') IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM loans_customer c WHERE c.customer_id = {cid}) {in_file}"
            ).format(t=t, in_file=in_file, cid=f.trimmed("l", "customer_id"))
        )
    for order in spec.date_order:
        checks.append(
            sql.SQL(
                "SELECT line, {name}, {col}::text, {reason} FROM {t} WHERE {col} {bad} {other}"
            ).format(
                name=sql.Literal(order.column),
                col=ident(order.column),
                reason=sql.Literal(order.reason),
                t=t,
                bad=sql.SQL(order.bad),
                other=ident(order.other),
            )
        )
    if spec.after_disbursement and not f.references_clean:
        date_col, what = spec.after_disbursement
        # One join answers both: is the loan known, and is the date on or after its disbursement.
        checks.append(
            sql.SQL(
                "SELECT x.line, CASE WHEN l.loan_id IS NULL THEN 'loan_id' ELSE {col} END, "
                "CASE WHEN l.loan_id IS NULL THEN x.loan_id ELSE x.{d}::text END, "
                "CASE WHEN l.loan_id IS NULL THEN 'loan is neither in this tape nor in the database' ELSE {reason} END "
                "FROM {t} x LEFT JOIN tape_loans l ON l.loan_id = {lid} "
                "WHERE NULLIF({lid}, '') IS NOT NULL AND (l.loan_id IS NULL OR x.{d} < l.disburse_date)"
            ).format(
                lid=f.trimmed("x", "loan_id"),
                col=sql.Literal(date_col),
                d=ident(date_col),
                t=t,
                reason=sql.Literal(f"{what} is before the loan's disbursement date"),
            )
        )
    if spec.kind in PER_LOAN and "loans" in loaded_kinds:
        checks.append(_reconcile_check(f))
    if quarantine:
        checks += _held_back_checks(f, loaded_kinds)
    return checks


def _reconcile_check(f: StagedFile) -> sql.Composable:
    """Totals against the loans of the same tape: a loan's schedule principal must add up to
    its disbursed principal, and its payments' principal must not exceed it (to the cent).
    The problem is reported on the loan's first row of this file."""
    per_loan = PER_LOAN[f.spec.kind]
    before, after = per_loan.reason.split("{}", 1)[0], per_loan.reason.split("{}")[1]
    return sql.SQL(
        "SELECT s.first_line, 'principal', s.loan_id, {before} || round(s.total, 2) || {after} || round(l.disburse_principal, 2) "
        "FROM {totals} s JOIN tape_loans l ON l.loan_id = s.loan_id AND l.in_tape AND NOT l.rejected "
        "WHERE {compare} "
        # A loan with a rejected row here already has its problem; its total is incomplete.
        "AND s.loan_id NOT IN (SELECT btrim(x.loan_id) FROM {t} x JOIN {rejects} r ON r.line = x.line)"
    ).format(
        before=sql.Literal(before),
        after=sql.Literal(after),
        totals=ident(per_loan.table(f)),
        compare=sql.SQL(per_loan.bad),
        t=ident(f.typed_table),
        rejects=ident(f.rejects_table),
    )


def prepare_lookups(f: StagedFile, cursor: Cursor, loaded_kinds: set[str]) -> None:
    """The per-import lookup the checks of schedules and transactions share, built once:
    ``tape_loans`` (every loan this tape or the book knows, with its disbursement facts);
    and the payments table when the file's staging did not make it (``payments_pass``)."""
    if f.spec.kind not in PER_LOAN:
        return
    lookup_loans(f, cursor, loaded_kinds)
    if f.spec.kind == "transactions" and not staged(cursor, f.payments_table):
        # No loans file: the pass was not run while the file was staged.
        payments_pass(f, cursor, "tape_loans")
    # When every loan is known and no loan's first date in this file (the schedule's totals,
    # the payments table) comes before its disbursement, no row can fail the row-by-row
    # check of both, which is skipped: a join of a million loans instead of five million
    # rows.
    per_loan = PER_LOAN[f.spec.kind]
    cursor.execute(
        sql.SQL(
            "SELECT NOT EXISTS (SELECT 1 FROM {} s LEFT JOIN tape_loans l ON l.loan_id = s.loan_id "
            "WHERE NULLIF(s.loan_id, '') IS NOT NULL AND (l.loan_id IS NULL OR s.{} < l.disburse_date))"
        ).format(ident(per_loan.table(f)), ident(per_loan.first_date))
    )
    f.references_clean = one_row(cursor)[0]


def lookup_loans(f: StagedFile, cursor: Cursor, loaded_kinds: set[str]) -> None:
    """``tape_loans``, once per import: after the loans file's checks (its rejected rows
    are marked), before the first check of schedules or transactions."""
    if not staged(cursor, "tape_loans"):
        if "loans" in loaded_kinds:
            cursor.execute(
                sql.SQL(
                    f"CREATE UNLOGGED TABLE tape_loans {NO_AUTOVACUUM} AS "
                    "SELECT f.loan_id, f.disburse_date, f.disburse_principal, true AS in_tape, "
                    "EXISTS (SELECT 1 FROM {} r WHERE r.line = f.line) AS rejected FROM {} f"
                ).format(ident(f.rejects("loans")), ident(f.firsts("loans")))
            )
        else:
            cursor.execute(
                "CREATE UNLOGGED TABLE tape_loans (loan_id text, disburse_date date, disburse_principal numeric, "
                "in_tape boolean, rejected boolean) " + NO_AUTOVACUUM
            )
        cursor.execute(
            "INSERT INTO tape_loans SELECT loan_id, disburse_date, disburse_principal, false, false FROM loans_loan db "
            "WHERE NOT EXISTS (SELECT 1 FROM tape_loans t WHERE t.loan_id = db.loan_id)"
        )
        cursor.execute("ANALYZE tape_loans")


def _held_back_checks(f: StagedFile, loaded_kinds: set[str]) -> list[sql.Composable]:
    """Quarantine: rows whose customer or loan is only in this tape, on a row held back."""
    kind = f.spec.parent
    if not kind or kind not in loaded_kinds:
        return []
    key, table = TAPE_SPECS[kind].key[0], TAPE_SPECS[kind].table
    return [
        sql.SQL(
            "SELECT x.line, {key}, x.{k}, {reason} FROM {t} x "
            "WHERE EXISTS (SELECT 1 FROM {typed} p JOIN {rejects} r ON r.line = p.line WHERE btrim(p.{k}) = btrim(x.{k})) "
            "AND NOT EXISTS (SELECT 1 FROM {typed} p WHERE btrim(p.{k}) = btrim(x.{k}) AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.line = p.line)) "
            "AND NOT EXISTS (SELECT 1 FROM {table} b WHERE b.{k} = btrim(x.{k}))"
        ).format(
            key=sql.Literal(key),
            k=ident(key),
            reason=sql.Literal(f"held back: its row in {kind}.csv was rejected"),
            t=ident(f.typed_table),
            typed=ident(f.typed(kind)),
            rejects=ident(f.rejects(kind)),
            table=ident(table),
        )
    ]


def _collect_rejects(f: StagedFile, cursor: Cursor) -> None:
    rejects = ident(f.rejects_table)
    cursor.execute(sql.SQL("SELECT count(DISTINCT line) FROM {}").format(rejects))
    f.result.rejected = one_row(cursor)[0]
    if not f.result.rejected:
        return
    cursor.execute(
        sql.SQL("SELECT line, col, value, reason FROM {} ORDER BY line, col LIMIT {}").format(
            rejects, sql.Literal(MAX_LISTED)
        )
    )
    for line, col, value, reason in cursor.fetchall():
        f.problem(line + 1, col, value, reason)


def rejected_rows(f: StagedFile, cursor: Cursor) -> list[Problem]:
    """Every rejected value (for the downloadable CSV), not only the first MAX_LISTED."""
    cursor.execute(
        sql.SQL("SELECT line, col, value, reason FROM {} ORDER BY line, col").format(
            ident(f.rejects_table)
        )
    )
    return [
        Problem(f.file.name, line + 1, col, value or "", reason)
        for line, col, value, reason in cursor.fetchall()
    ]
