"""Check values: every value of a file, row by row, and its warnings, in one pass.

Reads nothing but the file (on a staging connection, see ``pool``). Bad values land in the
file's rejects table (line, column, value, reason)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from loans.imports.specs import ColumnType
from loans.imports.tape.compose import (
    CODE_REASONS,
    CODES,
    NO_AUTOVACUUM,
    Cursor,
    ident,
    join,
    not_in,
    one_row,
)
from loans.imports.tape.staged import StagedFile
from loans.lineage import WARNING


def _value_checks(f: StagedFile) -> list[tuple[str, sql.Composable, sql.Composable]]:
    """(column, condition on the typed row that makes it bad, reason) for every present column."""
    checks: list[tuple[str, sql.Composable, sql.Composable]] = []
    for column in f.columns:
        col = sql.SQL("t.{}").format(ident(column.name))
        if column.required:
            # On the text path a value that did not parse is NULL in t: ask the raw text, so
            # a bad date is reported once, as a bad date.
            raw = sql.SQL("s.{}").format(ident(column.name)) if f.text_staged else col
            if column.type == ColumnType.TEXT or f.text_staged:
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
        if column.codes:
            checks.append(
                (
                    column.name,
                    not_in(col, CODES[column.codes]),
                    sql.Literal(CODE_REASONS[column.codes]),
                )
            )
    return checks


def _parse_checks(f: StagedFile) -> list[tuple[str, sql.Composable, sql.Composable]]:
    """Text path only: a non-empty raw value that did not parse."""
    checks: list[tuple[str, sql.Composable, sql.Composable]] = []
    for column in f.columns:
        reason = {
            ColumnType.MONEY: "not a number",
            ColumnType.DECIMAL: "not a number",
            ColumnType.INTEGER: "not a whole number",
            ColumnType.DATE: "not a date (expected DD/MM/YYYY)"
            if f.fmt.day_first
            else "not a date (expected YYYY-MM-DD)",
        }.get(column.type)
        if reason:
            cond = sql.SQL("NULLIF(btrim(s.{}), '') IS NOT NULL AND t.{} IS NULL").format(
                ident(column.name), ident(column.name)
            )
            checks.append((column.name, cond, sql.Literal(reason)))
    return checks


def check_values(f: StagedFile, cursor: Cursor) -> None:
    """The checks of this file's values, row by row, and its warnings, in one pass."""
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(f.rejects_table)))
    cursor.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE {} (line bigint, col text, value text, reason text) "
            + NO_AUTOVACUUM
        ).format(ident(f.rejects_table))
    )
    checks = _value_checks(f)
    source = sql.SQL("{} t").format(ident(f.typed_table))
    if f.text_staged:
        checks = _parse_checks(f) + checks
        source = sql.SQL("{} t JOIN {} s USING (line)").format(
            ident(f.typed_table), ident(f.stage_table)
        )
    raw_of: Callable[[str], sql.Composable] = (
        (lambda name: sql.SQL("s.{}::text").format(ident(name)))
        if f.text_staged
        else (lambda name: sql.SQL("t.{}::text").format(ident(name)))
    )
    # One pass over the file asks whether any value is wrong and gathers the warnings; only
    # when something is wrong does a second pass list every bad value.
    warning_aggregates, warnings_report = _warnings(f)
    any_bad = (
        sql.SQL("coalesce(bool_or({}), false)").format(
            join((sql.SQL("({})").format(c) for _, c, _ in checks), " OR ")
        )
        if checks
        else sql.SQL("false")
    )
    cursor.execute(
        sql.SQL("SELECT {} FROM {}").format(join([any_bad, *warning_aggregates]), source)
    )
    row = one_row(cursor)
    warnings_report(row[1:])
    if row[0]:
        values = join(
            sql.SQL("({}, {}, CASE WHEN {} THEN {} END)").format(
                sql.Literal(name), raw_of(name), cond, reason
            )
            for name, cond, reason in checks
        )
        cursor.execute(
            sql.SQL(
                "INSERT INTO {} SELECT t.line, v.col, v.value, v.reason FROM {} "
                "CROSS JOIN LATERAL (VALUES {}) AS v(col, value, reason) WHERE v.reason IS NOT NULL"
            ).format(ident(f.rejects_table), source, values)
        )


def _warnings(f: StagedFile) -> tuple[list[sql.Composable], Callable[[Sequence[Any]], None]]:
    """Aggregates for what loads but a steward should know (float noise, rebates), and the
    function that turns their values into warnings."""
    money = [c.name for c in f.columns if c.type == ColumnType.MONEY]
    # scale() first: most values carry two decimals at most, and rounding millions of them costs.
    noisy = "scale(t.{c}) > 2 AND t.{c} <> round(t.{c}, 2)"
    aggregates: list[sql.Composable] = [
        sql.SQL(f"count(*) FILTER (WHERE {noisy}), min(t.line) FILTER (WHERE {noisy})").format(
            c=ident(name)
        )
        for name in money
    ]
    rebates = f.spec.negative_interest_warning and "interest" in money
    if rebates:
        aggregates.append(
            sql.SQL(
                "count(*) FILTER (WHERE t.interest < 0), min(t.line) FILTER (WHERE t.interest < 0)"
            )
        )

    def report(row: Sequence[Any]) -> None:
        for i, name in enumerate(money):
            count, first = row[2 * i], row[2 * i + 1]
            if count:
                f.problem(
                    first + 1,
                    name,
                    "",
                    f"{count} value(s) carry float noise beyond cents; rounded to 2 decimals",
                    WARNING,
                )
        if rebates and row[-2]:
            f.problem(
                row[-1] + 1,
                "interest",
                "",
                f"{row[-2]} row(s) with negative interest (rebates), loaded as given",
                WARNING,
            )

    return aggregates, report
