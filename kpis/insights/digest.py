"""The digest: what the model is told, built from stored snapshots only.

Inputs are the stored rows of ``SOURCES`` (KPI values, roll rates, vintage points, the runs'
data status) for the insight's run, the previous month-end and the same day a year earlier, each
earlier date as it now stands (its restatement when it has one, as the pages show it by default;
as reported only for the as-reported run of a restated date, ``_comparison_basis``). Nothing is read from
customer or loan rows, and no model with a field ``compliance.classification`` marks restricted or
personal is a source (``digest_sources_check``): a digest can hold no name, national id or e-mail.

A rate the risk page shows as "n/m" (a rate annualised from a partial month, one from an SMM
outside [0, 1], a roll matrix between dates that are not consecutive month-ends) is no fact: it
reaches the digest under ``not_meaningful`` with its reason, never as a number a statement could
cite.

Every figure appears twice: as ``Facts`` (the stored Decimal, keyed by KPI code, slice and date),
which the verifier and the renderer read, and in the digest in the unit and precision a manager
reads on the dashboards (percent with two decimals, whole dollars, exact counts), which is what
the model cites.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import F

from abaco.dates import previous_month_end
from compliance.classification import RESTRICTED_FIELDS, personal_fields
from kpis import definitions as d
from kpis.models import KpiValue, RollRate, SnapshotRun, VintagePoint
from kpis.selectors.common import (
    BUCKET_LABELS,
    NOT_MEANINGFUL,
    Selection,
    rate_not_meaningful,
    rate_period,
    roll_not_meaningful,
    selection_read,
)
from kpis.selectors.overview import _year_ago

# The stored rows a digest reads, by model label: never a customer's or a loan's.
SOURCES = ("kpis.SnapshotRun", "kpis.KpiValue", "kpis.RollRate", "kpis.VintagePoint")

# The KPIs a digest carries for its slice, in the order a reader weighs them.
DIGEST_KPIS = (
    "outstanding_principal",
    "par_30",
    "par_90",
    "par_1",
    "collection_rate",
    "disbursements",
    "disbursement_count",
    "written_off_balance",
    "active_borrowers",
    "weighted_average_interest_rate",
    "top_1_share",
    "top_10_share",
    "hhi",
    "cdr",
)
# The KPIs compared across entities (largest movers) and against the whole portfolio.
MOVER_KPIS = ("outstanding_principal", "par_30", "collection_rate")
ENTITY = "company"  # the dimension of the lending entities
ROLL_CELLS = 6  # roll-rate moves kept: the largest balances that changed bucket
VINTAGE_COHORTS = 3  # the most recent cohorts with a month on book

# The unit the digest states a value in, and its displayed precision (dashboards' ``display``).
DIGEST_UNIT = {"USD": "USD", "ratio": "percent", "count": "count", "index": "index"}
PRECISION = {
    "USD": Decimal(1),
    "percent": Decimal("0.01"),
    "count": Decimal(1),
    "index": Decimal(1),
}


def slice_label(dimension: str, member: str) -> str:
    return "portfolio" if dimension == "portfolio" else f"{dimension}:{member}"


def shown(unit: str, value: Decimal) -> Decimal:
    """A stored value in the digest's unit, rounded to its displayed precision."""
    digest_unit = DIGEST_UNIT[unit]
    scaled = value * 100 if digest_unit == "percent" else value
    return scaled.quantize(PRECISION[digest_unit])


def direction_of(unit: str, now: Decimal, before: Decimal) -> str:
    """ "rose", "fell" or "unchanged", as the values read at their displayed precision."""
    a, b = shown(unit, now), shown(unit, before)
    return "rose" if a > b else "fell" if a < b else "unchanged"


@dataclass
class Facts:
    """The stored values behind a digest: (code, slice, ISO date) -> Decimal, with each code's
    unit and name, and the book's data-through date (ISO, "" when unknown). The verifier checks
    against these, the renderer prints them."""

    values: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    data_through: str = ""

    def add(self, code: str, slice_: str, day: date, value: Decimal | None, unit: str, name: str):
        if value is None:
            return
        self.values[(code, slice_, day.isoformat())] = value
        self.units[code] = unit
        self.names[code] = name

    def get(self, code: str, slice_: str, day: str) -> Decimal | None:
        return self.values.get((code, slice_, day))

    def series(self, code: str, slice_: str) -> dict[str, str]:
        unit = self.units[code]
        return {
            day: str(shown(unit, value))
            for (c, s, day), value in sorted(self.values.items(), key=lambda kv: kv[0][2])
            if c == code and s == slice_
        }


@dataclass
class Digest:
    run: SnapshotRun
    dimension: str
    member: str
    facts: Facts
    data: dict[str, Any]

    @property
    def slice(self) -> str:
        return slice_label(self.dimension, self.member)

    def text(self) -> str:
        """The digest as the model reads it: compact JSON, keys sorted (the same digest is the
        same bytes, so its hash names it)."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_sources_check() -> None:
    """Refuse to build a digest from a model that holds restricted or personal fields (the
    registry can mark a field personal without a masking rule: it still never reaches a model)."""
    restricted = sorted(set(SOURCES) & set(RESTRICTED_FIELDS))
    if restricted:
        raise RuntimeError(f"a digest may not read restricted data: {', '.join(restricted)}")
    personal = sorted(label for label in SOURCES if personal_fields(label))
    if personal:
        raise RuntimeError(f"a digest may not read personal data: {', '.join(personal)}")


def _comparison_basis(run: SnapshotRun) -> str:
    """The basis the earlier dates are read on: as reported only for an as-reported run that a
    restatement has replaced (the pages' "As reported" view); otherwise each date's standing
    numbers, its restatement where it has one, as the pages show them by default. A new date's
    first run is as reported, yet the month-end before it may have been restated since (a real
    tape loaded after demo data): compared as reported, its change would be against numbers
    that no longer stand."""
    superseded = (
        run.basis == SnapshotRun.Basis.AS_REPORTED
        and SnapshotRun.objects.of_date(run.as_of).restated().exists()
    )
    return SnapshotRun.Basis.AS_REPORTED if superseded else SnapshotRun.Basis.RESTATED


def digest_build(*, run: SnapshotRun, dimension: str = "portfolio", member: str = "") -> Digest:
    """The digest of one slice at one run (a few queries over stored snapshots)."""
    digest_sources_check()
    selection = selection_read(
        as_of=run.as_of, basis=_comparison_basis(run), dimension=dimension, member=member
    )
    previous = selection.run_at(previous_month_end(run.as_of))
    year = selection.run_at(_year_ago(run.as_of))
    runs = [r for r in (run, previous, year) if r is not None]
    here = slice_label(dimension, member)
    entities = sorted(selection.members.get(ENTITY, []))
    slices = {(dimension, member)}
    if dimension == "portfolio":
        slices |= {(ENTITY, m) for m in entities}
    else:
        slices.add(("portfolio", ""))

    facts = Facts(data_through=selection.data_through.isoformat() if selection.data_through else "")
    wanted = set(DIGEST_KPIS)
    # A CPR is meaningful only with its SMM inside [0, 1] (kpis.selectors.common).
    read = wanted | ({"smm"} if "cpr" in wanted else set())
    rows = list(
        KpiValue.objects.filter(
            run__in=[r.pk for r in runs], code__in=read, dimension__in={dim for dim, _ in slices}
        ).values_list("run_id", "code", "dimension", "member", "value")
    )
    day_of = {r.pk: r.as_of for r in runs}
    # Before a month-end, month-to-date KPIs cover part of a month: they are compared with the
    # same day a year earlier, never with the previous month-end's whole month.
    partial = not rate_period(run.as_of).full_month
    smm_of = {(r, dim, mem): value for r, code, dim, mem, value in rows if code == "smm"}
    not_meaningful: list[dict[str, str]] = []
    for run_id, code, dim, mem, value in rows:
        if code not in wanted or (dim, mem) not in slices:
            continue
        if (dim, mem) != (dimension, member) and code not in MOVER_KPIS:
            continue
        day = day_of[run_id]
        reason = rate_not_meaningful(
            code, value, period=rate_period(day), smm=smm_of.get((run_id, dim, mem))
        )
        if reason:
            not_meaningful.append(
                {
                    "kpi": code,
                    "slice": slice_label(dim, mem),
                    "date": day.isoformat(),
                    "value": NOT_MEANINGFUL,
                    "reason": reason,
                }
            )
            continue
        kpi = d.BY_CODE[code]
        if kpi.month_to_date and previous is not None and day == previous.as_of and partial:
            continue  # a whole month's sum is no base for part of one (``partial_month``)
        facts.add(code, slice_label(dim, mem), day, value, kpi.unit, kpi.name)

    if dimension == "portfolio":
        if reason := roll_not_meaningful(rate_period(run.as_of)):
            not_meaningful.append(
                {
                    "kpi": "roll_rates",
                    "slice": "portfolio",
                    "date": run.as_of.isoformat(),
                    "value": NOT_MEANINGFUL,
                    "reason": reason,
                }
            )
        else:
            _roll_rates(facts, run, previous)
        _vintages(facts, run, previous)

    dates = {
        "current": run.as_of.isoformat(),
        "previous_month_end": previous.as_of.isoformat() if previous else None,
        "year_ago": year.as_of.isoformat() if year else None,
    }
    series = [
        {
            "kpi": code,
            "name": facts.names[code],
            "unit": DIGEST_UNIT[facts.units[code]],
            "slice": slice_,
            "values": facts.series(code, slice_),
        }
        for code, slice_ in sorted(
            {(c, s) for c, s, _ in facts.values},
            key=lambda cs: (cs[1] != here, _order(cs[0]), cs[1]),
        )
    ]
    data: dict[str, Any] = {
        "as_of": run.as_of.isoformat(),
        "slice": here,
        "dates": dates,
        "data_status": _data_status(run, selection),
        "series": series,
        "partial_month": {
            "days": run.as_of.day,
            "kpis": sorted(code for code in wanted if d.BY_CODE[code].month_to_date),
            "reason": (
                f"month-to-date figures cover the {run.as_of.day} days of the month to "
                f"{run.as_of.isoformat()}: they are not compared with the previous month-end's "
                "whole month"
            ),
        }
        if partial
        else None,
        "not_meaningful": sorted(
            not_meaningful, key=lambda n: (n["slice"] != here, n["kpi"], n["slice"], n["date"])
        ),
        "crossings": _crossings(
            facts, dates, [here, *sorted({s for _, s, _ in facts.values} - {here})]
        ),
        "movers": _movers(facts, dates) if dimension == "portfolio" else [],
    }
    return Digest(run=run, dimension=dimension, member=member, facts=facts, data=data)


def _order(code: str) -> int:
    return DIGEST_KPIS.index(code) if code in DIGEST_KPIS else len(DIGEST_KPIS)


def beyond_data_reason(as_of: date, through: date) -> str:
    """Why a snapshot dated after the book's data-through date is no statement of the book (the
    pages' beyond-data banner says the same)."""
    return (
        f"the snapshot of {as_of.isoformat()} is dated after the book's data ends "
        f"({through.isoformat()}): it counts no payment after that date, so it is a projection "
        "of unpaid schedules, not the book"
    )


def _data_status(run: SnapshotRun, selection: Selection) -> dict[str, Any]:
    """The run's status as the pages' header states it: basis, provisional and restated with
    their reasons, and the book's data-through date with the beyond-data flag (``Selection``'s,
    for the run's date) and its reason."""
    through = selection.data_through
    beyond = selection.as_of == run.as_of and selection.beyond_data
    return {
        "basis": run.basis,
        "provisional": run.provisional,
        "provisional_reasons": list(run.provisional_reasons or []),
        "restatement_reason": run.restatement_reason,
        "computed_at": run.computed_at.isoformat() if run.computed_at else None,
        "data_through": through.isoformat() if through else None,
        "beyond_data": beyond,
        "beyond_data_reason": beyond_data_reason(run.as_of, through) if beyond and through else "",
    }


def _crossings(facts: Facts, dates: dict[str, str | None], slices: list[str]) -> list[dict]:
    """KPIs whose threshold status changed since the previous month-end, worse or better."""
    now, before = dates["current"] or "", dates["previous_month_end"]
    if before is None:
        return []
    found = []
    for slice_ in slices:
        for code in DIGEST_KPIS:
            kpi = d.BY_CODE[code]
            if kpi.amber is None:
                continue
            a, b = facts.get(code, slice_, now), facts.get(code, slice_, before)
            if a is None or b is None or kpi.status(a) == kpi.status(b):
                continue
            found.append(
                {
                    "kpi": code,
                    "slice": slice_,
                    "from": kpi.status(b),
                    "to": kpi.status(a),
                    "amber": str(shown(kpi.unit, kpi.amber)),
                    "red": str(shown(kpi.unit, kpi.red)) if kpi.red is not None else None,
                    "date": now,
                    "compared_to": before,
                }
            )
    return found


def _movers(facts: Facts, dates: dict[str, str | None]) -> list[dict]:
    """For each mover KPI, the entities by the size of their change since the previous month-end."""
    now, before = dates["current"] or "", dates["previous_month_end"]
    if before is None:
        return []
    movers = []
    for code in MOVER_KPIS:
        changes = []
        for c, slice_, day in facts.values:
            if c != code or day != now or not slice_.startswith(f"{ENTITY}:"):
                continue
            b = facts.get(code, slice_, before)
            if b is None:
                continue
            delta = shown(facts.units[code], facts.values[(c, slice_, day)]) - shown(
                facts.units[code], b
            )
            changes.append((abs(delta), slice_, delta))
        for _, slice_, delta in sorted(changes, reverse=True)[:3]:
            movers.append({"kpi": code, "slice": slice_, "change": str(delta)})
    return movers


def _roll_rates(facts: Facts, run: SnapshotRun, previous: SnapshotRun | None) -> None:
    """The largest balances that moved bucket into this run, as facts ``roll_<from>_to_<to>``."""
    cells = list(
        RollRate.objects.filter(run=run)
        .exclude(from_bucket=F("to_bucket"))
        .order_by("-balance")
        .values_list("from_bucket", "to_bucket", "share")[:ROLL_CELLS]
    )
    before = {}
    if previous is not None:
        before = {
            (f, t): s
            for f, t, s in RollRate.objects.filter(run=previous).values_list(
                "from_bucket", "to_bucket", "share"
            )
        }
    for from_bucket, to_bucket, share in cells:
        code = f"roll_{from_bucket}_to_{to_bucket}"
        name = (
            f"Roll rate {BUCKET_LABELS.get(from_bucket, from_bucket)} → "
            f"{BUCKET_LABELS.get(to_bucket, to_bucket)}"
        )
        facts.add(code, "portfolio", run.as_of, share, "ratio", name)
        if previous is not None:
            facts.add(
                code,
                "portfolio",
                previous.as_of,
                before.get((from_bucket, to_bucket)),
                "ratio",
                name,
            )


def _vintages(facts: Facts, run: SnapshotRun, previous: SnapshotRun | None) -> None:
    """The most recent cohorts' ever-30+ share of disbursed principal, as facts."""
    points = list(
        VintagePoint.objects.filter(run=run, months_on_book__gte=1, disbursed__gt=0).order_by(
            "-cohort"
        )[:VINTAGE_COHORTS]
    )
    earlier = {}
    if previous is not None:
        earlier = {
            p.cohort: p
            for p in VintagePoint.objects.filter(
                run=previous, cohort__in=[p.cohort for p in points], disbursed__gt=0
            )
        }
    for point in points:
        code = f"vintage_{point.cohort:%Y_%m}_ever_30"
        name = f"Cohort {point.cohort:%Y-%m} ever 30+ DPD share"
        facts.add(code, "portfolio", run.as_of, point.ever_30 / point.disbursed, "ratio", name)
        if (p := earlier.get(point.cohort)) is not None and previous is not None:
            facts.add(code, "portfolio", previous.as_of, p.ever_30 / p.disbursed, "ratio", name)
