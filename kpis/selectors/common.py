"""What every dashboard page shares: the selection (as-of date, basis, slice) resolved against
the stored runs, one read of KPI values, and the formatting of numbers for managers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import NamedTuple
from urllib.parse import urlencode

from django.db.models import Q

from abaco.dates import month_end, previous_month_end
from kpis import definitions as d
from kpis.models import KpiValue, SnapshotRun
from kpis.selectors.restatement import run_changed_by
from loans.models import Segment
from loans.selectors import book_data_through

PAGE_SIZE = 50
TREND_MONTHS = 24
VINTAGE_COHORTS = 12
HEADLINE = (
    "outstanding_principal",
    "par_30",
    "par_90",
    "written_off_balance",
    "disbursements",
    "collection_rate",
    "active_borrowers",
    "weighted_average_interest_rate",
)
TREND = ("outstanding_principal", "disbursements", "par_30", "par_90", "collection_rate")
SLICE_DIMENSIONS = d.DIMENSION_COLUMNS
BUCKET_LABELS = {code: label for code, label, *_ in d.BUCKETS}
ROLL_TO = [code for code, *_ in d.BUCKETS] + ["repaid"]
Rows = list[list[object]]


# Formatting ---------------------------------------------------------------------------------


def display(unit: str, value: Decimal | None) -> str:
    """A KPI value as a manager reads it: money without cents, ratios as percentages."""
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value * 100:,.2f}%"
    if unit == "USD":
        return f"{value:,.0f}"
    return f"{value:,.0f}"


def change_display(unit: str, now: Decimal | None, before: Decimal | None) -> str:
    """The change from ``before`` to ``now``: percentage points for ratios, amount and % else."""
    if now is None or before is None:
        return ""
    delta = now - before
    if unit == "ratio":
        return f"{delta * 100:+,.2f} pp"
    relative = f" ({delta / before * 100:+,.1f}%)" if before else ""
    return f"{delta:+,.0f}{relative}"


@dataclass(frozen=True)
class Period:
    """The span a monthly rate or a roll rate is measured over: from the previous month-end to
    the as-of date. A full month only when the as-of date is itself a month-end."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def full_month(self) -> bool:
        return self.end == month_end(self.end) and self.start == previous_month_end(self.end)

    @property
    def label(self) -> str:
        """The period's length as headers name it."""
        length = "1 month" if self.full_month else f"{self.days} days, a partial month"
        return f"{self.start:%Y-%m-%d} → {self.end:%Y-%m-%d} ({length})"


def rate_period(as_of: date) -> Period:
    return Period(previous_month_end(as_of), as_of)


NOT_MEANINGFUL = "n/m"
ANNUALISED = ("cdr", "cpr")


def rate_not_meaningful(
    code: str, value: Decimal | None, *, period: Period, smm: Decimal | None = None
) -> str:
    """Why a monthly rate means nothing for its period ("" when it means what it says):
    SMM outside [0, 1], CPR from such an SMM, and a rate annualised from a partial month."""
    if value is None and code != "cpr":
        return ""
    smm_outside = smm is not None and not 0 <= smm <= 1
    if code == "smm" and smm_outside:
        return (
            f"SMM {smm * 100:,.2f}% is outside [0, 1]: principal paid fell short of the month's "
            "schedule, or the schedule exceeds the opening balance (loans disbursed and due "
            "within the month)"
        )
    if code == "cpr" and smm_outside:
        return f"CPR comes from an SMM outside [0, 1] ({smm * 100:,.2f}%)"
    if code in ANNUALISED and not period.full_month and (value is not None or code == "cdr"):
        return f"annualised from a partial month ({period.days} days to {period.end:%Y-%m-%d})"
    return ""


def roll_not_meaningful(period: Period) -> str:
    """Why a roll-rate matrix is not a monthly roll ("" when it is one)."""
    if period.full_month:
        return ""
    return (
        f"{period.start:%Y-%m-%d} and {period.end:%Y-%m-%d} are not consecutive month-ends "
        f"({period.days} days): a roll rate is a month's move"
    )


def plain(value: object) -> object:
    """Export cells: Decimals as numbers rounded for a spreadsheet, everything else unchanged."""
    if isinstance(value, Decimal):
        return float(round(value, 6))
    return value


# The selection every page shares --------------------------------------------------------------


@dataclass
class Selection:
    """What the filters chose, resolved against the stored runs."""

    dates: list[date]
    as_of: date | None
    basis: str
    run: SnapshotRun | None
    has_restated: bool
    dimension: str
    member: str
    runs: list[SnapshotRun] = field(default_factory=list)  # every run, newest first
    members: dict[str, list[str]] = field(default_factory=dict)
    # The book's data-through date (loans.selectors.book_data_through): dates after it are
    # "beyond data", computed only when asked and never the default.
    data_through: date | None = None
    # Loaded batches that changed the chosen snapshot's date after it was computed: its
    # recomputation (kpi_restate) is pending or running.
    changed_by: list = field(default_factory=list)

    @property
    def beyond_data(self) -> bool:
        return bool(self.as_of and self.data_through and self.as_of > self.data_through)

    @property
    def slice_options(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """The slice picker: (dimension, its label, [(member, label)]), every member labelled."""
        return [
            (dim, DIMENSION_LABELS.get(dim, dim), [(m, member_label(dim, m)) for m in members])
            for dim, members in self.members.items()
            if members
        ]

    @property
    def member_display(self) -> str:
        return member_label(self.dimension, self.member)

    @property
    def query(self) -> dict[str, str]:
        """The filters as query-string parameters (links to other pages keep them)."""
        q = {}
        if self.as_of:
            q["as_of"] = self.as_of.isoformat()
        if self.basis != SnapshotRun.Basis.RESTATED:  # the default: restated where it exists
            q["basis"] = self.basis
        if self.dimension != "portfolio":
            q["dimension"], q["member"] = self.dimension, self.member
        return q

    @property
    def qs(self) -> str:
        return urlencode(self.query)

    @property
    def as_of_iso(self) -> str:
        return self.as_of.isoformat() if self.as_of else ""

    @property
    def date_options(self) -> list[tuple[str, bool, bool]]:
        """The as-of picker's (date, selected, beyond data) triples, formatted once rather than
        per option."""
        through = self.data_through
        return [
            (day.isoformat(), day == self.as_of, bool(through and day > through))
            for day in self.dates
        ]

    def run_at(self, day: date) -> SnapshotRun | None:
        """The run of ``day`` on the selected basis: one basis for every date of a trend (the
        restatement where a date has one, as reported where it has none; or as reported for
        all)."""
        found = None
        for run in self.runs:
            if run.as_of == day:
                if run.basis == self.basis:
                    return run
                if run.basis == SnapshotRun.Basis.AS_REPORTED:
                    found = run
        return found

    @property
    def latest_run(self) -> SnapshotRun | None:
        """The latest date's standing run (its restatement where it has one), whatever basis
        the page shows: what the data status names as the latest snapshot."""
        if not self.dates:
            return None
        runs = [run for run in self.runs if run.as_of == self.dates[0]]
        return max(runs, key=lambda run: run.basis == SnapshotRun.Basis.RESTATED)

    def month_end_runs(self, *, months: int) -> list[SnapshotRun]:
        """The last ``months`` month-end runs up to the selected date, oldest first."""
        days = sorted(
            {r.as_of for r in self.runs if r.as_of <= self.as_of and r.as_of == month_end(r.as_of)}
        )[-months:]
        return [run for day in days if (run := self.run_at(day)) is not None]


def selection_read(*, as_of: date | None, basis: str, dimension: str, member: str) -> Selection:
    """Resolve the filters: one query for the runs (a few hundred rows at most, one per date and
    basis), the book's data-through date, and one query for the slices the chosen run has.

    With no date asked for, the latest snapshot on or before data-through (the latest of all
    when none is); a date beyond the data is shown only when asked for, and badged."""
    runs = list(
        SnapshotRun.objects.only(
            "as_of",
            "basis",
            "provisional",
            "provisional_reasons",
            "restatement_reason",
            "computed_at",
            "loans",
            "job",
        ).order_by("-as_of", "basis")
    )
    dates = sorted({r.as_of for r in runs}, reverse=True)
    through = book_data_through()
    within = [day for day in dates if through is None or day <= through]
    default = within[0] if within else (dates[0] if dates else None)
    chosen = as_of if as_of in dates else default
    if basis not in SnapshotRun.Basis.values:
        basis = SnapshotRun.Basis.RESTATED
    if dimension not in SLICE_DIMENSIONS:
        dimension, member = "portfolio", ""
    selection = Selection(
        dates=dates,
        as_of=chosen,
        basis=basis,
        run=None,
        has_restated=any(r.basis == SnapshotRun.Basis.RESTATED for r in runs),
        dimension=dimension,
        member=member,
        runs=runs,
        data_through=through,
    )
    if chosen is None:
        return selection
    selection.run = selection.run_at(chosen)
    selection.changed_by = run_changed_by(selection.run)
    members = defaultdict(list)
    for dim, mem in (
        KpiValue.objects.filter(run=selection.run, code="outstanding_principal")
        .slices()
        .order_by("dimension", "member")
        .values_list("dimension", "member")
    ):
        members[dim].append(mem)
    selection.members = dict(members)
    if dimension != "portfolio" and member not in selection.members.get(dimension, []):
        selection.dimension, selection.member = "portfolio", ""
    return selection


DIMENSION_LABELS = {
    "company": "Entity",
    "product": "Product",
    "currency": "Currency",
    "segment": "Segment",
}
SEGMENT_LABELS = {code: label.split(" (")[0] for code, label in Segment.choices}


def member_label(dimension: str, member: str) -> str:
    """A slice member as a manager reads it: never blank (no "segment:" with nothing after it)."""
    if dimension == "segment":
        return SEGMENT_LABELS.get(member, member) if member else "Unsegmented"
    return member or "(blank)"


def slice_filter(selection: Selection) -> Q:
    """LoanState rows of the selected slice."""
    if selection.dimension == "portfolio":
        return Q()
    return Q(**{SLICE_DIMENSIONS[selection.dimension]: selection.member})


class Stored(NamedTuple):
    """A stored KPI value as the pages read it (tuples: a few hundred model instances per page
    cost more than the query)."""

    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None


Values = dict[tuple[int, str, str, str], Stored]


def values_read(
    *, runs: list[SnapshotRun], codes, selection: Selection, all_slices: bool = False
) -> Values:
    """KPI values keyed by (run id, code, dimension, member): one query."""
    found = KpiValue.objects.filter(run__in=[r.pk for r in runs], code__in=list(codes))
    if not all_slices:
        found = found.filter(dimension=selection.dimension, member=selection.member)
    rows = found.values_list(
        "run_id", "code", "dimension", "member", "value", "numerator", "denominator"
    )
    return {(run, code, dim, mem): Stored(*parts) for run, code, dim, mem, *parts in rows}


def value_at(
    values: Values,
    run: SnapshotRun | None,
    code: str,
    selection: Selection,
) -> Decimal | None:
    """The selected slice's value of ``code`` in ``run`` from a ``values_read`` result."""
    if run is None:
        return None
    found = values.get((run.pk, code, selection.dimension, selection.member))
    return found.value if found else None


@dataclass
class Headline:
    code: str
    name: str
    unit: str
    value: Decimal | None
    display: str
    status: str
    formula: str
    version: int
    vs_month: str = ""
    vs_year: str = ""
    drill: str = ""  # query string of the drill-down behind the number


def headline_of(code: str, value: Decimal | None, **extra) -> Headline:
    """A stored value as a tile: the definition's name, unit, formula, version and status."""
    kpi = d.BY_CODE[code]
    return Headline(
        code=code,
        name=kpi.name,
        unit=kpi.unit,
        value=value,
        display=display(kpi.unit, value),
        status=kpi.status(value),
        formula=kpi.formula,
        version=kpi.version,
        **extra,
    )
