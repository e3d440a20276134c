"""Stage: COPY a file into its typed staging table.

Two ways in. A file in the tape's own format (ISO dates, dot decimals) is COPYed straight into a
typed staging table: PostgreSQL parses it at C speed. If that COPY refuses a value, or the source
writes decimal commas or day-first dates, the file is COPYed as text instead and parsed by the
``abaco_parse_*`` SQL functions, which turn bad values into NULL so one query lists every bad
value with its row and column. Either way the typed table has the same shape, and the same
checks and merge run on it.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from loans.imports.files import BOM, CHUNK
from loans.imports.specs import Column, ColumnType
from loans.imports.tape.compose import NO_AUTOVACUUM, Cursor, create_as, ident, join, one_row
from loans.imports.tape.staged import StagedFile
from loans.lineage import WARNING

COPY_DATA_ERRORS = (pg_errors.DataException, pg_errors.BadCopyFileFormat)

TYPED_SQL = {
    ColumnType.TEXT: "text",
    ColumnType.MONEY: "numeric",  # rounded to cents at merge, so float noise can be reported
    ColumnType.DECIMAL: "numeric",
    ColumnType.INTEGER: "numeric",  # "148.0" is a whole number; "148.5" is reported, not truncated
    ColumnType.DATE: "date",
}
NUMERIC_TYPES = (ColumnType.MONEY, ColumnType.DECIMAL, ColumnType.INTEGER)


def _read_header(f: StagedFile) -> bool:
    if f.file.binary:
        f.problem(None, "", "", "this is a binary file, not a CSV text file")
        return False
    header = f.file.header(f.fmt.delimiter)
    if not header or header == [""]:
        f.problem(None, "", "", "the file is empty (no header line)")
        return False
    mapped = [f.fmt.headers.get(name.lower(), name.lower()) for name in header]
    known = {c.name: c for c in f.spec.columns}
    missing = [name for name in f.spec.required if name not in mapped]
    for name in missing:
        f.problem(1, name, "", "required column is missing from the header")
    seen: set[str] = set()
    for position, name in enumerate(mapped):
        if name in known and name not in seen:
            seen.add(name)
            f.columns.append(known[name])
            f.file_columns.append(name)
            continue
        if name in seen:
            f.problem(1, name, "", "column appears twice in the header")
        else:
            f.problem(1, header[position], "", "unknown column, ignored", WARNING)
        f.file_columns.append(f"_ignored_{position}")
    return not f.errors


def _copy(f: StagedFile, cursor: Cursor, table: str) -> int:
    """COPY the file into ``table``, which this subtransaction created; the number of rows
    it read.

    FREEZE writes the rows as already visible to everyone: otherwise the first pass over
    them sets each row's commit hint, dirtying and writing every page of the file again."""
    copy_sql = sql.SQL(
        "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true, FREEZE, DELIMITER {}, ENCODING {})"
    ).format(
        ident(table),
        join(map(ident, f.file_columns)),
        sql.Literal(f.fmt.delimiter),
        sql.Literal(f.file.encoding),
    )
    with cursor.copy(copy_sql) as copy, f.file.open() as stream:
        first = True
        while chunk := stream.read(CHUNK):
            if first and chunk.startswith(BOM):
                chunk = chunk[len(BOM) :]
            first = False
            copy.write(chunk)
    return cursor.rowcount


def _create(f: StagedFile, cursor: Cursor, table: str, types: dict[str, str]) -> None:
    cols = join(sql.SQL("{} {}").format(ident(name), sql.SQL(kind)) for name, kind in types.items())
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(table)))
    # The line numbers come from the table's own sequence, which, read by this COPY alone,
    # hands them out in order; taking them 100,000 at a time saved 1 s per 5M rows.
    cursor.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE {} (line bigint GENERATED ALWAYS AS IDENTITY (CACHE 100000), {}) "
            + NO_AUTOVACUUM
        ).format(ident(table), cols)
    )


def _typed_columns(f: StagedFile) -> dict[str, str]:
    types = {c.name: TYPED_SQL[c.type] for c in f.spec.columns}
    types.update({name: "text" for name in f.file_columns if name.startswith("_ignored_")})
    return types


def stage(f: StagedFile, cursor: Cursor) -> bool:
    """Load the file into the typed staging table. False when the file cannot be read at all."""
    if not _stage(f, cursor):
        return False
    # Which text columns need trimming (see trimmed): known from here on, so the payments
    # pass, which reads the file before its checks, joins on the loan id as it is.
    texts = [c.name for c in f.columns if c.type == ColumnType.TEXT]
    f.padded = set()
    if texts:
        cursor.execute(
            sql.SQL("SELECT {} FROM {} t").format(
                join(
                    sql.SQL("coalesce(bool_or(t.{c} LIKE ' %' OR t.{c} LIKE '% '), false)").format(
                        c=ident(name)
                    )
                    for name in texts
                ),
                ident(f.typed_table),
            )
        )
        flags = one_row(cursor)
        f.padded = {name for name, flag in zip(texts, flags, strict=True) if flag}
    return True


def _stage(f: StagedFile, cursor: Cursor) -> bool:
    if not _read_header(f):
        return False
    if f.fmt.native:
        cursor.execute("SAVEPOINT typed_copy")
        _create(f, cursor, f.typed_table, _typed_columns(f))
        try:
            rows = _copy(f, cursor, f.typed_table)
        except psycopg.Error:
            # A value PostgreSQL refuses: go the slow way, which lists every bad value.
            cursor.execute("ROLLBACK TO SAVEPOINT typed_copy")
        else:
            cursor.execute("RELEASE SAVEPOINT typed_copy")
            return _rows_read(f, cursor, f.typed_table, rows)
    return _stage_text(f, cursor)


def _stage_text(f: StagedFile, cursor: Cursor) -> bool:
    f.text_staged = True
    cursor.execute("SAVEPOINT text_copy")
    _create(f, cursor, f.stage_table, dict.fromkeys(f.file_columns, "text"))
    try:
        rows = _copy(f, cursor, f.stage_table)
    except COPY_DATA_ERRORS as exc:
        # Keep the transaction usable so the other files are still checked and reported.
        cursor.execute("ROLLBACK TO SAVEPOINT text_copy")
        line = re.search(r"line (\d+)", exc.diag.context or "")
        f.problem(
            int(line.group(1)) if line else None,
            "",
            "",
            f"unreadable row: {exc.diag.message_primary}",
        )
        return False
    if not _rows_read(f, cursor, f.stage_table, rows):
        return False
    # Parse into the same typed shape the fast path produces; bad values become NULL.
    selects = [
        _parsed(f, c) if c.name in f.file_columns else sql.SQL("NULL") for c in f.spec.columns
    ]
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(f.typed_table)))
    create_as(
        cursor,
        f.typed_table,
        sql.SQL("SELECT line, {} FROM {}").format(
            join(
                sql.SQL("{}::{} AS {}").format(expr, sql.SQL(TYPED_SQL[c.type]), ident(c.name))
                for expr, c in zip(selects, f.spec.columns, strict=True)
            ),
            ident(f.stage_table),
        ),
    )
    return True


def _rows_read(f: StagedFile, cursor: Cursor, table: str, rows: int) -> bool:
    """Record the ``rows`` the COPY read into ``table`` (False when none) and ANALYZE it."""
    # Statistics for the checks' plans: autovacuum never sees a staging table, and without
    # them PostgreSQL guesses a few thousand rows and sorts millions on disk instead of hashing.
    cursor.execute(sql.SQL("ANALYZE {}").format(ident(table)))
    f.result.rows_read = rows
    if f.result.rows_read == 0:
        f.problem(None, "", "", "the file has a header but no rows")
        return False
    return True


def _parsed(f: StagedFile, column: Column) -> sql.Composable:
    raw = ident(column.name)
    if column.type in NUMERIC_TYPES:
        return sql.SQL("abaco_parse_numeric({}, {})").format(raw, sql.Literal(f.fmt.decimal_comma))
    if column.type == ColumnType.DATE:
        return sql.SQL("abaco_parse_date({}, {})").format(raw, sql.Literal(f.fmt.day_first))
    return raw
