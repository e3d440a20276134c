"""The bulk path: COPY each file into a staging table, validate it with set-based SQL, and merge
it into the normalized tables with one upsert per file that leaves unchanged rows untouched.

Two ways in. A file in the tape's own format (ISO dates, dot decimals) is COPYed straight into a
typed staging table: PostgreSQL parses it at C speed. If that COPY refuses a value, or the source
writes decimal commas or day-first dates, the file is COPYed as text instead and parsed by the
``abaco_parse_*`` SQL functions, which turn bad values into NULL so one query lists every bad
value with its row and column. Either way the typed table has the same shape, and the same
checks and merge run on it.

Everything that writes to the book runs inside the caller's transaction: a file with any error
raises ``TapeRejected`` and the database is exactly as before. The staging tables are UNLOGGED
tables in the ``import_staging`` schema (see ``staging``); a file's own staging and checks may
run on another connection (``FileLoader``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from django.db import DatabaseError, connection, transaction
from psycopg import errors as pg_errors
from psycopg import sql

from loans.imports.files import BOM, CHUNK, TapeFile
from loans.imports.specs import ISO_CURRENCIES, TAPE_SPECS, Column, ColumnType, FileSpec
from loans.lineage import ERROR, WARNING, Problem, errors_of
from loans.models import Transaction

logger = logging.getLogger(__name__)

MAX_LISTED = 1000  # problems kept per file for pages and messages; counts stay exact
COPY_DATA_ERRORS = (pg_errors.DataException, pg_errors.BadCopyFileFormat)


@dataclass(frozen=True)
class SourceFormat:
    """How a source writes its files: the Cascade defaults, or a steward's column map."""

    delimiter: str = ","
    decimal_comma: bool = False
    day_first: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # file header (lower case) -> tape column

    @property
    def native(self) -> bool:
        """PostgreSQL's own input parsing reads this format (ISO dates, dot decimals)."""
        return not (self.decimal_comma or self.day_first)


@dataclass
class FileLoad:
    tape_file: TapeFile
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def unchanged(self) -> int:
        return max(self.rows_read - self.rejected - self.inserted - self.updated, 0)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


# Codes (currencies, transaction types) compare trimmed and upper-cased. Most values are written
# exactly as a code: a plain (hashed) lookup settles those, and only the others are trimmed and
# folded; millions of upper(btrim()) calls cost seconds.
CODES = {"currency": sorted(ISO_CURRENCIES), "transaction_type": list(Transaction.Type.values)}


def _not_in(col: sql.Composable, codes: list[str]) -> sql.Composable:
    """``col``, trimmed and upper-cased, is none of ``codes``."""
    return sql.SQL("({c} <> ALL({codes}) AND upper(btrim({c})) <> ALL({codes}))").format(
        c=col, codes=sql.Literal(codes)
    )


def _code(col: sql.Composable, codes: list[str]) -> sql.Composable:
    """``upper(btrim(col))``, without calling either for a value that is a code already."""
    return sql.SQL("(CASE WHEN {c} = ANY({codes}) THEN {c} ELSE upper(btrim({c})) END)").format(
        c=col, codes=sql.Literal(codes)
    )


# A staged transaction's type as stored (the merge, its numbering and the payments pass).
X_TRANSACTION_TYPE = _code(sql.SQL("x.transaction_type"), CODES["transaction_type"])


def _join(parts: Iterable[sql.Composable], sep: str = ", ") -> sql.Composed:
    return sql.SQL(sep).join(list(parts))


# Every staging table: autovacuum would otherwise VACUUM ANALYZE each freshly loaded one (over
# 20 s for the 5M staged payments), competing for the cores the import is using, and a DROP at
# the end could wait a second (deadlock_timeout) for it to give way. The import ANALYZEs what it
# reads.
NO_AUTOVACUUM = "WITH (autovacuum_enabled = false)"


def _create_as(cursor, table: str, query: sql.Composable) -> None:
    """A staging table of ``query``'s rows, with the statistics the next statements plan by."""
    cursor.execute(
        sql.SQL(f"CREATE UNLOGGED TABLE {{}} {NO_AUTOVACUUM} AS {{}}").format(_ident(table), query)
    )
    cursor.execute(sql.SQL("ANALYZE {}").format(_ident(table)))


TYPED_SQL = {
    ColumnType.TEXT: "text",
    ColumnType.MONEY: "numeric",  # rounded to cents at merge, so float noise can be reported
    ColumnType.DECIMAL: "numeric",
    ColumnType.INTEGER: "numeric",  # "148.0" is a whole number; "148.5" is reported, not truncated
    ColumnType.DATE: "date",
}
NUMERIC_TYPES = (ColumnType.MONEY, ColumnType.DECIMAL, ColumnType.INTEGER)


class FileLoader:
    """Loads one tape file: ``stage``, ``check_values``, ``check_keys``, ``check_across``, then
    ``merge``.

    Every bad row is found in bulk, in the checking steps; bad values land in the file's
    ``rejects`` table (line, column, value, reason). ``stage``, ``check_values`` and
    ``check_keys`` read nothing but the file, and may run on a connection of their own
    (``tape_import`` runs the files side by side); ``check_across`` and ``merge`` run in the
    import's transaction."""

    def __init__(self, tape_file: TapeFile, fmt: SourceFormat, *, tables: str = ""):
        """``tables``: a suffix for this file's staging tables, the same for every file of one
        import, so that they never meet another import's."""
        self.file = tape_file
        self.spec: FileSpec = TAPE_SPECS[tape_file.kind]
        self.fmt = fmt
        self.suffix = tables
        self.stage_table = f"stage_{self.spec.kind}{tables}"
        self.typed_table = self.typed(self.spec.kind)
        self.rejects_table = self.rejects(self.spec.kind)
        self.totals_table = f"totals_{self.spec.kind}{tables}"  # schedules: per loan
        self.firsts_table = self.firsts(self.spec.kind)  # loans: each loan's first row
        self.repeats_table = f"repeats_{self.spec.kind}{tables}"  # transactions: see check_keys
        # Transactions: each loan's payments in this tape (see payments_pass); one per import.
        self.payments_table = f"payments{tables}"
        self.references_clean = False  # see prepare_lookups
        # Text columns with a value that starts or ends with a space; None until staged.
        self.padded: set[str] | None = None
        self.result = FileLoad(tape_file)
        self.columns: list[Column] = []  # spec columns present in the file
        self.file_columns: list[str] = []  # staging column per file column, in file order
        self.text_staged = False

    def typed(self, kind: str) -> str:
        """The typed staging table of this import's file of ``kind``."""
        return f"typed_{kind}{self.suffix}"

    def rejects(self, kind: str) -> str:
        """The rejected values of this import's file of ``kind``."""
        return f"rejects_{kind}{self.suffix}"

    def firsts(self, kind: str) -> str:
        """Each key's first row in this import's file of ``kind`` (loans, see check_keys)."""
        return f"firsts_{kind}{self.suffix}"

    def trimmed(self, alias: str | None, column: str) -> sql.Composable:
        """``alias.column`` as stored: trimmed. ``btrim()`` only when stage found a value
        of the file's column starting or ending with a space: on 5M rows it costs a second a
        pass (a hash join on the trimmed loan id took 1.9-2.5 s, on the column itself 1.1 s)."""
        ref = sql.SQL("{}.{}").format(_ident(alias), _ident(column)) if alias else _ident(column)
        if self.padded is None or column in self.padded:
            return sql.SQL("btrim({})").format(ref)
        return ref

    @property
    def tables(self) -> list[str]:
        """The staging tables this file's ``stage`` and checks may create."""
        return [
            self.stage_table,
            self.typed_table,
            self.rejects_table,
            self.totals_table,
            self.firsts_table,
            self.repeats_table,
            *([self.payments_table] if self.spec.kind == "transactions" else []),
        ]

    # ---------------------------------------------------------------- problems
    def problem(self, row, column, value, reason, severity=ERROR) -> None:
        self.result.problems.append(
            Problem(self.file.name, row, column, str(value or ""), reason, severity)
        )

    @property
    def errors(self) -> list[Problem]:
        return errors_of(self.result.problems)

    # ---------------------------------------------------------------- stage
    def _read_header(self) -> bool:
        if self.file.binary:
            self.problem(None, "", "", "this is a binary file, not a CSV text file")
            return False
        header = self.file.header(self.fmt.delimiter)
        if not header or header == [""]:
            self.problem(None, "", "", "the file is empty (no header line)")
            return False
        mapped = [self.fmt.headers.get(name.lower(), name.lower()) for name in header]
        known = {c.name: c for c in self.spec.columns}
        missing = [name for name in self.spec.required if name not in mapped]
        for name in missing:
            self.problem(1, name, "", "required column is missing from the header")
        seen: set[str] = set()
        for position, name in enumerate(mapped):
            if name in known and name not in seen:
                seen.add(name)
                self.columns.append(known[name])
                self.file_columns.append(name)
                continue
            if name in seen:
                self.problem(1, name, "", "column appears twice in the header")
            else:
                self.problem(1, header[position], "", "unknown column, ignored", WARNING)
            self.file_columns.append(f"_ignored_{position}")
        return not self.errors

    def _copy(self, cursor, table: str) -> int:
        """COPY the file into ``table``, which this subtransaction created; the number of rows
        it read.

        FREEZE writes the rows as already visible to everyone: otherwise the first pass over
        them sets each row's commit hint, dirtying and writing every page of the file again."""
        copy_sql = sql.SQL(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true, FREEZE, DELIMITER {}, ENCODING {})"
        ).format(
            _ident(table),
            _join(map(_ident, self.file_columns)),
            sql.Literal(self.fmt.delimiter),
            sql.Literal(self.file.encoding),
        )
        with cursor.copy(copy_sql) as copy, self.file.open() as stream:
            first = True
            while chunk := stream.read(CHUNK):
                if first and chunk.startswith(BOM):
                    chunk = chunk[len(BOM) :]
                first = False
                copy.write(chunk)
        return cursor.rowcount

    def _create(self, cursor, table: str, types: dict[str, str]) -> None:
        cols = _join(
            sql.SQL("{} {}").format(_ident(name), sql.SQL(kind)) for name, kind in types.items()
        )
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(table)))
        # The line numbers come from the table's own sequence, which, read by this COPY alone,
        # hands them out in order; taking them 100,000 at a time saved 1 s per 5M rows.
        cursor.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} (line bigint GENERATED ALWAYS AS IDENTITY (CACHE 100000), {}) "
                + NO_AUTOVACUUM
            ).format(_ident(table), cols)
        )

    def _typed_columns(self) -> dict[str, str]:
        types = {c.name: TYPED_SQL[c.type] for c in self.spec.columns}
        types.update({name: "text" for name in self.file_columns if name.startswith("_ignored_")})
        return types

    def stage(self, cursor) -> bool:
        """Load the file into the typed staging table. False when the file cannot be read at all."""
        if not self._stage(cursor):
            return False
        # Which text columns need trimming (see trimmed): known from here on, so the payments
        # pass, which reads the file before its checks, joins on the loan id as it is.
        texts = [c.name for c in self.columns if c.type == ColumnType.TEXT]
        self.padded = set()
        if texts:
            cursor.execute(
                sql.SQL("SELECT {} FROM {} t").format(
                    _join(
                        sql.SQL(
                            "coalesce(bool_or(t.{c} LIKE ' %' OR t.{c} LIKE '% '), false)"
                        ).format(c=_ident(name))
                        for name in texts
                    ),
                    _ident(self.typed_table),
                )
            )
            flags = cursor.fetchone()
            self.padded = {name for name, flag in zip(texts, flags, strict=True) if flag}
        return True

    def _stage(self, cursor) -> bool:
        if not self._read_header():
            return False
        if self.fmt.native:
            cursor.execute("SAVEPOINT typed_copy")
            self._create(cursor, self.typed_table, self._typed_columns())
            try:
                rows = self._copy(cursor, self.typed_table)
            except psycopg.Error:
                # A value PostgreSQL refuses: go the slow way, which lists every bad value.
                cursor.execute("ROLLBACK TO SAVEPOINT typed_copy")
            else:
                cursor.execute("RELEASE SAVEPOINT typed_copy")
                return self._rows_read(cursor, self.typed_table, rows)
        return self._stage_text(cursor)

    def _stage_text(self, cursor) -> bool:
        self.text_staged = True
        cursor.execute("SAVEPOINT text_copy")
        self._create(cursor, self.stage_table, dict.fromkeys(self.file_columns, "text"))
        try:
            rows = self._copy(cursor, self.stage_table)
        except COPY_DATA_ERRORS as exc:
            # Keep the transaction usable so the other files are still checked and reported.
            cursor.execute("ROLLBACK TO SAVEPOINT text_copy")
            line = re.search(r"line (\d+)", exc.diag.context or "")
            self.problem(
                int(line.group(1)) if line else None,
                "",
                "",
                f"unreadable row: {exc.diag.message_primary}",
            )
            return False
        if not self._rows_read(cursor, self.stage_table, rows):
            return False
        # Parse into the same typed shape the fast path produces; bad values become NULL.
        selects = [
            self._parsed(c) if c.name in self.file_columns else sql.SQL("NULL")
            for c in self.spec.columns
        ]
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(self.typed_table)))
        _create_as(
            cursor,
            self.typed_table,
            sql.SQL("SELECT line, {} FROM {}").format(
                _join(
                    sql.SQL("{}::{} AS {}").format(expr, sql.SQL(TYPED_SQL[c.type]), _ident(c.name))
                    for expr, c in zip(selects, self.spec.columns, strict=True)
                ),
                _ident(self.stage_table),
            ),
        )
        return True

    def _rows_read(self, cursor, table: str, rows: int) -> bool:
        """Record the ``rows`` the COPY read into ``table`` (False when none) and ANALYZE it."""
        # Statistics for the checks' plans: autovacuum never sees a staging table, and without
        # them PostgreSQL guesses a few thousand rows and sorts millions on disk instead of hashing.
        cursor.execute(sql.SQL("ANALYZE {}").format(_ident(table)))
        self.result.rows_read = rows
        if self.result.rows_read == 0:
            self.problem(None, "", "", "the file has a header but no rows")
            return False
        return True

    def _parsed(self, column: Column) -> sql.Composable:
        raw = _ident(column.name)
        if column.type in NUMERIC_TYPES:
            return sql.SQL("abaco_parse_numeric({}, {})").format(
                raw, sql.Literal(self.fmt.decimal_comma)
            )
        if column.type == ColumnType.DATE:
            return sql.SQL("abaco_parse_date({}, {})").format(raw, sql.Literal(self.fmt.day_first))
        return raw

    # ---------------------------------------------------------------- validate
    def _value_checks(self) -> list[tuple[str, sql.Composable, sql.Composable]]:
        """(column, condition on the typed row that makes it bad, reason) for every present column."""
        checks = []
        for column in self.columns:
            col = sql.SQL("t.{}").format(_ident(column.name))
            if column.required:
                # On the text path a value that did not parse is NULL in t: ask the raw text, so
                # a bad date is reported once, as a bad date.
                raw = sql.SQL("s.{}").format(_ident(column.name)) if self.text_staged else col
                if column.type == ColumnType.TEXT or self.text_staged:
                    # Blank: NULL, empty or spaces only. Only a value that starts with a space
                    # is trimmed to find out: millions of btrim() calls cost seconds.
                    empty = sql.SQL(
                        "({v} IS NULL OR {v} = '' OR ({v} LIKE ' %' AND btrim({v}) = ''))"
                    ).format(v=sql.SQL("{}::text").format(raw))
                else:
                    empty = sql.SQL("{} IS NULL").format(col)
                checks.append((column.name, empty, sql.Literal("required value is missing")))
            if column.type == ColumnType.TEXT:
                checks.append(
                    (
                        column.name,
                        # Bytes first: no longer in bytes, no longer in characters.
                        sql.SQL("(octet_length({c}) > {n} AND length(btrim({c})) > {n})").format(
                            c=col, n=sql.Literal(column.max_length)
                        ),
                        sql.Literal(f"longer than {column.max_length} characters"),
                    )
                )
            if column.type == ColumnType.INTEGER:
                checks.append(
                    (
                        column.name,
                        sql.SQL("{} <> trunc({})").format(col, col),
                        sql.Literal("not a whole number"),
                    )
                )
            if column.non_negative:
                checks.append(
                    (
                        column.name,
                        sql.SQL("{} < 0").format(col),
                        sql.Literal("must not be negative"),
                    )
                )
            if column.name == "currency":
                checks.append(
                    (
                        column.name,
                        _not_in(col, CODES["currency"]),
                        sql.Literal("unknown currency (not an ISO 4217 code)"),
                    )
                )
            if column.name == "transaction_type":
                checks.append(
                    (
                        column.name,
                        _not_in(col, CODES["transaction_type"]),
                        sql.Literal(
                            "unknown transaction type (expected one of "
                            + ", ".join(Transaction.Type.values)
                            + ")"
                        ),
                    )
                )
        return checks

    def _parse_checks(self) -> list[tuple[str, sql.Composable, sql.Composable]]:
        """Text path only: a non-empty raw value that did not parse."""
        checks = []
        for column in self.columns:
            reason = {
                ColumnType.MONEY: "not a number",
                ColumnType.DECIMAL: "not a number",
                ColumnType.INTEGER: "not a whole number",
                ColumnType.DATE: "not a date (expected DD/MM/YYYY)"
                if self.fmt.day_first
                else "not a date (expected YYYY-MM-DD)",
            }.get(column.type)
            if reason:
                cond = sql.SQL("NULLIF(btrim(s.{}), '') IS NOT NULL AND t.{} IS NULL").format(
                    _ident(column.name), _ident(column.name)
                )
                checks.append((column.name, cond, sql.Literal(reason)))
        return checks

    def check_values(self, cursor) -> None:
        """The checks of this file's values, row by row, and its warnings, in one pass."""
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(self.rejects_table)))
        cursor.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} (line bigint, col text, value text, reason text) "
                + NO_AUTOVACUUM
            ).format(_ident(self.rejects_table))
        )
        checks = self._value_checks()
        source = sql.SQL("{} t").format(_ident(self.typed_table))
        if self.text_staged:
            checks = self._parse_checks() + checks
            source = sql.SQL("{} t JOIN {} s USING (line)").format(
                _ident(self.typed_table), _ident(self.stage_table)
            )
        raw_of = (
            (lambda name: sql.SQL("s.{}::text").format(_ident(name)))
            if self.text_staged
            else (lambda name: sql.SQL("t.{}::text").format(_ident(name)))
        )
        # One pass over the file asks whether any value is wrong and gathers the warnings; only
        # when something is wrong does a second pass list every bad value.
        warning_aggregates, warnings_report = self._warnings()
        any_bad = (
            sql.SQL("coalesce(bool_or({}), false)").format(
                _join((sql.SQL("({})").format(c) for _, c, _ in checks), " OR ")
            )
            if checks
            else sql.SQL("false")
        )
        cursor.execute(
            sql.SQL("SELECT {} FROM {}").format(_join([any_bad, *warning_aggregates]), source)
        )
        row = cursor.fetchone()
        warnings_report(row[1:])
        if row[0]:
            values = _join(
                sql.SQL("({}, {}, CASE WHEN {} THEN {} END)").format(
                    sql.Literal(name), raw_of(name), cond, reason
                )
                for name, cond, reason in checks
            )
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT t.line, v.col, v.value, v.reason FROM {} "
                    "CROSS JOIN LATERAL (VALUES {}) AS v(col, value, reason) WHERE v.reason IS NOT NULL"
                ).format(_ident(self.rejects_table), source, values)
            )

    def check_keys(self, cursor) -> None:
        """After ``check_values``: duplicate keys in this file, each loan's first row (loans),
        the numbering of repeated transactions and each loan's schedule totals."""
        self._check_duplicate_keys(cursor)
        if self.spec.kind == "loans":
            # The loan a loan id names, for the checks and the payments pass: its first row.
            # "C": the loan ids are only told apart here, and byte order sorts faster.
            lid = self.trimmed("t", "loan_id")
            _create_as(
                cursor,
                self.firsts_table,
                sql.SQL(
                    'SELECT DISTINCT ON ({lid} COLLATE "C") {lid} AS loan_id, t.line, t.disburse_date, '
                    "t.disburse_principal FROM {typed} t WHERE NULLIF({lid}, '') IS NOT NULL "
                    'ORDER BY {lid} COLLATE "C", t.line'
                ).format(lid=lid, typed=_ident(self.typed_table)),
            )
        if self.spec.kind == "transactions":
            self._number_repeats(cursor)
        if self.spec.kind == "schedules":
            # Each loan's schedule at once: its principal (for the totals check), its first row
            # and its first due date (see prepare_lookups).
            _create_as(
                cursor,
                self.totals_table,
                sql.SQL(
                    "SELECT {} AS loan_id, sum(principal) AS total, min(line) AS first_line, "
                    "min(date_due) AS first_due FROM {} x GROUP BY 1"
                ).format(self.trimmed("x", "loan_id"), _ident(self.typed_table)),
            )

    def check_across(
        self, cursor, loaded_kinds: Iterable[str], *, quarantine: bool = False
    ) -> None:
        """The checks against the other files of the tape and the book (after ``check_keys``)."""
        self.prepare_lookups(cursor, set(loaded_kinds))
        for check in self._set_checks(set(loaded_kinds), quarantine):
            cursor.execute(
                sql.SQL("INSERT INTO {} (line, col, value, reason) {}").format(
                    _ident(self.rejects_table), check
                )
            )
        self._collect_rejects(cursor)

    def _number_repeats(self, cursor) -> None:
        """Transactions: each row's place among the rows of its (loan, date, type), in file
        order, for the rows that are the n-th (n >= 1): most rows are the only one of theirs
        (sequence 0). A narrow pass here instead of sorting every row with all its values in
        the merge (4 s for 5M), which joins this small table by line. By the trimmed loan id,
        so "L1" and "L1 " count as one loan; text sorts in byte order.

        Not an UPDATE of the staged rows: it rewrote 68,000 rows scattered over nearly every
        page of 5M, and each later pass over the table dirtied those pages again to set the
        commit hints of their old and new versions."""
        _create_as(
            cursor,
            self.repeats_table,
            sql.SQL(
                "SELECT line, sequence FROM ("
                ' SELECT x.line, row_number() OVER (PARTITION BY {} COLLATE "C", x.date_paid,'
                ' {} COLLATE "C" ORDER BY x.line) - 1 AS sequence FROM {} x) n WHERE sequence > 0'
            ).format(
                self.trimmed("x", "loan_id"),
                X_TRANSACTION_TYPE,
                _ident(self.typed_table),
            ),
        )

    def _check_duplicate_keys(self, cursor) -> None:
        """Rows whose key an earlier row of the file has (keys compare as stored: text trimmed,
        so "L1" and "L1 " are the same loan).

        A unique index over the staged keys settles the usual case, no duplicate, in one
        parallel sort (about 2 s for 5M schedule lines, against 4.3 s for grouping them); only
        when it cannot be built does the query that lists every repeated row run. NULLs count as
        equal, as in the grouping; text compares in byte order, which is equality in any
        deterministic collation, and sorts faster.
        """
        key = [c for c in self.spec.key if c != "sequence"]
        if self.spec.kind == "transactions":  # rows of one key are numbered, not duplicates
            return
        t = _ident(self.typed_table)

        def key_exprs(alias: str | None, collate: str = "") -> list[sql.Composable]:
            return [
                sql.SQL("{}{}").format(self.trimmed(alias, k), sql.SQL(collate))
                if self.spec.column(k).type == ColumnType.TEXT
                else sql.SQL("{}.{}").format(_ident(alias), _ident(k))
                if alias
                else _ident(k)
                for k in key
            ]

        cursor.execute("SAVEPOINT unique_keys")
        try:
            cursor.execute(
                sql.SQL("CREATE UNIQUE INDEX ON {} ({}) NULLS NOT DISTINCT").format(
                    t,
                    _join(sql.SQL("({})").format(e) for e in key_exprs(None, ' COLLATE "C"')),
                )
            )
        except pg_errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT unique_keys")
        else:
            cursor.execute("RELEASE SAVEPOINT unique_keys")
            return
        names = [_ident(f"k{i}") for i in range(len(key))]
        cursor.execute(
            sql.SQL(
                "INSERT INTO {rejects} (line, col, value, reason) "
                "SELECT x.line, {col}, concat_ws(' / ', {dnames}), 'duplicate key: first seen on row ' || (d.first_line + 1) "
                "FROM (SELECT {exprs}, min(g.line) AS first_line FROM {t} g GROUP BY {names} HAVING count(*) > 1) d "
                "JOIN {t} x ON ({xexprs}) = ({dnames}) WHERE x.line <> d.first_line"
            ).format(
                rejects=_ident(self.rejects_table),
                exprs=_join(
                    sql.SQL("{} AS {}").format(e, n)
                    for e, n in zip(key_exprs("g"), names, strict=True)
                ),
                xexprs=_join(key_exprs("x")),
                t=t,
                col=sql.Literal(key[0]),
                dnames=_join(sql.SQL("d.{}").format(n) for n in names),
                names=_join(names),
            )
        )

    def _set_checks(self, loaded_kinds: set[str], quarantine: bool = False) -> list[sql.Composable]:
        """Checks across rows and tables: references, date order, totals."""
        t = _ident(self.typed_table)
        kind = self.spec.kind
        checks: list[sql.Composable] = []
        if kind == "loans":
            in_file = (
                sql.SQL(
                    "AND NOT EXISTS (SELECT 1 FROM {} c WHERE btrim(c.customer_id) = {})"
                ).format(_ident(self.typed("customers")), self.trimmed("l", "customer_id"))
                if "customers" in loaded_kinds
                else sql.SQL("")
            )
            checks.append(
                sql.SQL(
                    "SELECT l.line, 'customer_id', l.customer_id, 'customer is neither in this tape nor in the database' FROM {t} l "
                    "WHERE NULLIF({cid}, '') IS NOT NULL "
                    "AND NOT EXISTS (SELECT 1 FROM loans_customer c WHERE c.customer_id = {cid}) {in_file}"
                ).format(t=t, in_file=in_file, cid=self.trimmed("l", "customer_id"))
            )
            checks.append(
                sql.SQL(
                    "SELECT line, 'maturity_date', maturity_date::text, 'maturity date is before the disbursement date' FROM {t} WHERE maturity_date < disburse_date"
                ).format(t=t)
            )
            checks.append(
                sql.SQL(
                    "SELECT line, 'application_date', application_date::text, 'application date is after the disbursement date' FROM {t} WHERE application_date > disburse_date"
                ).format(t=t)
            )
        if kind in ("schedules", "transactions") and not self.references_clean:
            date_col = "date_due" if kind == "schedules" else "date_paid"
            what = "due date" if kind == "schedules" else "payment date"
            # One join answers both: is the loan known, and is the date on or after its disbursement.
            checks.append(
                sql.SQL(
                    "SELECT x.line, CASE WHEN l.loan_id IS NULL THEN 'loan_id' ELSE {col} END, "
                    "CASE WHEN l.loan_id IS NULL THEN x.loan_id ELSE x.{d}::text END, "
                    "CASE WHEN l.loan_id IS NULL THEN 'loan is neither in this tape nor in the database' ELSE {reason} END "
                    "FROM {t} x LEFT JOIN tape_loans l ON l.loan_id = {lid} "
                    "WHERE NULLIF({lid}, '') IS NOT NULL AND (l.loan_id IS NULL OR x.{d} < l.disburse_date)"
                ).format(
                    lid=self.trimmed("x", "loan_id"),
                    col=sql.Literal(date_col),
                    d=_ident(date_col),
                    t=t,
                    reason=sql.Literal(f"{what} is before the loan's disbursement date"),
                )
            )
        if kind in ("schedules", "transactions") and "loans" in loaded_kinds:
            checks.append(self._reconcile_check())
        if quarantine:
            checks += self._held_back_checks(loaded_kinds)
        return checks

    def _reconcile_check(self) -> sql.Composable:
        """Totals against the loans of the same tape: a loan's schedule principal must add up to
        its disbursed principal, and its payments' principal must not exceed it (to the cent).
        The problem is reported on the loan's first row of this file."""
        if self.spec.kind == "schedules":
            totals = _ident(self.totals_table)
            reason = "schedule principal {} does not add up to the loan's disbursed principal {}"
            compare = sql.SQL("abs(round(s.total, 2) - round(l.disburse_principal, 2)) > 0.01")
        else:
            totals = _ident(self.payments_table)
            reason = "payments' principal {} exceeds the loan's disbursed principal {}"
            compare = sql.SQL("round(s.total, 2) > round(l.disburse_principal, 2) + 0.01")
        before, after = reason.split("{}", 1)[0], reason.split("{}")[1]
        return sql.SQL(
            "SELECT s.first_line, 'principal', s.loan_id, {before} || round(s.total, 2) || {after} || round(l.disburse_principal, 2) "
            "FROM {totals} s JOIN tape_loans l ON l.loan_id = s.loan_id AND l.in_tape AND NOT l.rejected "
            "WHERE {compare} "
            # A loan with a rejected row here already has its problem; its total is incomplete.
            "AND s.loan_id NOT IN (SELECT btrim(x.loan_id) FROM {t} x JOIN {rejects} r ON r.line = x.line)"
        ).format(
            before=sql.Literal(before),
            after=sql.Literal(after),
            totals=totals,
            compare=compare,
            t=_ident(self.typed_table),
            rejects=_ident(self.rejects_table),
        )

    def prepare_lookups(self, cursor, loaded_kinds: set[str]) -> None:
        """The per-import lookup the checks of schedules and transactions share, built once:
        ``tape_loans`` (every loan this tape or the book knows, with its disbursement facts);
        and the payments table when the file's staging did not make it (``payments_pass``)."""
        if self.spec.kind not in ("schedules", "transactions"):
            return
        self.lookup_loans(cursor, loaded_kinds)
        if self.spec.kind == "transactions" and not _staged(cursor, self.payments_table):
            # No loans file: the pass was not run while the file was staged.
            self.payments_pass(cursor, "tape_loans")
        # When every loan is known and no loan's first date in this file (the schedule's totals,
        # the payments table) comes before its disbursement, no row can fail the row-by-row
        # check of both, which is skipped: a join of a million loans instead of five million
        # rows.
        per_loan, first = (
            (self.totals_table, "first_due")
            if self.spec.kind == "schedules"
            else (self.payments_table, "first_date")
        )
        cursor.execute(
            sql.SQL(
                "SELECT NOT EXISTS (SELECT 1 FROM {} s LEFT JOIN tape_loans l ON l.loan_id = s.loan_id "
                "WHERE NULLIF(s.loan_id, '') IS NOT NULL AND (l.loan_id IS NULL OR s.{} < l.disburse_date))"
            ).format(_ident(per_loan), _ident(first))
        )
        self.references_clean = cursor.fetchone()[0]

    def lookup_loans(self, cursor, loaded_kinds: set[str]) -> None:
        """``tape_loans``, once per import: after the loans file's checks (its rejected rows
        are marked), before the first check of schedules or transactions."""
        if not _staged(cursor, "tape_loans"):
            if "loans" in loaded_kinds:
                cursor.execute(
                    sql.SQL(
                        f"CREATE UNLOGGED TABLE tape_loans {NO_AUTOVACUUM} AS "
                        "SELECT f.loan_id, f.disburse_date, f.disburse_principal, true AS in_tape, "
                        "EXISTS (SELECT 1 FROM {} r WHERE r.line = f.line) AS rejected FROM {} f"
                    ).format(_ident(self.rejects("loans")), _ident(self.firsts("loans")))
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

    def payments_pass(self, cursor, loans: str) -> None:
        """The payments table (``payments_table``), in one pass over the file in date order per
        loan: each loan's first date in the file (for the reference check, see
        ``prepare_lookups``), its paid principal in this tape (for totals and balances) and, as
        ``repaid_on``, the day its payments first covered the principal ``loans`` gives it
        (Loan.repaid_on; never earlier than the truth, so the KPI engine may skip the loan after
        it); NULL when they never did.

        With the loans file in the tape, ``loans`` is its first rows (``firsts_table``): the
        pass reads nothing but the tape, so it runs on the payments' staging connection as soon
        as they are staged, before their own checks, and the loans' merge waits for it. Only the
        tape's loans need it then: the merge sets their repaid dates, and the totals and
        balances are checked for them alone. Without the loans file it runs in the import's
        transaction (``prepare_lookups``) on ``tape_loans``, the book's loans, whose repaid
        dates it then updates."""
        lid = self.trimmed("x", "loan_id")
        # The loan is joined before the running sum, so one sort serves both the window and
        # the grouping (joined after, the payments were sorted twice, on disk). The loan ids
        # sort in byte order ("C"): 1.6 s less than the database's collation for 4.3M rows.
        _create_as(
            cursor,
            self.payments_table,
            sql.SQL(
                'SELECT r.loan_id COLLATE "default" AS loan_id, min(r.date_paid) AS first_date, '
                "sum(r.principal) FILTER (WHERE r.payment) AS total, "
                "min(r.line) FILTER (WHERE r.payment) AS first_line, "
                "min(r.date_paid) FILTER (WHERE r.payment AND r.paid >= r.disburse_principal - 0.005) AS repaid_on "
                "FROM ("
                ' SELECT {lid} COLLATE "C" AS loan_id, x.date_paid, x.line, x.principal, l.disburse_principal,'
                " {type} = 'PAYMENT' AS payment,"
                " sum(x.principal) FILTER (WHERE {type} = 'PAYMENT')"
                ' OVER (PARTITION BY {lid} COLLATE "C" ORDER BY x.date_paid, x.line ROWS UNBOUNDED PRECEDING) AS paid'
                " FROM {typed} x LEFT JOIN {loans} l ON l.loan_id = {lid}) r "
                "GROUP BY r.loan_id"
            ).format(
                loans=_ident(loans),
                type=X_TRANSACTION_TYPE,
                typed=_ident(self.typed_table),
                lid=lid,
            ),
        )

    def balance_warning(self, cursor) -> None:
        """The tape's outstanding balance against disbursed minus paid principal (warning)."""
        cursor.execute(
            sql.SQL(
                "SELECT count(*), min(l.line) FROM {} l LEFT JOIN {} p ON p.loan_id = {}"
                " WHERE l.outstanding_balance IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM {} r WHERE r.line = l.line)"
                " AND abs(round(l.outstanding_balance, 2) - greatest(round(l.disburse_principal, 2) - round(coalesce(p.total, 0), 2), 0)) > 0.01"
            ).format(
                _ident(self.typed_table),
                _ident(self.payments_table),
                self.trimmed("l", "loan_id"),
                _ident(self.rejects_table),
            )
        )
        count, first = cursor.fetchone()
        if count:
            self.problem(
                first + 1,
                "outstanding_balance",
                "",
                f"{count} loan(s) whose outstanding balance differs from disbursed minus paid principal in this tape; loaded as given",
                WARNING,
            )

    def _held_back_checks(self, loaded_kinds: set[str]) -> list[sql.Composable]:
        """Quarantine: rows whose customer or loan is only in this tape, on a row held back."""
        parent = {
            "loans": ("customers", "customer_id", "loans_customer"),
            "schedules": ("loans", "loan_id", "loans_loan"),
            "transactions": ("loans", "loan_id", "loans_loan"),
        }.get(self.spec.kind)
        if parent is None or parent[0] not in loaded_kinds:
            return []
        kind, key, table = parent
        return [
            sql.SQL(
                "SELECT x.line, {key}, x.{k}, {reason} FROM {t} x "
                "WHERE EXISTS (SELECT 1 FROM {typed} p JOIN {rejects} r ON r.line = p.line WHERE btrim(p.{k}) = btrim(x.{k})) "
                "AND NOT EXISTS (SELECT 1 FROM {typed} p WHERE btrim(p.{k}) = btrim(x.{k}) AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.line = p.line)) "
                "AND NOT EXISTS (SELECT 1 FROM {table} b WHERE b.{k} = btrim(x.{k}))"
            ).format(
                key=sql.Literal(key),
                k=_ident(key),
                reason=sql.Literal(f"held back: its row in {kind}.csv was rejected"),
                t=_ident(self.typed_table),
                typed=_ident(self.typed(kind)),
                rejects=_ident(self.rejects(kind)),
                table=_ident(table),
            )
        ]

    def _collect_rejects(self, cursor) -> None:
        rejects = _ident(self.rejects_table)
        cursor.execute(sql.SQL("SELECT count(DISTINCT line) FROM {}").format(rejects))
        self.result.rejected = cursor.fetchone()[0]
        if not self.result.rejected:
            return
        cursor.execute(
            sql.SQL("SELECT line, col, value, reason FROM {} ORDER BY line, col LIMIT {}").format(
                rejects, sql.Literal(MAX_LISTED)
            )
        )
        for line, col, value, reason in cursor.fetchall():
            self.problem(line + 1, col, value, reason)

    def rejected_rows(self, cursor) -> list[Problem]:
        """Every rejected value (for the downloadable CSV), not only the first MAX_LISTED."""
        cursor.execute(
            sql.SQL("SELECT line, col, value, reason FROM {} ORDER BY line, col").format(
                _ident(self.rejects_table)
            )
        )
        return [
            Problem(self.file.name, line + 1, col, value or "", reason)
            for line, col, value, reason in cursor.fetchall()
        ]

    def _warnings(self):
        """Aggregates for what loads but a steward should know (float noise, rebates), and the
        function that turns their values into warnings."""
        money = [c.name for c in self.columns if c.type == ColumnType.MONEY]
        # scale() first: most values carry two decimals at most, and rounding millions of them costs.
        noisy = "scale(t.{c}) > 2 AND t.{c} <> round(t.{c}, 2)"
        aggregates = [
            sql.SQL(f"count(*) FILTER (WHERE {noisy}), min(t.line) FILTER (WHERE {noisy})").format(
                c=_ident(name)
            )
            for name in money
        ]
        rebates = self.spec.kind == "transactions" and "interest" in money
        if rebates:
            aggregates.append(
                sql.SQL(
                    "count(*) FILTER (WHERE t.interest < 0), min(t.line) FILTER (WHERE t.interest < 0)"
                )
            )

        def report(row) -> None:
            for i, name in enumerate(money):
                count, first = row[2 * i], row[2 * i + 1]
                if count:
                    self.problem(
                        first + 1,
                        name,
                        "",
                        f"{count} value(s) carry float noise beyond cents; rounded to 2 decimals",
                        WARNING,
                    )
            if rebates and row[-2]:
                self.problem(
                    row[-1] + 1,
                    "interest",
                    "",
                    f"{row[-2]} row(s) with negative interest (rebates), loaded as given",
                    WARNING,
                )

        return aggregates, report

    # ---------------------------------------------------------------- merge
    def _merge_value(self, column: Column, *, compared: bool) -> sql.Composable:
        """The value to store. ``compared``: it is also compared with the stored one (an upsert),
        so numbers are rounded to the column's scale here; a plain insert leaves that to the
        column's own type, which rounds the same way, once."""
        ref = sql.SQL("x.{}").format(_ident(column.name))
        match column.type:
            case ColumnType.TEXT:
                text = (
                    _code(ref, CODES[column.name])
                    if column.name in CODES
                    else self.trimmed("x", column.name)
                )
                default = "USD" if column.name == "currency" else ""
                return sql.SQL("COALESCE({}, {})").format(text, sql.Literal(default))
            case ColumnType.MONEY:
                rounded = sql.SQL("round({}, 2)").format(ref) if compared else ref
                return (
                    rounded
                    if column.name == "income"
                    else sql.SQL("COALESCE({}, 0)").format(rounded)
                )
            case ColumnType.INTEGER:
                cast = sql.SQL("{}::bigint").format(ref)
                return sql.SQL("COALESCE({}, 0)").format(cast) if column.name == "dpd" else cast
            case ColumnType.DECIMAL:
                rounded = sql.SQL("round({}, 6)").format(ref) if compared else ref
                return (
                    sql.SQL("COALESCE({}, 0)").format(rounded)
                    if column.name == "interest_rate"
                    else rounded
                )
            case _:
                return ref

    def merge(self, cursor, *, batch_id: int, quarantine: bool) -> None:
        """One upsert: new keys are inserted, changed rows updated, identical rows not touched.

        Before it, the rows about to change (and, for loans and transactions, the rows missing
        from this tape) are recorded as ``BatchChange``: the batch's field-level history.
        """
        spec = self.spec
        good = (
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} r WHERE r.line = x.line)").format(
                _ident(self.rejects_table)
            )
            if quarantine and self.result.rejected
            else sql.SQL("TRUE")
        )
        cursor.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_ident(spec.table)))
        book_has_rows = cursor.fetchone()[0]
        targets: list[str] = []
        values: list[sql.Composable] = []
        joins: list[sql.Composable] = []
        for column in spec.columns:
            reference = {
                "loan_id": ("loans_loan", "loans"),
                "customer_id": ("loans_customer", "customers"),
            }.get(column.name)
            if reference and reference[1] != spec.kind:
                table, alias = reference[0], f"ref_{column.name}"
                joins.append(
                    sql.SQL("JOIN {} {} ON {}.{} = {}").format(
                        _ident(table),
                        _ident(alias),
                        _ident(alias),
                        _ident(column.name),
                        self.trimmed("x", column.name),
                    )
                )
                targets.append(column.name)  # the FK's column: loan_id / customer_id
                values.append(sql.SQL("{}.id").format(_ident(alias)))
                continue
            targets.append(column.db_column)
            values.append(self._merge_value(column, compared=book_has_rows))
        if spec.kind == "transactions":
            # n-th row of its (loan, date, type) in file order: 0, unless _number_repeats says.
            targets.append("sequence")
            values.append(sql.SQL("COALESCE(rs.sequence, 0)"))
            joins.append(
                sql.SQL("LEFT JOIN {} rs ON rs.line = x.line").format(_ident(self.repeats_table))
            )
        # Loans, when the tape carries their payments too.
        if spec.kind == "loans" and _staged(cursor, self.payments_table):
            targets.append("repaid_on")
            values.append(sql.SQL("rp.repaid_on"))
            # A join, not a subquery per row: a million loans against a million repaid dates.
            joins.append(
                sql.SQL("LEFT JOIN {} rp ON rp.loan_id = {}").format(
                    _ident(self.payments_table), self.trimmed("x", "loan_id")
                )
            )
        key_text = {
            "customers": self.trimmed("x", "customer_id"),
            "loans": self.trimmed("x", "loan_id"),
            "schedules": sql.SQL("{} || ' due ' || x.date_due").format(
                self.trimmed("x", "loan_id")
            ),
            "transactions": sql.SQL("{} || ' ' || {} || ' ' || x.date_paid").format(
                self.trimmed("x", "loan_id"), X_TRANSACTION_TYPE
            ),
        }[spec.kind]
        conflict = [{"date_due": "due_date", "date_paid": "date"}.get(k, k) for k in spec.key]
        updates = [c for c in targets if c not in conflict]
        incoming = sql.SQL("SELECT {}, {} AS _key, x.line AS _line FROM {} x {} WHERE {}").format(
            _join(
                sql.SQL("{} AS {}").format(v, _ident(c))
                for v, c in zip(values, targets, strict=True)
            ),
            key_text,
            _ident(self.typed_table),
            _join(joins, " "),
            good,
        )
        if book_has_rows:
            # Read twice (changes, then update and insert): materialize once.
            name = f"merge_{spec.kind}"
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(name)))
            _create_as(cursor, name, incoming)
            merge_table = _ident(name)
        else:
            # First load into an empty table: stream straight from staging into the insert.
            merge_table = sql.SQL("({})").format(incoming)
        on = _join((sql.SQL("cur.{c} = m.{c}").format(c=_ident(c)) for c in conflict), " AND ")
        extra = (
            {"name": "", "national_id": "", "email": "", "phone": ""}
            if spec.kind == "customers"
            else {}
        )
        insert_cols = [*targets, "batch_id", *extra]
        insert_vals = [
            *(sql.SQL("m.{}").format(_ident(c)) for c in targets),
            sql.Literal(batch_id),
            *(sql.Literal(v) for v in extra.values()),
        ]
        stamped = spec.kind in ("customers", "loans")
        if stamped:
            insert_cols += ["created_at", "updated_at"]
            insert_vals += [sql.SQL("now()"), sql.SQL("now()")]
        self.result.updated = 0
        if book_has_rows:
            self._record_changes(
                cursor,
                batch_id=batch_id,
                merge_table=merge_table,
                conflict=conflict,
                updates=updates,
            )
            # Changed rows only: an identical row is not rewritten (no new version, no new batch).
            cursor.execute(
                sql.SQL(
                    "UPDATE {table} AS cur SET {sets}{stamp} FROM {m} m WHERE {on} AND ({cur}) IS DISTINCT FROM ({new})"
                ).format(
                    table=_ident(spec.table),
                    sets=_join(
                        [
                            *(sql.SQL("{c} = m.{c}").format(c=_ident(c)) for c in updates),
                            sql.SQL("batch_id = {}").format(sql.Literal(batch_id)),
                        ]
                    ),
                    stamp=sql.SQL(", updated_at = now()") if stamped else sql.SQL(""),
                    m=merge_table,
                    on=on,
                    cur=_join(sql.SQL("cur.{}").format(_ident(c)) for c in updates),
                    new=_join(sql.SQL("m.{}").format(_ident(c)) for c in updates),
                )
            )
            self.result.updated = cursor.rowcount
        # New keys: a plain INSERT (no per-row conflict handling) is what makes the bulk path fast;
        # the advisory lock in tape_import keeps two imports from inserting the same key at once.
        new_only = (
            sql.SQL(" WHERE NOT EXISTS (SELECT 1 FROM {table} cur WHERE {on})").format(
                table=_ident(spec.table), on=on
            )
            if book_has_rows
            else sql.SQL("")
        )

        def insert(cols: list[str], vals: list[sql.Composable]) -> None:
            cursor.execute(
                sql.SQL("INSERT INTO {table} ({cols}) SELECT {vals} FROM {m} m{new_only}").format(
                    table=_ident(spec.table),
                    cols=_join(map(_ident, cols)),
                    vals=_join(vals),
                    m=merge_table,
                    new_only=new_only,
                )
            )
            self.result.inserted = cursor.rowcount

        if book_has_rows:
            insert(insert_cols, insert_vals)
            return
        with _indexes_built_after(cursor, spec.table):
            # The table is locked until the import commits, so nobody else takes ids from its
            # sequence: the rows take theirs from their line numbers, past the sequence, which
            # then moves past them. A nextval() per row cost 0.7 s per 5M rows.
            cursor.execute(
                sql.SQL("SELECT pg_get_serial_sequence(%s, 'id'), max(line) FROM {}").format(
                    _ident(self.typed_table)
                ),
                [spec.table],
            )
            sequence, last_line = cursor.fetchone()
            cursor.execute("SELECT nextval(%s) - 1", [sequence])
            base = cursor.fetchone()[0]
            cursor.execute("SELECT setval(%s, %s)", [sequence, base + last_line])
            insert(["id", *insert_cols], [sql.SQL("{} + m._line").format(base), *insert_vals])

    def _record_changes(
        self, cursor, *, batch_id: int, merge_table, conflict: list[str], updates: list[str]
    ) -> None:
        spec = self.spec
        on = _join((sql.SQL("cur.{c} = m.{c}").format(c=_ident(c)) for c in conflict), " AND ")
        diff = _join(
            sql.SQL(
                "{name}, CASE WHEN cur.{c} IS DISTINCT FROM m.{c} THEN jsonb_build_array(cur.{c}::text, m.{c}::text) END"
            ).format(name=sql.Literal(c), c=_ident(c))
            for c in updates
        )
        historical = [c for c in HISTORICAL_FIELDS.get(spec.kind, ()) if c in updates]
        flagged = (
            _join(
                (sql.SQL("cur.{c} IS DISTINCT FROM m.{c}").format(c=_ident(c)) for c in historical),
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
                table=_ident(spec.table),
                on=on,
                cur=_join(sql.SQL("cur.{}").format(_ident(c)) for c in updates),
                new=_join(sql.SQL("m.{}").format(_ident(c)) for c in updates),
            )
        )
        if spec.kind == "loans":
            # A loan the platform no longer reports: new tapes are full exports of the book.
            cursor.execute(
                sql.SQL(
                    "INSERT INTO loans_batchchange (batch_id, kind, key, change, fields, review, review_reason) "
                    "SELECT {batch}, 'loans', cur.loan_id, 'vanished', '{{}}'::jsonb, 'pending', '' FROM loans_loan cur "
                    "WHERE NOT EXISTS (SELECT 1 FROM {m} m WHERE m.loan_id = cur.loan_id)"
                ).format(batch=sql.Literal(batch_id), m=merge_table)
            )
        if spec.kind == "transactions":
            # Past cash flows of the loans in this file that the file no longer carries.
            cursor.execute(
                sql.SQL(
                    "INSERT INTO loans_batchchange (batch_id, kind, key, change, fields, review, review_reason) "
                    "SELECT {batch}, 'transactions', l.loan_id || ' ' || cur.transaction_type || ' ' || cur.date, 'vanished', "
                    "jsonb_build_object('principal', jsonb_build_array(cur.principal::text, NULL)), 'pending', '' "
                    "FROM loans_transaction cur JOIN loans_loan l ON l.id = cur.loan_id "
                    "WHERE cur.loan_id IN (SELECT DISTINCT loan_id FROM {m}) "
                    "AND NOT EXISTS (SELECT 1 FROM {m} m WHERE {on})"
                ).format(batch=sql.Literal(batch_id), m=merge_table, on=on)
            )


STAGING_SCHEMA = "import_staging"  # created by migration loans/0011


@contextmanager
def staging(cursor) -> Iterator[None]:
    """The import's staging tables, for the length of the ``with`` block.

    They are UNLOGGED tables in ``import_staging``, found first on the search path, rather than
    temporary tables: PostgreSQL never reads a temporary table with parallel workers, and the
    checks and lookups that scan millions of rows take about half the time on two cores. The
    import's own (lookups, merges) are created in its transaction, so a rollback (an error, a
    dry run) removes them; the files' tables, which other connections stage and commit, carry
    the import's token in their names (``FileLoader``). On the way out all are dropped; when the
    import does not commit, ``staging_drop`` drops the files' tables after it.
    """
    cursor.execute("SELECT current_setting('search_path')")
    search_path = cursor.fetchone()[0]
    # Tables an import left behind when its process died; the import's lock says none is running.
    _drop_staging_tables(cursor)
    use_staging(cursor)
    yield
    _drop_staging_tables(cursor)
    cursor.execute("SELECT set_config('search_path', %s, true)", [search_path])


def _staged(cursor, table: str) -> bool:
    """Whether this import has made the staging table ``table`` (or a connection committed it)."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{STAGING_SCHEMA}.{table}"])
    return cursor.fetchone()[0]


def use_staging(cursor) -> None:
    """Unqualified names find (and create) staging tables first, until the transaction ends."""
    cursor.execute(
        "SELECT set_config('search_path', %s || ', ' || current_setting('search_path'), true)",
        [STAGING_SCHEMA],
    )


def staging_drop(tables: list[str]) -> None:
    """Drop these staging tables if they are still there, in a transaction of their own.

    For tables other connections committed (``tape_import`` stages files side by side) when the
    import did not commit. Best effort: the next import drops what is left.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            cursor.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(
                    _join(sql.Identifier(STAGING_SCHEMA, table) for table in tables)
                )
            )
    except DatabaseError:
        logger.warning("staging tables left for the next import to drop", exc_info=True)


def _drop_staging_tables(cursor) -> None:
    cursor.execute(
        "SELECT string_agg(format('%%I.%%I', schemaname, tablename), ', ') FROM pg_tables WHERE schemaname = %s",
        [STAGING_SCHEMA],
    )
    tables = cursor.fetchone()[0]
    if tables:
        cursor.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(tables)))


@contextmanager
def _indexes_built_after(cursor, table: str) -> Iterator[None]:
    """Load an empty table the way PostgreSQL loads fastest: without its indexes, then build
    each in one sort.

    Same end state and the same guarantees (a duplicate key still fails the transaction), several
    times faster than maintaining the indexes row by row. The primary key goes too (its upkeep
    cost 2.4 s of a 5M-row insert, its build 1.3 s), unless a foreign key refers to it. The
    table is locked until the import commits, which only matters for an empty table nobody
    reads yet.
    """
    cursor.execute(
        "SELECT c.conname, pg_get_constraintdef(c.oid), i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
        "WHERE i.indrelid = %s::regclass AND (NOT i.indisprimary OR NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = i.indrelid)) "
        "ORDER BY i.indisprimary DESC",  # the primary key back first
        [table],
    )
    indexes = cursor.fetchall()
    # ALTER TABLE refuses a table with reference checks queued: run this transaction's now.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for constraint, _, index, _ in indexes:
        if constraint:
            cursor.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    _ident(table), _ident(constraint)
                )
            )
        else:
            cursor.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
    yield
    for constraint, definition, _, index_definition in indexes:
        if constraint:
            cursor.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    _ident(table), _ident(constraint), sql.SQL(definition)
                )
            )
        else:
            cursor.execute(sql.SQL(index_definition))
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


# Fields that describe the past: a newer tape changing them needs a steward's review.
HISTORICAL_FIELDS: dict[str, tuple[str, ...]] = {
    "loans": ("disburse_date", "disburse_principal", "customer_id"),
    "transactions": ("principal", "interest", "fees", "other", "to_tax"),
}
