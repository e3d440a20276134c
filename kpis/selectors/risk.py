"""Risk page: DPD buckets, PAR per slice, roll rates, vintage curves and CDR/CPR."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings

from abaco.dates import previous_month_end
from kpis import definitions as d
from kpis.models import RollRate, VintagePoint
from kpis.selectors.common import (
    BUCKET_LABELS,
    DIMENSION_LABELS,
    NOT_MEANINGFUL,
    ROLL_TO,
    TREND_MONTHS,
    VINTAGE_COHORTS,
    Period,
    Rows,
    Selection,
    display,
    member_label,
    plain,
    rate_not_meaningful,
    rate_period,
    roll_not_meaningful,
    selection_read,
    values_read,
)


@dataclass
class Risk:
    selection: Selection
    buckets: list[dict]
    par_by_slice: list[dict]
    roll_from: date | None
    roll_rows: list[dict]
    vintages: dict
    rates: list[dict]
    # The span of the rates and the roll-rate matrix, and why the matrix is not a monthly roll.
    period: Period | None = None
    roll_nm: str = ""
    # Loans counted as repaid though a residual of cents is left (definitions v2): shown beside
    # the buckets so that nothing leaves them silently.
    residual: dict = field(default_factory=dict)

    par_days = d.PAR_DAYS
    roll_labels = [BUCKET_LABELS.get(code, "Repaid") for code in ROLL_TO]

    @property
    def chart(self) -> dict:
        """What dashboard-risk.js draws (through json_script)."""
        return {
            "buckets": {
                "labels": [b["label"] for b in self.buckets],
                "balance": [
                    None if b["balance"] is None else float(b["balance"]) for b in self.buckets
                ],
                "count": [None if b["count"] is None else int(b["count"]) for b in self.buckets],
            },
            "vintages": self.vintages["chart"],
        }

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        buckets = (
            ["bucket", "label", "balance", "loans", "share_of_balance"],
            [
                [
                    b["code"],
                    b["label"],
                    plain(b["balance"]),
                    plain(b["count"]),
                    plain(b["share"]),
                ]
                for b in self.buckets
            ],
        )
        par = (
            ["dimension", "member", "outstanding_principal", *[f"par_{n}" for n in d.PAR_DAYS]],
            [
                [
                    r["dimension"],
                    r["member"],
                    plain(r["ob"]),
                    *[plain(r["par"][n]) for n in d.PAR_DAYS],
                ]
                for r in self.par_by_slice
            ],
        )
        roll = (
            ["from_bucket", *ROLL_TO, "note"],
            [
                [
                    r["from"],
                    *[NOT_MEANINGFUL if self.roll_nm else plain(c["share"]) for c in r["cells"]],
                    self.roll_nm,
                ]
                for r in self.roll_rows
            ],
        )
        vintage = (
            ["cohort", "months_on_book", "disbursed", "written_off", "ever_30"],
            [
                [
                    p.cohort,
                    p.months_on_book,
                    plain(p.disbursed),
                    plain(p.written_off),
                    plain(p.ever_30),
                ]
                for p in self.vintages["points"]
            ],
        )
        period = self.period.label if self.period else ""
        rates = (
            ["kpi", "name", "period", "value", "note"],
            [
                [
                    r["code"],
                    r["name"],
                    period,
                    NOT_MEANINGFUL if r["nm"] else plain(r["value"]),
                    r["nm"],
                ]
                for r in self.rates
            ],
        )
        return {
            "buckets": buckets,
            "par": par,
            "roll_rates": roll,
            "vintages": vintage,
            "rates": rates,
        }


RATE_CODES = d.FROM_PREVIOUS_MONTH_END
RESIDUAL_CODES = ("residual_loans", "residual_balance")


def risk_read(*, as_of: date | None, basis: str, dimension: str, member: str) -> Risk:
    """DPD buckets, PAR per slice, the roll-rate matrix, vintage curves and CDR/CPR."""
    selection = selection_read(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if selection.run is None:
        return Risk(selection, [], [], None, [], {"points": [], "chart": {}}, [])
    run = selection.run
    bucket_codes = [f"bucket_{m}_{code}" for m in ("balance", "count") for code, *_ in d.BUCKETS]
    par_codes = [f"par_{n}" for n in d.PAR_DAYS]
    values = values_read(
        runs=[run],
        codes=[*bucket_codes, *par_codes, "outstanding_principal", *RATE_CODES, *RESIDUAL_CODES],
        selection=selection,
        all_slices=True,
    )

    def value(code: str, dim: str = selection.dimension, mem: str = selection.member):
        found = values.get((run.pk, code, dim, mem))
        return found.value if found else None

    live = sum(
        (value(f"bucket_balance_{code}") or 0 for code, *_ in d.BUCKETS if code != "written_off"),
        Decimal(0),
    )
    buckets = []
    for code, label, low, _high in d.BUCKETS:
        balance = value(f"bucket_balance_{code}")
        buckets.append(
            {
                "code": code,
                "label": label,
                "balance": balance,
                "balance_display": display("USD", balance),
                "count": value(f"bucket_count_{code}"),
                "count_display": display("count", value(f"bucket_count_{code}")),
                "share": balance / live
                if balance is not None and live and low is not None
                else None,
                "share_display": display("ratio", balance / live)
                if balance is not None and live and low is not None
                else "",
            }
        )
    slices = sorted(
        {(dim, mem) for (_, _, dim, mem) in values if dim != "portfolio"}, key=lambda s: s
    )
    par_by_slice = [
        {
            "dimension": "portfolio",
            "member": "",
            "ob": value("outstanding_principal", "portfolio", ""),
        }
    ] + [
        {"dimension": dim, "member": mem, "ob": value("outstanding_principal", dim, mem)}
        for dim, mem in slices
    ]
    for row in par_by_slice:
        row["label"] = (
            "Whole portfolio"
            if row["dimension"] == "portfolio"
            else f"{DIMENSION_LABELS[row['dimension']]}: {member_label(row['dimension'], row['member'])}"
        )
        row["ob_display"] = display("USD", row["ob"])
        row["par"] = {n: value(f"par_{n}", row["dimension"], row["member"]) for n in d.PAR_DAYS}
        row["par_display"] = [
            (display("ratio", row["par"][n]), d.BY_CODE[f"par_{n}"].status(row["par"][n]))
            for n in d.PAR_DAYS
        ]
    # Roll rates and vintages are stored for the whole portfolio only.
    cells = {(r.from_bucket, r.to_bucket): r for r in RollRate.objects.filter(run=run)}
    roll_rows = []
    for code, label, *_ in d.BUCKETS:
        row = [cells.get((code, to)) for to in ROLL_TO]
        if not any(row):
            continue
        roll_rows.append(
            {
                "from": code,
                "label": label,
                "cells": [
                    {
                        "share": c.share if c else None,
                        "display": display("ratio", c.share) if c else "",
                        # The shade as a class (heat-0 … heat-17, static/css/abaco.css): the CSP
                        # allows no style= attribute.
                        "heat": round(float(c.share) * 17) if c else 0,
                        "balance": display("USD", c.balance) if c else "",
                    }
                    for c in row
                ],
            }
        )
    vintage_runs = selection.month_end_runs(months=TREND_MONTHS * 2)
    first_cohort = selection.as_of.replace(day=1)
    for _ in range(VINTAGE_COHORTS - 1):
        first_cohort = (first_cohort - timedelta(days=1)).replace(day=1)
    points = list(
        VintagePoint.objects.filter(
            run__in=[r.pk for r in vintage_runs], cohort__gte=first_cohort
        ).order_by("cohort", "months_on_book")
    )
    chart: dict = {"written_off": {}, "ever_30": {}}
    for p in points:
        label = f"{p.cohort:%Y-%m}"
        for measure in ("written_off", "ever_30"):
            share = getattr(p, measure) / p.disbursed if p.disbursed else None
            chart[measure].setdefault(label, []).append(
                {"x": p.months_on_book, "y": None if share is None else float(round(share, 6))}
            )
    period = rate_period(selection.as_of)
    rates = []
    for code in RATE_CODES:
        kpi, now = d.BY_CODE[code], value(code)
        nm = rate_not_meaningful(code, now, period=period, smm=value("smm"))
        rates.append(
            {
                "code": code,
                "name": kpi.name,
                "value": now,
                "nm": nm,
                "display": NOT_MEANINGFUL if nm else display("ratio", now),
                "status": "" if nm else kpi.status(now),
                "formula": kpi.formula,
            }
        )
    residual_loans, residual_balance = value("residual_loans"), value("residual_balance")
    return Risk(
        selection,
        buckets,
        par_by_slice,
        previous_month_end(selection.as_of),
        roll_rows,
        {"points": points, "chart": chart},
        rates,
        period,
        roll_not_meaningful(period),
        {
            "loans": residual_loans,
            "loans_display": display("count", residual_loans),
            # In cents: the residuals are cents, and money without cents would read 0.
            "balance_display": "—" if residual_balance is None else f"{residual_balance:,.2f}",
            "tolerance": settings.RESIDUAL_TOLERANCE,
        },
    )
