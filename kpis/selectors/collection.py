"""Collections page: scheduled against collected cash by month, the collection rate, cash split
into overdue, current and advance payments, and the principal falling due after the as-of date.

Every figure is a stored KPI value: monthly ones from the month-end snapshots (a month-end run's
month-to-date value is the whole month), where the numerator and denominator of
``collection_rate`` are collected and scheduled cash; what falls due next from the selected run
(``due_<n>_principal`` and ``due_<n>_loans``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from abaco.dates import month_end
from kpis import definitions as d
from kpis.selectors.common import (
    TREND_MONTHS,
    Headline,
    Rows,
    Selection,
    Stored,
    display,
    headline_of,
    plain,
    selection_read,
    value_at,
    values_read,
)

SPLIT = ("collections_overdue", "collections_current", "collections_advance")
CODES = ("collection_rate", *SPLIT)
DUE_CODES = [f"due_{n}_{measure}" for n in d.DUE_DAYS for measure in ("principal", "loans")]


@dataclass
class CollectionMonth:
    as_of: date
    scheduled: Decimal | None
    collected: Decimal | None
    rate: Decimal | None
    split: dict[str, Decimal | None]

    @property
    def month_to_date(self) -> bool:
        return self.as_of != month_end(self.as_of)

    @property
    def label(self) -> str:
        return f"{self.as_of:%Y-%m}" + (f" (to {self.as_of:%d})" if self.month_to_date else "")

    @property
    def cells(self) -> list[str]:
        """Table cells after the month, formatted as the tiles are."""
        return [
            display("USD", self.scheduled),
            display("USD", self.collected),
            display("ratio", self.rate),
            *[display("USD", self.split[code]) for code in SPLIT],
        ]

    @property
    def status(self) -> str:
        return d.BY_CODE["collection_rate"].status(self.rate)


@dataclass
class FallingDue:
    days: int
    until: date
    principal: Decimal | None  # None: a snapshot taken before these were stored
    loans: Decimal | None

    @property
    def principal_display(self) -> str:
        return display("USD", self.principal)

    @property
    def loans_display(self) -> str:
        return display("count", self.loans)


@dataclass
class Collections:
    selection: Selection
    tiles: list[Headline]
    months: list[CollectionMonth]  # oldest first
    due: list[FallingDue]

    split_names = {
        "collections_overdue": "Overdue",
        "collections_current": "Current",
        "collections_advance": "Advance",
    }

    @property
    def month(self) -> CollectionMonth | None:
        """The selected date's month (month to date when the date is not a month-end)."""
        return self.months[-1] if self.months else None

    @property
    def chart(self) -> dict:
        """What dashboard-collections.js draws (through json_script)."""

        def series(values):
            return [None if v is None else float(round(v, 6)) for v in values]

        return {
            "labels": [m.label for m in self.months],
            "scheduled": series(m.scheduled for m in self.months),
            "collected": series(m.collected for m in self.months),
            "rate": series(m.rate for m in self.months),
            "split": {code: series(m.split[code] for m in self.months) for code in SPLIT},
            "names": self.split_names,
        }

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        months = (
            ["month", "as_of", "scheduled", "collected", "collection_rate", *SPLIT],
            [
                [
                    m.label,
                    m.as_of,
                    plain(m.scheduled),
                    plain(m.collected),
                    plain(m.rate),
                    *[plain(m.split[code]) for code in SPLIT],
                ]
                for m in reversed(self.months)
            ],
        )
        due = (
            ["within_days", "until", "principal_scheduled", "loans"],
            [
                [w.days, w.until, plain(w.principal), None if w.loans is None else int(w.loans)]
                for w in self.due
            ],
        )
        return {"months": months, "falling_due": due}


def collections_read(*, as_of: date | None, basis: str, dimension: str, member: str) -> Collections:
    """The last 24 months of scheduled and collected cash, its split, and what falls due next."""
    selection = selection_read(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if selection.run is None:
        return Collections(selection, [], [], [])
    runs = selection.month_end_runs(months=TREND_MONTHS)
    if selection.run not in runs:  # a date inside a month: its month to date comes last
        runs = [*runs[1:], selection.run] if len(runs) == TREND_MONTHS else [*runs, selection.run]
    values = values_read(runs=runs, codes=[*CODES, *DUE_CODES], selection=selection)
    months = []
    for run in runs:
        rate = values.get((run.pk, "collection_rate", selection.dimension, selection.member))
        months.append(
            CollectionMonth(
                as_of=run.as_of,
                scheduled=_part(rate, "denominator"),
                collected=_part(rate, "numerator"),
                rate=_part(rate, "value"),
                split={code: value_at(values, run, code, selection) for code in SPLIT},
            )
        )
    month = months[-1]
    tiles = [
        headline_of("collection_rate", month.rate),
        *[headline_of(code, month.split[code]) for code in SPLIT],
    ]
    due = [
        FallingDue(
            days=n,
            until=selection.as_of + timedelta(days=n),
            principal=value_at(values, selection.run, f"due_{n}_principal", selection),
            loans=value_at(values, selection.run, f"due_{n}_loans", selection),
        )
        for n in d.DUE_DAYS
    ]
    return Collections(selection, tiles, months, due)


def _part(value: Stored | None, name: str) -> Decimal | None:
    return getattr(value, name) if value is not None else None
