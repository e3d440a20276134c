"""The bulk path: COPY each file into a staging table, validate it with set-based SQL, and merge
it into the normalized tables with one upsert per file that leaves unchanged rows untouched.

Everything runs inside the caller's transaction: a file with any error raises ``TapeRejected``
and the database is exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from psycopg import errors as pg_errors
from psycopg import sql

from loans.imports.files import BOM, CHUNK, TapeFile
from loans.imports.specs import ISO_CURRENCIES, TAPE_SPECS, Column, ColumnType, FileSpec
from loans.models import Transaction

ERROR, WARNING = "error", "warning"
MAX_LISTED = 1000  # problems kept per file for pages and messages; counts stay exact


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None  # 1 is the header line; data starts at row 2
    column: str
    value: str
    reason: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = f"{self.file}, row {self.row}" if self.row else self.file
        col = f", column {self.column}" if self.column else ""
        value = f" (value {self.value!r})" if self.value not in ("", None) else ""
        return f"{where}{col}: {self.reason}{value}"


class TapeRejected(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == ERROR]
        lines = "\n".join(str(p) for p in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} error(s):\n{lines}{more}")


@dataclass(frozen=True)
class SourceFormat:
    """How a source writes its files; the Cascade defaults, or a steward's column map."""

    delimiter: str = ","
    decimal_comma: bool = False
    day_first: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # file header (lower case) -> tape column


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
        return self.rows_read - self.rejected - self.inserted - self.updated


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


class FileLoader:
    """Loads one tape file; ``stage`` then ``validate`` then ``merge``."""

    def __init__(self, tape_file: TapeFile, fmt: SourceFormat):
        self.file = tape_file
        self.spec: FileSpec = TAPE_SPECS[tape_file.kind]
        self.fmt = fmt
        self.stage_table = f"stage_{self.spec.kind}"
        self.typed_table = f"typed_{self.spec.kind}"
        self.result = FileLoad(tape_file)
        self.columns: list[Column] = []

    # ---------------------------------------------------------------- problems
    def problem(self, row, column, value, reason, severity=ERROR) -> None:
        self.result.problems.append(
            Problem(self.file.name, row, column, str(value or ""), reason, severity)
        )

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.result.problems if p.severity == ERROR]

    # ---------------------------------------------------------------- stage
    def stage(self, cursor) -> bool:
        """COPY the file into an all-text staging table. False when the file cannot be read at all."""
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
        stage_cols = []
        for position, name in enumerate(mapped):
            if name in known and name not in seen:
                seen.add(name)
                self.columns.append(known[name])
                stage_cols.append(name)
            else:
                if name in seen:
                    self.problem(1, name, "", "column appears twice in the header")
                else:
                    self.problem(1, header[position], "", "unknown column, ignored", WARNING)
                stage_cols.append(f"_ignored_{position}")
        if missing or self.errors:
            return False

        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (line bigint GENERATED ALWAYS AS IDENTITY, {}) ON COMMIT DROP"
            ).format(
                _ident(self.stage_table),
                sql.SQL(", ").join(sql.SQL("{} text").format(_ident(c)) for c in stage_cols),
            )
        )
        copy_sql = sql.SQL(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER {}, ENCODING {})"
        ).format(
            _ident(self.stage_table),
            sql.SQL(", ").join(map(_ident, stage_cols)),
            sql.Literal(self.fmt.delimiter),
            sql.Literal(self.file.encoding),
        )
        try:
            with cursor.copy(copy_sql) as copy, self.file.open() as stream:
                first = True
                while chunk := stream.read(CHUNK):
                    if first and chunk.startswith(BOM):
                        chunk = chunk[len(BOM) :]
                    first = False
                    copy.write(chunk)
        except (
            pg_errors.BadCopyFileFormat,
            pg_errors.CharacterNotInRepertoire,
            pg_errors.UntranslatableCharacter,
        ) as exc:
            line = re.search(r"line (\d+)", exc.diag.context or "")
            self.problem(
                int(line.group(1)) if line else None,
                "",
                "",
                f"unreadable row: {exc.diag.message_primary}",
            )
            return False
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(self.stage_table)))
        self.result.rows_read = cursor.fetchone()[0]
        if self.result.rows_read == 0:
            self.problem(None, "", "", "the file has a header but no rows")
            return False
        return True

    # ---------------------------------------------------------------- parse
    def _parsed(self, column: Column, source: sql.Composable | None = None) -> sql.Composable:
        raw = source or _ident(column.name)
        trimmed = sql.SQL("NULLIF(btrim({}), '')").format(raw)
        match column.type:
            case ColumnType.MONEY:
                return sql.SQL("round(abaco_parse_numeric({}, {}), 2)").format(
                    raw, sql.Literal(self.fmt.decimal_comma)
                )
            case ColumnType.DECIMAL:
                return sql.SQL("abaco_parse_numeric({}, {})").format(
                    raw, sql.Literal(self.fmt.decimal_comma)
                )
            case ColumnType.INTEGER:
                return sql.SQL("trunc(abaco_parse_numeric({}, {}))::bigint").format(
                    raw, sql.Literal(self.fmt.decimal_comma)
                )
            case ColumnType.DATE:
                return sql.SQL("abaco_parse_date({}, {})").format(
                    raw, sql.Literal(self.fmt.day_first)
                )
            case _:
                if column.name in ("currency", "transaction_type"):
                    return sql.SQL("upper({})").format(trimmed)
                return trimmed

    def _row_checks(self) -> list[tuple[str, sql.Composable]]:
        """(column, SQL giving the reason a raw value is bad, or NULL) for every staged column."""
        checks = []
        for column in self.columns:
            raw = _ident(column.name)
            parsed = self._parsed(column)
            reasons = []
            if column.required:
                reasons.append(
                    sql.SQL(
                        "WHEN NULLIF(btrim({}), '') IS NULL THEN 'required value is missing'"
                    ).format(raw)
                )
            type_reason = {
                ColumnType.MONEY: "not a number",
                ColumnType.DECIMAL: "not a number",
                ColumnType.INTEGER: "not a whole number",
                ColumnType.DATE: "not a date (expected DD/MM/YYYY)"
                if self.fmt.day_first
                else "not a date (expected YYYY-MM-DD)",
            }.get(column.type)
            if type_reason:
                reasons.append(
                    sql.SQL("WHEN NULLIF(btrim({}), '') IS NOT NULL AND {} IS NULL THEN {}").format(
                        raw, parsed, sql.Literal(type_reason)
                    )
                )
                if column.type == ColumnType.INTEGER:
                    reasons.append(
                        sql.SQL("WHEN {} <> trunc({}) THEN 'not a whole number'").format(
                            sql.SQL("abaco_parse_numeric({}, {})").format(
                                raw, sql.Literal(self.fmt.decimal_comma)
                            ),
                            sql.SQL("abaco_parse_numeric({}, {})").format(
                                raw, sql.Literal(self.fmt.decimal_comma)
                            ),
                        )
                    )
                if column.non_negative:
                    reasons.append(
                        sql.SQL("WHEN {} < 0 THEN 'must not be negative'").format(parsed)
                    )
            else:
                reasons.append(
                    sql.SQL("WHEN length(btrim({})) > {} THEN {}").format(
                        raw,
                        sql.Literal(column.max_length),
                        sql.Literal(f"longer than {column.max_length} characters"),
                    )
                )
            if column.name == "currency":
                reasons.append(
                    sql.SQL(
                        "WHEN NULLIF(btrim({}), '') IS NOT NULL AND upper(btrim({})) <> ALL({}) THEN 'unknown currency (not an ISO 4217 code)'"
                    ).format(raw, raw, sql.Literal(sorted(ISO_CURRENCIES)))
                )
            if column.name == "transaction_type":
                reasons.append(
                    sql.SQL("WHEN upper(btrim({})) <> ALL({}) THEN {}").format(
                        raw,
                        sql.Literal(list(Transaction.Type.values)),
                        sql.Literal(
                            "unknown transaction type (expected one of "
                            + ", ".join(Transaction.Type.values)
                            + ")"
                        ),
                    )
                )
            checks.append((column.name, sql.SQL("CASE {} END").format(sql.SQL(" ").join(reasons))))
        return checks

    # ---------------------------------------------------------------- validate
    def validate(self, cursor, loaded_kinds: Iterable[str]) -> None:
        """Find every bad row in bulk; they land in ``rejects`` (line, column, value, reason)."""
        checks = self._row_checks()
        values = sql.SQL(", ").join(
            sql.SQL("({}, {}::text, {})").format(sql.Literal(name), _ident(name), reason)
            for name, reason in checks
        )
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE {rejects} ON COMMIT DROP AS "
                "SELECT s.line, v.col, v.value, v.reason FROM {stage} s "
                "CROSS JOIN LATERAL (VALUES {values}) AS v(col, value, reason) WHERE v.reason IS NOT NULL"
            ).format(
                rejects=_ident(f"rejects_{self.spec.kind}"),
                stage=_ident(self.stage_table),
                values=values,
            )
        )
        # Typed rows: bad values parse to NULL here, and their lines are rejected anyway.
        present = {c.name for c in self.columns}
        selects = [sql.SQL("line")]
        for column in self.spec.columns:
            if column.name in present:
                selects.append(
                    sql.SQL("{} AS {}").format(self._parsed(column), _ident(column.name))
                )
            else:
                selects.append(
                    sql.SQL("NULL::{} AS {}").format(
                        sql.SQL(_sql_type(column)), _ident(column.name)
                    )
                )
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}").format(
                _ident(self.typed_table), sql.SQL(", ").join(selects), _ident(self.stage_table)
            )
        )
        cursor.execute(sql.SQL("CREATE INDEX ON {} (line)").format(_ident(self.typed_table)))
        for check in self._set_checks(set(loaded_kinds)):
            cursor.execute(
                sql.SQL("INSERT INTO {} (line, col, value, reason) {}").format(
                    _ident(f"rejects_{self.spec.kind}"), check
                )
            )
        self._collect_rejects(cursor)
        self._collect_warnings(cursor)

    def _set_checks(self, loaded_kinds: set[str]) -> list[sql.Composable]:
        """Checks that look across rows and tables: duplicates, references, date order, totals."""
        t = _ident(self.typed_table)
        kind = self.spec.kind
        checks: list[sql.Composable] = []
        key = [c for c in self.spec.key if c != "sequence"]
        if kind != "transactions":
            checks.append(
                sql.SQL(
                    "SELECT line, {col}, concat_ws(' / ', {cols}), 'duplicate key: first seen on row ' || (first_line + 1) "
                    "FROM (SELECT line, {cols}, min(line) OVER (PARTITION BY {cols}) AS first_line FROM {t}) d "
                    "WHERE line <> first_line"
                ).format(col=sql.Literal(key[0]), cols=sql.SQL(", ").join(map(_ident, key)), t=t)
            )
        if kind == "loans":
            in_file = "customers" in loaded_kinds
            checks.append(
                sql.SQL(
                    "SELECT l.line, 'customer_id', l.customer_id, {reason} FROM {t} l "
                    "WHERE l.customer_id IS NOT NULL "
                    "AND NOT EXISTS (SELECT 1 FROM loans_customer c WHERE c.customer_id = l.customer_id) {in_file}"
                ).format(
                    t=t,
                    reason=sql.Literal("customer is neither in this tape nor in the database"),
                    in_file=sql.SQL(
                        "AND NOT EXISTS (SELECT 1 FROM typed_customers c WHERE c.customer_id = l.customer_id)"
                    )
                    if in_file
                    else sql.SQL(""),
                )
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
        if kind in ("schedules", "transactions"):
            date_col = "date_due" if kind == "schedules" else "date_paid"
            loans_in_file = "loans" in loaded_kinds
            # The loan's disbursement date, from this tape when it carries the loan, else the database.
            loan_dates = (
                sql.SQL(
                    "(SELECT loan_id, disburse_date FROM typed_loans UNION ALL "
                    "SELECT loan_id, disburse_date FROM loans_loan db WHERE NOT EXISTS (SELECT 1 FROM typed_loans tl WHERE tl.loan_id = db.loan_id))"
                )
                if loans_in_file
                else sql.SQL("(SELECT loan_id, disburse_date FROM loans_loan)")
            )
            checks.append(
                sql.SQL(
                    "SELECT x.line, 'loan_id', x.loan_id, 'loan is neither in this tape nor in the database' FROM {t} x "
                    "WHERE x.loan_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {loans} l WHERE l.loan_id = x.loan_id)"
                ).format(t=t, loans=loan_dates)
            )
            checks.append(
                sql.SQL(
                    "SELECT x.line, {col}, x.{d}::text, {reason} FROM {t} x JOIN {loans} l ON l.loan_id = x.loan_id "
                    "WHERE x.{d} < l.disburse_date"
                ).format(
                    col=sql.Literal(date_col),
                    d=_ident(date_col),
                    t=t,
                    loans=loan_dates,
                    reason=sql.Literal(
                        "due date is before the loan's disbursement date"
                        if kind == "schedules"
                        else "payment date is before the loan's disbursement date"
                    ),
                )
            )
        return checks

    def _collect_rejects(self, cursor) -> None:
        rejects = _ident(f"rejects_{self.spec.kind}")
        cursor.execute(sql.SQL("SELECT count(DISTINCT line) FROM {}").format(rejects))
        self.result.rejected = cursor.fetchone()[0]
        cursor.execute(
            sql.SQL("SELECT line, col, value, reason FROM {} ORDER BY line, col LIMIT {}").format(
                rejects, sql.Literal(MAX_LISTED)
            )
        )
        for line, col, value, reason in cursor.fetchall():
            self.problem(line + 1, col, value, reason)

    def _collect_warnings(self, cursor) -> None:
        """Things that load but a steward should know: float noise, rebates, disagreeing balances."""
        stage, typed = _ident(self.stage_table), _ident(self.typed_table)
        for column in self.columns:
            if column.type != ColumnType.MONEY:
                continue
            raw = sql.SQL("abaco_parse_numeric({}, {})").format(
                _ident(column.name), sql.Literal(self.fmt.decimal_comma)
            )
            cursor.execute(
                sql.SQL("SELECT count(*), min(line) FROM {} WHERE {} <> round({}, 2)").format(
                    stage, raw, raw
                )
            )
            count, first = cursor.fetchone()
            if count:
                self.problem(
                    first + 1,
                    column.name,
                    "",
                    f"{count} value(s) carry float noise beyond cents; rounded to 2 decimals",
                    WARNING,
                )
        if self.spec.kind == "transactions":
            cursor.execute(
                sql.SQL("SELECT count(*), min(line) FROM {} WHERE interest < 0").format(typed)
            )
            count, first = cursor.fetchone()
            if count:
                self.problem(
                    first + 1,
                    "interest",
                    "",
                    f"{count} row(s) with negative interest (rebates), loaded as given",
                    WARNING,
                )

    # ---------------------------------------------------------------- merge
    def merge(self, cursor, *, batch_id: int, quarantine: bool) -> None:
        """One upsert: new keys are inserted, changed rows updated, identical rows not touched."""
        spec = self.spec
        t = _ident(self.typed_table)
        rejects = _ident(f"rejects_{spec.kind}")
        good = (
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} r WHERE r.line = x.line)").format(rejects)
            if quarantine
            else sql.SQL("TRUE")
        )
        targets: list[str] = []
        values: list[sql.Composable] = []
        joins: list[sql.Composable] = []
        for column in spec.columns:
            if (
                column.name in ("loan_id", "customer_id")
                and spec.kind != {"loan_id": "loans", "customer_id": "customers"}[column.name]
            ):
                table, alias, target = (
                    ("loans_loan", "ref_loan", "loan_id")
                    if column.name == "loan_id"
                    else ("loans_customer", "ref_customer", "customer_id")
                )
                joins.append(
                    sql.SQL("JOIN {} {} ON {}.{} = x.{}").format(
                        _ident(table),
                        _ident(alias),
                        _ident(alias),
                        _ident(column.name),
                        _ident(column.name),
                    )
                )
                targets.append(target)
                values.append(sql.SQL("{}.id").format(_ident(alias)))
                continue
            targets.append(column.db_column)
            values.append(self._merge_value(column))
        if spec.kind == "transactions":
            targets.append("sequence")
            values.append(
                sql.SQL(
                    "(row_number() OVER (PARTITION BY x.loan_id, x.date_paid, x.transaction_type ORDER BY x.line) - 1)"
                )
            )
        changed = list(targets)
        targets += ["batch_id"]
        values += [sql.Literal(batch_id)]
        extra = _insert_only_defaults(spec)
        targets += list(extra)
        values += [sql.Literal(v) for v in extra.values()]
        has_timestamps = spec.kind in ("customers", "loans")
        if has_timestamps:
            targets += ["created_at", "updated_at"]
            values += [sql.SQL("now()"), sql.SQL("now()")]
        conflict = {
            "customers": ["customer_id"],
            "loans": ["loan_id"],
            "schedules": ["loan_id", "due_date"],
            "transactions": ["loan_id", "date", "transaction_type", "sequence"],
        }[spec.kind]
        updates = [c for c in changed if c not in conflict]
        set_list = [*updates, "batch_id", *(["updated_at"] if has_timestamps else [])]
        query = sql.SQL(
            "WITH merged AS ("
            " INSERT INTO {table} AS cur ({targets}) SELECT {values} FROM {t} x {joins} WHERE {good}"
            " ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
            " WHERE ({cur_cols}) IS DISTINCT FROM ({new_cols})"
            " RETURNING (xmax = 0) AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"
        ).format(
            table=_ident(spec.table),
            targets=sql.SQL(", ").join(map(_ident, targets)),
            values=sql.SQL(", ").join(values),
            t=t,
            joins=sql.SQL(" ").join(joins),
            good=good,
            conflict=sql.SQL(", ").join(map(_ident, conflict)),
            sets=sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in set_list
            ),
            cur_cols=sql.SQL(", ").join(sql.SQL("cur.{}").format(_ident(c)) for c in updates),
            new_cols=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(_ident(c)) for c in updates),
        )
        cursor.execute(query)
        self.result.inserted, self.result.updated = cursor.fetchone()

    def _merge_value(self, column: Column) -> sql.Composable:
        ref = sql.SQL("x.{}").format(_ident(column.name))
        if column.type == ColumnType.TEXT:
            default = "USD" if column.name == "currency" else ""
            return sql.SQL("COALESCE({}, {})").format(ref, sql.Literal(default))
        if column.type == ColumnType.MONEY and column.name not in ("income",):
            return sql.SQL("COALESCE({}, 0)").format(ref)
        if column.name in ("interest_rate", "dpd"):
            return sql.SQL("COALESCE({}, 0)").format(ref)
        return ref


def _sql_type(column: Column) -> str:
    return {
        ColumnType.TEXT: "text",
        ColumnType.MONEY: "numeric",
        ColumnType.DECIMAL: "numeric",
        ColumnType.INTEGER: "bigint",
        ColumnType.DATE: "date",
    }[column.type]


def _insert_only_defaults(spec: FileSpec) -> dict[str, object]:
    """Columns the tape does not carry but the table requires: set on insert, never overwritten."""
    if spec.kind == "customers":
        return {"name": "", "national_id": "", "email": "", "phone": ""}
    return {}
