"""How the engine composes SQL (psycopg ``sql``, the one way in kpis): statements rendered to text
once, and the portfolio's slices (kpis.definitions.DIMENSION_COLUMNS) as GROUPING SETS."""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from kpis import definitions as d


def rendered(statement: sql.Composable) -> str:
    """A statement's text, rendered once at import: psycopg would otherwise compose it again at every
    execute (milliseconds per snapshot for VALUES_INSERT alone). Only the definitions' constants
    are composed in, never run-time values: those are %(name)s parameters."""
    return statement.as_string()


def run_key(name: str) -> sql.Composed:
    """A run's id as a value the planner does not see, ``(SELECT %(name)s::bigint)``, to compare
    loan states' ``run_id`` with.

    While a run is computed its states are newer than the table's statistics, and its base run's
    often are too. Compared with a constant, once ANALYZE (autovacuum, on a server) has listed
    every stored run among the most common values, the planner estimates one row for a run it
    has not seen, and joins a quarter of a million states in nested loops: roll rates ran for over
    ten minutes on the 1M-loan book. A value it cannot see is estimated at the table's rows over
    its distinct runs (README, "KPIs")."""
    return sql.SQL("(SELECT {}::bigint)").format(sql.Placeholder(name))


RUN = run_key("run")
BASE_RUN = run_key("base")


# Slices (kpis.definitions.DIMENSION_COLUMNS) as GROUPING SETS. Loans read the segment from their
# customer: join ``loans_customer cu`` (WITH_SEGMENT) and pass segment_alias "cu".
WITH_SEGMENT = sql.SQL("JOIN loans_customer cu ON cu.id = l.customer_id")


def _columns(alias: str, segment_alias: str | None) -> dict[str, sql.Identifier]:
    prefix = (alias,) if alias else ()
    columns = {dim: sql.Identifier(*prefix, col) for dim, col in d.DIMENSION_COLUMNS.items()}
    if segment_alias is not None:
        columns["segment"] = sql.Identifier(segment_alias, "segment")
    return columns


def slice_columns(alias: str = "", segment_alias: str | None = None) -> sql.Composed:
    """The slice of a grouping-sets row: its ``dimension`` and ``member``."""
    columns = _columns(alias, segment_alias)
    dimension = sql.SQL(" ").join(
        sql.SQL("WHEN GROUPING({}) = 0 THEN {}").format(c, sql.Literal(dim))
        for dim, c in columns.items()
    )
    member = sql.SQL(" ").join(
        sql.SQL("WHEN GROUPING({c}) = 0 THEN {c}").format(c=c) for c in columns.values()
    )
    # "C" collation: the slices are sorted and grouped by these, and byte order is all they need.
    return sql.SQL(
        "CASE {dimension} ELSE 'portfolio' END COLLATE \"C\" AS dimension, "
        "coalesce(CASE {member} END, '') COLLATE \"C\" AS member"
    ).format(dimension=dimension, member=member)


def slices(alias: str = "", segment_alias: str | None = None, *, per: str = "") -> sql.Composed:
    """GROUPING SETS of the slices; with ``per`` (a column), each slice grouped by it too."""
    extra = [sql.Identifier(per)] if per else []
    sets = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join([c, *extra]))
        for c in _columns(alias, segment_alias).values()
    )
    return sql.SQL("GROUPING SETS (({}), {})").format(sql.SQL(", ").join(extra), sets)


SLICE_COLUMNS = slice_columns()

SLICES = slices()


def aliased(aggregates: dict[str, sql.Composable]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(aggregate, sql.Identifier(name))
        for name, aggregate in aggregates.items()
    )


def summed(names: Iterable[str]) -> sql.Composed:
    return aliased({name: sql.SQL("sum({})").format(sql.Identifier(name)) for name in names})
