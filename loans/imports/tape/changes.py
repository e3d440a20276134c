"""The change log: before a merge updates the book, what it changes (and what a newer tape no
longer carries) is recorded per batch as ``BatchChange``, the batch's field-level history."""

from __future__ import annotations

from psycopg import sql

from loans.imports.specs import FileSpec
from loans.imports.tape.compose import Cursor, ident, join

# What a full export of a source no longer carries, per kind. Judged only against that source's
# own rows (a row belongs to the source of the batch that last wrote it): one source's export says
# nothing of another's loans, and a partial file (one loan, a month of payments) says nothing of
# the rows it leaves out, so it flags none.
VANISHED = {
    # A loan the source no longer reports.
    "loans": sql.SQL(
        "INSERT INTO loans_batchchange (batch_id, kind, key, change, fields, review, review_reason) "
        "SELECT {batch}, 'loans', cur.loan_id, 'vanished', '{{}}'::jsonb, 'pending', '' FROM loans_loan cur "
        "JOIN loans_batch b ON b.id = cur.batch_id AND b.source = {source} "
        "WHERE NOT EXISTS (SELECT 1 FROM {m} m WHERE m.loan_id = cur.loan_id)"
    ),
    # Past cash flows of the source's loans in this file that the file no longer carries.
    "transactions": sql.SQL(
        "INSERT INTO loans_batchchange (batch_id, kind, key, change, fields, review, review_reason) "
        "SELECT {batch}, 'transactions', l.loan_id || ' ' || cur.transaction_type || ' ' || cur.date, 'vanished', "
        "jsonb_build_object('principal', jsonb_build_array(cur.principal::text, NULL)), 'pending', '' "
        "FROM loans_transaction cur JOIN loans_loan l ON l.id = cur.loan_id "
        "JOIN loans_batch b ON b.id = cur.batch_id AND b.source = {source} "
        "WHERE cur.loan_id IN (SELECT DISTINCT loan_id FROM {m}) "
        "AND NOT EXISTS (SELECT 1 FROM {m} m WHERE {on})"
    ),
}


def record_changes(
    spec: FileSpec,
    cursor: Cursor,
    *,
    batch_id: int,
    merge_table: sql.Composable,
    updates: list[str],
    full_export_of: str | None = None,
) -> None:
    """Before a merge updates the book: each row it changes, field by field (changes to the
    spec's historical fields flagged for review), and, when the file is a full export of source
    ``full_export_of``, that source's rows it no longer carries."""
    conflict = spec.conflict
    on = join((sql.SQL("cur.{c} = m.{c}").format(c=ident(c)) for c in conflict), " AND ")
    diff = join(
        sql.SQL(
            "{name}, CASE WHEN cur.{c} IS DISTINCT FROM m.{c} THEN jsonb_build_array(cur.{c}::text, m.{c}::text) END"
        ).format(name=sql.Literal(c), c=ident(c))
        for c in updates
    )
    historical = [c for c in spec.historical if c in updates]
    flagged = (
        join(
            (sql.SQL("cur.{c} IS DISTINCT FROM m.{c}").format(c=ident(c)) for c in historical),
            " OR ",
        )
        if historical
        else sql.SQL("FALSE")
    )
    cursor.execute(
        sql.SQL(
            "INSERT INTO loans_batchchange (batch_id, kind, key, change, fields, review, review_reason) "
            "SELECT {batch}, {kind}, m._key, 'updated', jsonb_strip_nulls(jsonb_build_object({diff})), "
            "CASE WHEN {flagged} THEN 'pending' ELSE '' END, '' "
            "FROM {m} m JOIN {table} cur ON {on} WHERE ({cur}) IS DISTINCT FROM ({new})"
        ).format(
            batch=sql.Literal(batch_id),
            kind=sql.Literal(spec.kind),
            diff=diff,
            flagged=flagged,
            m=merge_table,
            table=ident(spec.table),
            on=on,
            cur=join(sql.SQL("cur.{}").format(ident(c)) for c in updates),
            new=join(sql.SQL("m.{}").format(ident(c)) for c in updates),
        )
    )
    vanished = VANISHED.get(spec.kind)
    if vanished is not None and full_export_of is not None:
        cursor.execute(
            vanished.format(
                batch=sql.Literal(batch_id),
                source=sql.Literal(full_export_of),
                m=merge_table,
                on=on,
            )
        )
