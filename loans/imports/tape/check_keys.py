"""Check keys: duplicate keys in a file, and the per-key tables the later phases read (each
loan's first row, the numbering of repeated transactions, each loan's schedule totals).

Reads nothing but the file (on a staging connection, see ``pool``), after ``check_values``."""

from __future__ import annotations

from psycopg import errors as pg_errors
from psycopg import sql

from loans.imports.specs import ColumnType
from loans.imports.tape.compose import X_TRANSACTION_TYPE, Cursor, create_as, ident, join
from loans.imports.tape.staged import StagedFile


def _loan_firsts(f: StagedFile, cursor: Cursor) -> None:
    """Loans: the loan a loan id names, for the checks and the payments pass: its first row.
    "C": the loan ids are only told apart here, and byte order sorts faster."""
    lid = f.trimmed("t", "loan_id")
    create_as(
        cursor,
        f.firsts_table,
        sql.SQL(
            'SELECT DISTINCT ON ({lid} COLLATE "C") {lid} AS loan_id, t.line, t.disburse_date, '
            "t.disburse_principal FROM {typed} t WHERE NULLIF({lid}, '') IS NOT NULL "
            'ORDER BY {lid} COLLATE "C", t.line'
        ).format(lid=lid, typed=ident(f.typed_table)),
    )


def _schedule_totals(f: StagedFile, cursor: Cursor) -> None:
    """Schedules: each loan's schedule at once: its principal (for the totals check), its first
    row and its first due date (see check_across.prepare_lookups)."""
    create_as(
        cursor,
        f.totals_table,
        sql.SQL(
            "SELECT {} AS loan_id, sum(principal) AS total, min(line) AS first_line, "
            "min(date_due) AS first_due FROM {} x GROUP BY 1"
        ).format(f.trimmed("x", "loan_id"), ident(f.typed_table)),
    )


def _number_repeats(f: StagedFile, cursor: Cursor) -> None:
    """Transactions: each row's place among the rows of its (loan, date, type), in file
    order, for the rows that are the n-th (n >= 1): most rows are the only one of theirs
    (sequence 0). A narrow pass here instead of sorting every row with all its values in
    the merge (4 s for 5M), which joins this small table by line. By the trimmed loan id,
    so "L1" and "L1 " count as one loan; text sorts in byte order.

    Not an UPDATE of the staged rows: it rewrote 68,000 rows scattered over nearly every
    page of 5M, and each later pass over the table dirtied those pages again to set the
    commit hints of their old and new versions."""
    create_as(
        cursor,
        f.repeats_table,
        sql.SQL(
            "SELECT line, sequence FROM ("
            ' SELECT x.line, row_number() OVER (PARTITION BY {} COLLATE "C", x.date_paid,'
            ' {} COLLATE "C" ORDER BY x.line) - 1 AS sequence FROM {} x) n WHERE sequence > 0'
        ).format(
            f.trimmed("x", "loan_id"),
            X_TRANSACTION_TYPE,
            ident(f.typed_table),
        ),
    )


def _check_duplicate_keys(f: StagedFile, cursor: Cursor) -> None:
    """Rows whose key an earlier row of the file has (keys compare as stored: text trimmed,
    so "L1" and "L1 " are the same loan).

    A unique index over the staged keys settles the usual case, no duplicate, in one
    parallel sort (about 2 s for 5M schedule lines, against 4.3 s for grouping them); only
    when it cannot be built does the query that lists every repeated row run. NULLs count as
    equal, as in the grouping; text compares in byte order, which is equality in any
    deterministic collation, and sorts faster.
    """
    key = [c for c in f.spec.key if c != "sequence"]
    if f.spec.numbered:  # rows of one key are numbered, not duplicates
        return
    t = ident(f.typed_table)

    def key_exprs(alias: str | None, collate: str = "") -> list[sql.Composable]:
        return [
            sql.SQL("{}{}").format(f.trimmed(alias, k), sql.SQL(collate))
            if f.spec.column(k).type == ColumnType.TEXT
            else sql.SQL("{}.{}").format(ident(alias), ident(k))
            if alias
            else ident(k)
            for k in key
        ]

    cursor.execute("SAVEPOINT unique_keys")
    try:
        cursor.execute(
            sql.SQL("CREATE UNIQUE INDEX ON {} ({}) NULLS NOT DISTINCT").format(
                t,
                join(sql.SQL("({})").format(e) for e in key_exprs(None, ' COLLATE "C"')),
            )
        )
    except pg_errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT unique_keys")
    else:
        cursor.execute("RELEASE SAVEPOINT unique_keys")
        return
    names = [ident(f"k{i}") for i in range(len(key))]
    cursor.execute(
        sql.SQL(
            "INSERT INTO {rejects} (line, col, value, reason) "
            "SELECT x.line, {col}, concat_ws(' / ', {dnames}), 'duplicate key: first seen on row ' || (d.first_line + 1) "
            "FROM (SELECT {exprs}, min(g.line) AS first_line FROM {t} g GROUP BY {names} HAVING count(*) > 1) d "
            "JOIN {t} x ON ({xexprs}) = ({dnames}) WHERE x.line <> d.first_line"
        ).format(
            rejects=ident(f.rejects_table),
            exprs=join(
                sql.SQL("{} AS {}").format(e, n) for e, n in zip(key_exprs("g"), names, strict=True)
            ),
            xexprs=join(key_exprs("x")),
            t=t,
            col=sql.Literal(key[0]),
            dnames=join(sql.SQL("d.{}").format(n) for n in names),
            names=join(names),
        )
    )


# The table each kind's later phases read, made right after its duplicate keys are checked.
PER_KEY_TABLES = {
    "loans": _loan_firsts,
    "transactions": _number_repeats,
    "schedules": _schedule_totals,
}


def check_keys(f: StagedFile, cursor: Cursor) -> None:
    """After ``check_values``: duplicate keys in this file, then its table of
    ``PER_KEY_TABLES`` (each loan's first row, the numbering of repeated transactions, each
    loan's schedule totals)."""
    _check_duplicate_keys(f, cursor)
    if per_key := PER_KEY_TABLES.get(f.spec.kind):
        per_key(f, cursor)
