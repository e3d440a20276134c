"""Overview page: headline KPIs with their changes, month-end trends and the data status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from abaco.dates import month_end, previous_month_end
from kpis import definitions as d
from kpis.models import SnapshotRun
from kpis.selectors.common import (
    HEADLINE,
    TREND,
    TREND_MONTHS,
    Headline,
    Rows,
    Selection,
    change_display,
    display,
    headline_of,
    plain,
    rate_period,
    selection_read,
    value_at,
    values_read,
)
from loans.models import Batch, Loan
from loans.selectors import batches_latest_per_source


@dataclass
class Overview:
    selection: Selection
    has_loans: bool
    headlines: list[Headline]
    previous_month_end: date | None
    year_ago: date | None
    trend: dict
    batches: list[Batch]
    trend_table: list[list] = field(default_factory=list)

    @property
    def partial_month_days(self) -> int | None:
        """The days of the month the month-to-date figures cover, before a month-end (they are
        then not compared with the previous month-end); None at a month-end."""
        as_of = self.selection.as_of
        return None if as_of is None or rate_period(as_of).full_month else as_of.day

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        head = [
            "as_of",
            "kpi",
            "name",
            "value",
            "change_vs_previous_month_end",
            "change_vs_year_ago",
            "status",
            "definition_version",
        ]
        rows = [
            [
                self.selection.as_of,
                h.code,
                h.name,
                plain(h.value),
                h.vs_month,
                h.vs_year,
                h.status,
                h.version,
            ]
            for h in self.headlines
        ]
        trend_head = ["month_end", *TREND]
        trend_rows = [
            [label, *[self.trend["series"][code][i] for code in TREND]]
            for i, label in enumerate(self.trend["labels"])
        ]
        return {"headlines": (head, rows), "trend": (trend_head, trend_rows)}


def _year_ago(day: date) -> date:
    if day == month_end(day):
        return month_end(day.replace(day=1, year=day.year - 1))
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def overview_read(*, as_of: date | None, basis: str, dimension: str, member: str) -> Overview:
    """Headline KPIs with their changes, 24 month-end trends and the data status."""
    selection = selection_read(as_of=as_of, basis=basis, dimension=dimension, member=member)
    batches = batches_latest_per_source()
    if selection.run is None:
        return Overview(selection, Loan.objects.exists(), [], None, None, {}, batches)
    previous_day = previous_month_end(selection.as_of)
    year_day = _year_ago(selection.as_of)
    previous, year = selection.run_at(previous_day), selection.run_at(year_day)
    trend_runs = selection.month_end_runs(months=TREND_MONTHS)
    runs = [r for r in {selection.run, previous, year, *trend_runs} if r is not None]
    values = values_read(runs=runs, codes={*HEADLINE, *TREND}, selection=selection)

    def value(run: SnapshotRun | None, code: str) -> Decimal | None:
        return value_at(values, run, code, selection)

    # Before a month-end a month-to-date KPI covers part of a month: no change against the
    # previous month-end's whole month (the same day a year earlier still compares).
    partial = not rate_period(selection.as_of).full_month  # as Overview.partial_month_days
    headlines = []
    for code in HEADLINE:
        kpi = d.BY_CODE[code]
        now = value(selection.run, code)
        month_base = None if kpi.month_to_date and partial else value(previous, code)
        headlines.append(
            headline_of(
                code,
                now,
                vs_month=change_display(kpi.unit, now, month_base),
                vs_year=change_display(kpi.unit, now, value(year, code)),
                drill={"par_30": "min_dpd=30", "par_90": "min_dpd=90"}.get(code, ""),
            )
        )
    trend = {
        "labels": [r.as_of.isoformat() for r in trend_runs],
        "series": {
            code: [
                None if (v := value(r, code)) is None else float(round(v, 6)) for r in trend_runs
            ]
            for code in TREND
        },
        "names": {code: d.BY_CODE[code].name for code in TREND},
    }
    trend_table = [
        [r.as_of.isoformat(), *[display(d.BY_CODE[code].unit, value(r, code)) for code in TREND]]
        for r in reversed(trend_runs)
    ]
    return Overview(
        selection,
        True,
        headlines,
        previous.as_of if previous else None,
        year.as_of if year else None,
        trend,
        batches,
        trend_table,
    )
