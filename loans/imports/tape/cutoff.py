"""A tape file's data cut-off and the earliest date it changed (docs/design.md, "Data cut-off
and restatement"), read in the import's transaction right after the file's merge.

- ``data_through``: the latest date in the file (disbursement for loans, payment date for
  transactions), or the date the export or the uploader gives;
- ``changes_from``: the earliest date of a row the merge inserted or changed (it wrote the
  batch's id on exactly those rows), leaving out loans whose only change is the tape's own as-of
  view (``FileSpec.as_of_view``: the export's DPD, balance and status of the day) and counting a
  moved disbursement from the earlier date: a stored snapshot on or after it read other data,
  and is recomputed as restated.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from loans.imports.tape.compose import Cursor, ident, one_row
from loans.imports.tape.staged import StagedFile

# kind -> (the file's date column that says how far its data runs, or None;
#          the book's table and date column of the rows it writes)
DATED = {
    "loans": ("disburse_date", "loans_loan", "disburse_date"),
    "transactions": ("date_paid", "loans_transaction", "date"),
    "schedules": (None, "loans_installment", "due_date"),
}


def file_cutoff(
    f: StagedFile, cursor: Cursor, *, batch_id: int, given: date | None
) -> tuple[date | None, date | None]:
    """(data_through, changes_from) of one merged file; (None, None) for kinds without dates."""
    if f.spec.kind not in DATED:
        return None, None
    file_column, table, column = DATED[f.spec.kind]
    through = given
    if file_column is not None and through is None:
        cursor.execute(
            sql.SQL("SELECT max({}) FROM {}").format(ident(file_column), ident(f.typed_table))
        )
        through = one_row(cursor)[0]
    # Only the rows this merge wrote carry its batch id (unchanged rows keep their batch).
    if f.spec.as_of_view:
        # Loans: a row it updated (its change record, keyed by the loan id, lists the fields)
        # counts unless only the tape's as-of view changed, from the earlier of its dates before
        # and after; a row it inserted has no change record.
        cursor.execute(
            sql.SQL(
                "SELECT min(least(r.{column}, (c.fields -> {name} ->> 0)::date)) FROM {table} r "
                "LEFT JOIN loans_batchchange c ON c.batch_id = %(batch)s AND c.kind = %(kind)s "
                "AND c.change = 'updated' AND c.key = r.loan_id "
                "WHERE r.batch_id = %(batch)s AND (c.id IS NULL OR EXISTS ("
                "SELECT 1 FROM jsonb_object_keys(c.fields) f WHERE f <> ALL(%(as_of_view)s)))"
            ).format(column=ident(column), name=sql.Literal(column), table=ident(table)),
            {"batch": batch_id, "kind": f.spec.kind, "as_of_view": list(f.spec.as_of_view)},
        )
    else:
        cursor.execute(
            sql.SQL("SELECT min({}) FROM {} WHERE batch_id = %s").format(
                ident(column), ident(table)
            ),
            [batch_id],
        )
    return through, one_row(cursor)[0]
