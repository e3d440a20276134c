"""Drill-down: the loan states behind a bucket or a PAR number, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.core.exceptions import BadRequest
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from psycopg import sql

from kpis import definitions as d
from kpis.models import LoanState
from kpis.selectors.common import (
    BUCKET_LABELS,
    PAGE_SIZE,
    Rows,
    Selection,
    plain,
    selection_read,
    slice_filter,
    values_read,
)

# What the page and its export show of a state (the loan and customer rows are wide).
STATE_COLUMNS = (
    "loan_id",
    "company",
    "product_type",
    "currency",
    "dpd",
    "bucket",
    "outstanding_principal",
    "written_off_balance",
    "interest_rate",
)
EXPORTED = STATE_COLUMNS[1:]  # after the loan's and customer's ids


@dataclass
class Drilldown:
    selection: Selection
    bucket: str
    min_dpd: int | None
    sort: str
    page: int
    pages: int
    total: int
    states: list[LoanState]
    title: str
    queryset: QuerySet | None = None  # every row, for exports
    next_after: str = ""  # the pager's keyset boundaries
    previous_before: str = ""

    buckets = [(code, label) for code, label, *_ in d.BUCKETS]

    @property
    def filter_qs(self) -> str:
        """The drill-down's own filter, kept by sort, page and slice links."""
        return f"bucket={self.bucket}" if self.bucket else f"min_dpd={self.min_dpd}"

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        head = ["loan_id", "customer_id", *EXPORTED]
        rows = (
            [s.loan.loan_id, s.loan.customer.customer_id, *[plain(getattr(s, c)) for c in EXPORTED]]
            for s in (self.queryset.iterator(chunk_size=2000) if self.queryset is not None else [])
        )
        return {"loans": (head, rows)}


# sort parameter -> (column, descending); ties break on id in the same direction.
SORTS = {
    "dpd": ("dpd", True),
    "-dpd": ("dpd", False),
    "outstanding": ("outstanding_principal", True),
    "-outstanding": ("outstanding_principal", False),
}


def _cursor(text: str, column: str) -> tuple[int | Decimal, int] | None:
    """A page boundary from the query string: "<sort value>_<loan state id>"; None when absent.
    One that cannot be a boundary (not numbers, or past the columns' range) is a bad request."""
    if not text:
        return None
    value, _, pk = text.rpartition("_")
    try:
        bound = int(value) if column == "dpd" else Decimal(value)
        row = int(pk)
    except (ValueError, ArithmeticError):
        bound, row = None, 0
    limit = 2**31 if column == "dpd" else Decimal(10) ** 16  # IntegerField, Decimal(18, 2)
    if isinstance(bound, Decimal) and not bound.is_finite():
        bound = None
    if bound is None or not -limit < bound < limit or not 0 <= row < 2**63:
        raise BadRequest(f"The page boundary {text[:40]!r} is not valid: open the first page.")
    return (bound, row)


def _cursor_of(state: LoanState, column: str) -> str:
    return f"{getattr(state, column)}_{state.pk}"


def _beyond(column: str, op: str, cursor: tuple[int | Decimal, int]) -> RawSQL:
    """Rows past a boundary as one row comparison, which PostgreSQL reads as a range of the
    (run, written_off, dpd, id) index instead of skipping an offset's worth of rows."""
    text = sql.SQL("({}, {}) {} (%s, %s)").format(
        sql.Identifier("kpis_loanstate", column),
        sql.Identifier("kpis_loanstate", "id"),
        sql.SQL(op),
    )
    return RawSQL(text.as_string(), cursor, output_field=BooleanField())


def drilldown_read(
    *,
    as_of: date | None,
    basis: str,
    dimension: str,
    member: str,
    bucket: str = "",
    min_dpd: int | None = None,
    sort: str = "dpd",
    page: int = 1,
    after: str = "",
    before: str = "",
) -> Drilldown:
    """The loan states behind a bucket or a PAR number, one page at a time.

    The total comes from the run's stored bucket counts (plus, for a PAR threshold inside a
    bucket, a count over the index range of that bucket's upper days), never a count of the run.
    Pages are keyset pages: the pager's links carry the boundary row (``after`` for the next page,
    ``before`` for the previous one), so a deep page costs what the first does; ``page`` alone
    (an offset) still works for a typed-in link.
    """
    selection = selection_read(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if bucket not in BUCKET_LABELS:
        bucket = ""
    if not bucket and min_dpd is None:
        min_dpd = 1
    sort = sort if sort in SORTS else "dpd"
    if selection.run is None:
        return Drilldown(selection, bucket, min_dpd, sort, 1, 1, 0, [], "No snapshot")
    run = selection.run
    states = LoanState.objects.filter(slice_filter(selection), run=run)
    if bucket:
        low, high = next((low, high) for code, _, low, high in d.BUCKETS if code == bucket)
        # The engine's bucket rule as a DPD range, so the (run, written_off, dpd, id) index serves it.
        states = (
            states.filter(written_off=True)
            if low is None
            else states.filter(dpd__gte=low, dpd__lte=high, written_off=False)
        )
        counted = [bucket]
        title = BUCKET_LABELS[bucket]
        straddle = None
    else:
        states = states.filter(dpd__gte=min_dpd, written_off=False)
        counted = [code for code, _, low, _ in d.BUCKETS if low is not None and low >= min_dpd]
        straddle = next(
            (
                (low, high)
                for _, _, low, high in d.BUCKETS
                if low is not None and low < min_dpd <= high
            ),
            None,
        )
        title = f"{min_dpd}+ days past due (not written off)"
    values = values_read(
        runs=[run], codes=[f"bucket_count_{c}" for c in counted], selection=selection
    )
    total = int(sum((v.value or 0) for v in values.values()))
    if straddle is not None:
        total += LoanState.objects.filter(
            slice_filter(selection),
            run=run,
            dpd__gte=min_dpd,
            dpd__lte=straddle[1],
            written_off=False,
        ).count()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    column, descending = SORTS[sort]
    forward = (f"-{column}", "-id") if descending else (column, "id")
    ordered = (
        states.select_related("loan__customer")
        .only(*STATE_COLUMNS, "loan__loan_id", "loan__customer__customer_id")
        .order_by(*forward)
    )
    if (cursor := _cursor(after, column)) is not None:
        rows = list(ordered.filter(_beyond(column, "<" if descending else ">", cursor))[:PAGE_SIZE])
    elif (cursor := _cursor(before, column)) is not None:
        backward = (column, "id") if descending else (f"-{column}", "-id")
        rows = ordered.filter(_beyond(column, ">" if descending else "<", cursor))
        rows = list(rows.order_by(*backward)[:PAGE_SIZE])[::-1]
    else:
        start = (page - 1) * PAGE_SIZE
        rows = list(ordered[start : start + PAGE_SIZE])
    drill = Drilldown(selection, bucket, min_dpd, sort, page, pages, total, rows, title, ordered)
    if rows:
        drill.next_after = _cursor_of(rows[-1], column) if page < pages else ""
        drill.previous_before = _cursor_of(rows[0], column) if page > 2 else ""
    return drill
