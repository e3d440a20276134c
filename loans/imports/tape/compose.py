"""The SQL pieces every phase composes: identifiers, staging tables, and code comparisons."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from loans.imports.specs import ISO_CURRENCIES
from loans.lineage import STAGING_SCHEMA as STAGING_SCHEMA  # pool.py and stage.py read it here
from loans.models import Transaction

# psycopg's own cursor (COPY, composed SQL), as the import unwraps it from Django's.
Cursor: TypeAlias = psycopg.Cursor[TupleRow]


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def join(parts: Iterable[sql.Composable], sep: str = ", ") -> sql.Composed:
    return sql.SQL(sep).join(list(parts))


# Every staging table: autovacuum would otherwise VACUUM ANALYZE each freshly loaded one (over
# 20 s for the 5M staged payments), competing for the cores the import is using, and a DROP at
# the end could wait a second (deadlock_timeout) for it to give way. The import ANALYZEs what it
# reads.
NO_AUTOVACUUM = "WITH (autovacuum_enabled = false)"


def one_row(cursor: Cursor) -> tuple[Any, ...]:
    """The row of a statement that always returns one (an aggregate, ``SELECT f(...)``)."""
    row = cursor.fetchone()
    assert row is not None, "the statement returned no row"
    return row


def create_as(cursor: Cursor, table: str, query: sql.Composable) -> None:
    """A staging table of ``query``'s rows, with the statistics the next statements plan by."""
    cursor.execute(
        sql.SQL(f"CREATE UNLOGGED TABLE {{}} {NO_AUTOVACUUM} AS {{}}").format(ident(table), query)
    )
    cursor.execute(sql.SQL("ANALYZE {}").format(ident(table)))


def staged(cursor: Cursor, table: str) -> bool:
    """Whether this import has made the staging table ``table`` (or a connection committed it)."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{STAGING_SCHEMA}.{table}"])
    made: bool = one_row(cursor)[0]
    return made


# Codes (currencies, transaction types) compare trimmed and upper-cased. Most values are written
# exactly as a code: a plain (hashed) lookup settles those, and only the others are trimmed and
# folded; millions of upper(btrim()) calls cost seconds. A column names its list (``Column.codes``).
CODES = {"currency": sorted(ISO_CURRENCIES), "transaction_type": list(Transaction.Type.values)}
CODE_REASONS = {
    "currency": "unknown currency (not an ISO 4217 code)",
    "transaction_type": "unknown transaction type (expected one of "
    + ", ".join(Transaction.Type.values)
    + ")",
}


def not_in(col: sql.Composable, codes: list[str]) -> sql.Composable:
    """``col``, trimmed and upper-cased, is none of ``codes``."""
    return sql.SQL("({c} <> ALL({codes}) AND upper(btrim({c})) <> ALL({codes}))").format(
        c=col, codes=sql.Literal(codes)
    )


def code(col: sql.Composable, codes: list[str]) -> sql.Composable:
    """``upper(btrim(col))``, without calling either for a value that is a code already."""
    return sql.SQL("(CASE WHEN {c} = ANY({codes}) THEN {c} ELSE upper(btrim({c})) END)").format(
        c=col, codes=sql.Literal(codes)
    )


# A staged transaction's type as stored (the merge, its numbering and the payments pass).
X_TRANSACTION_TYPE = code(sql.SQL("x.transaction_type"), CODES["transaction_type"])
