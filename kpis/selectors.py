"""Reads of KPI snapshots for the dashboards: one function per page, a fixed number of indexed
queries each, never a recomputation (DESIGN.md "Snapshots"; numbers come from kpis.engine runs).

Every page reads the same selection (as-of date, basis, portfolio slice) through ``_selection``;
values reach templates already formatted, and every table also comes out as plain rows for the
CSV/XLSX exports (``tables``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Q, QuerySet, Sum

from kpis import definitions as d
from kpis.engine import month_end
from kpis.models import KpiValue, LoanState, RollRate, SnapshotRun, VintagePoint
from loans.models import Batch, BatchChange, Customer, Loan
from loans.selectors import batches_latest_per_source

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
SLICE_DIMENSIONS = {"company": "company", "product": "product_type", "currency": "currency"}
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


def _plain(value: object) -> object:
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

    @property
    def query(self) -> dict[str, str]:
        """The filters as query-string parameters (links to other pages keep them)."""
        q = {}
        if self.as_of:
            q["as_of"] = self.as_of.isoformat()
        if self.basis != SnapshotRun.Basis.AS_REPORTED:
            q["basis"] = self.basis
        if self.dimension != "portfolio":
            q["dimension"], q["member"] = self.dimension, self.member
        return q

    @property
    def qs(self) -> str:
        return urlencode(self.query)

    def run_at(self, day: date) -> SnapshotRun | None:
        """The run of ``day`` on the selected basis (as reported when the date has no restatement)."""
        found = None
        for run in self.runs:
            if run.as_of == day:
                if run.basis == self.basis:
                    return run
                if run.basis == SnapshotRun.Basis.AS_REPORTED:
                    found = run
        return found

    def month_end_runs(self, *, months: int) -> list[SnapshotRun]:
        """The last ``months`` month-end runs up to the selected date, oldest first."""
        days = sorted(
            {r.as_of for r in self.runs if r.as_of <= self.as_of and r.as_of == month_end(r.as_of)}
        )[-months:]
        return [run for day in days if (run := self.run_at(day)) is not None]


def _selection(*, as_of: date | None, basis: str, dimension: str, member: str) -> Selection:
    """Resolve the filters: one query for the runs (a few hundred rows at most, one per date and
    basis) and one for the slices the chosen run has."""
    runs = list(
        SnapshotRun.objects.only(
            "as_of", "basis", "provisional", "provisional_reasons", "computed_at", "loans", "job"
        ).order_by("-as_of", "basis")
    )
    dates = sorted({r.as_of for r in runs}, reverse=True)
    chosen = as_of if as_of in dates else (dates[0] if dates else None)
    if basis not in SnapshotRun.Basis.values:
        basis = SnapshotRun.Basis.AS_REPORTED
    if dimension not in SLICE_DIMENSIONS:
        dimension, member = "portfolio", ""
    selection = Selection(
        dates=dates,
        as_of=chosen,
        basis=basis,
        run=None,
        has_restated=any(r.as_of == chosen and r.basis == SnapshotRun.Basis.RESTATED for r in runs),
        dimension=dimension,
        member=member,
        runs=runs,
    )
    if chosen is None:
        return selection
    selection.run = selection.run_at(chosen)
    selection.basis = selection.run.basis
    members = defaultdict(list)
    for dim, mem in (
        KpiValue.objects.filter(run=selection.run, code="outstanding_principal")
        .exclude(dimension="portfolio")
        .order_by("dimension", "member")
        .values_list("dimension", "member")
    ):
        members[dim].append(mem)
    selection.members = dict(members)
    if dimension != "portfolio" and member not in selection.members.get(dimension, []):
        selection.dimension, selection.member = "portfolio", ""
    return selection


def _slice_filter(selection: Selection) -> Q:
    """LoanState rows of the selected slice."""
    if selection.dimension == "portfolio":
        return Q()
    return Q(**{SLICE_DIMENSIONS[selection.dimension]: selection.member})


def _values(
    *, runs: list[SnapshotRun], codes, selection: Selection, all_slices: bool = False
) -> dict[tuple[int, str, str, str], KpiValue]:
    """KPI values keyed by (run id, code, dimension, member): one query."""
    found = KpiValue.objects.filter(run__in=[r.pk for r in runs], code__in=list(codes))
    if not all_slices:
        found = found.filter(dimension=selection.dimension, member=selection.member)
    return {(v.run_id, v.code, v.dimension, v.member): v for v in found}


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
                _plain(h.value),
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
    selection = _selection(as_of=as_of, basis=basis, dimension=dimension, member=member)
    batches = batches_latest_per_source()
    if selection.run is None:
        return Overview(selection, Loan.objects.exists(), [], None, None, {}, batches)
    previous_day = selection.as_of.replace(day=1) - timedelta(days=1)
    year_day = _year_ago(selection.as_of)
    previous, year = selection.run_at(previous_day), selection.run_at(year_day)
    trend_runs = selection.month_end_runs(months=TREND_MONTHS)
    runs = [r for r in {selection.run, previous, year, *trend_runs} if r is not None]
    values = _values(runs=runs, codes={*HEADLINE, *TREND}, selection=selection)

    def value(run: SnapshotRun | None, code: str) -> Decimal | None:
        if run is None:
            return None
        found = values.get((run.pk, code, selection.dimension, selection.member))
        return found.value if found else None

    headlines = []
    for code in HEADLINE:
        kpi = d.BY_CODE[code]
        now = value(selection.run, code)
        headlines.append(
            Headline(
                code=code,
                name=kpi.name,
                unit=kpi.unit,
                value=now,
                display=display(kpi.unit, now),
                status=kpi.status(now),
                formula=kpi.formula,
                version=kpi.version,
                vs_month=change_display(kpi.unit, now, value(previous, code)),
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
        [r.as_of, *[display(d.BY_CODE[code].unit, value(r, code)) for code in TREND]]
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


# Risk ---------------------------------------------------------------------------------------


@dataclass
class Risk:
    selection: Selection
    buckets: list[dict]
    par_by_slice: list[dict]
    roll_from: date | None
    roll_rows: list[dict]
    vintages: dict
    rates: list[dict]

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
                    _plain(b["balance"]),
                    _plain(b["count"]),
                    _plain(b["share"]),
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
                    _plain(r["ob"]),
                    *[_plain(r["par"][n]) for n in d.PAR_DAYS],
                ]
                for r in self.par_by_slice
            ],
        )
        roll = (
            ["from_bucket", *ROLL_TO],
            [[r["from"], *[_plain(c["share"]) for c in r["cells"]]] for r in self.roll_rows],
        )
        vintage = (
            ["cohort", "months_on_book", "disbursed", "written_off", "ever_30"],
            [
                [
                    p.cohort,
                    p.months_on_book,
                    _plain(p.disbursed),
                    _plain(p.written_off),
                    _plain(p.ever_30),
                ]
                for p in self.vintages["points"]
            ],
        )
        rates = (
            ["kpi", "name", "value"],
            [[r["code"], r["name"], _plain(r["value"])] for r in self.rates],
        )
        return {
            "buckets": buckets,
            "par": par,
            "roll_rates": roll,
            "vintages": vintage,
            "rates": rates,
        }


RATE_CODES = ("liquidation_rate", "cdr", "smm", "cpr")


def risk_read(*, as_of: date | None, basis: str, dimension: str, member: str) -> Risk:
    """DPD buckets, PAR per slice, the roll-rate matrix, vintage curves and CDR/CPR."""
    selection = _selection(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if selection.run is None:
        return Risk(selection, [], [], None, [], {"points": [], "chart": {}}, [])
    run = selection.run
    bucket_codes = [f"bucket_{m}_{code}" for m in ("balance", "count") for code, *_ in d.BUCKETS]
    par_codes = [f"par_{n}" for n in d.PAR_DAYS]
    values = _values(
        runs=[run],
        codes=[*bucket_codes, *par_codes, "outstanding_principal", *RATE_CODES],
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
                        "alpha": f"{float(c.share) * 0.85:.2f}" if c else "0",
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
    rates = [
        {
            "code": code,
            "name": d.BY_CODE[code].name,
            "value": value(code),
            "display": display("ratio", value(code)),
            "status": d.BY_CODE[code].status(value(code)),
            "formula": d.BY_CODE[code].formula,
        }
        for code in RATE_CODES
    ]
    return Risk(
        selection,
        buckets,
        par_by_slice,
        selection.as_of.replace(day=1) - timedelta(days=1),
        roll_rows,
        {"points": points, "chart": chart},
        rates,
    )


# Concentration ------------------------------------------------------------------------------


@dataclass
class Concentration:
    selection: Selection
    borrowers: list[dict]
    measures: list[Headline]
    can_see_pii: bool

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        return {
            "top_borrowers": (
                [
                    "rank",
                    "customer_id",
                    "name",
                    "national_id",
                    "outstanding_principal",
                    "share",
                    "loans",
                ],
                [
                    [
                        b["rank"],
                        b["customer_id"],
                        b["name"],
                        b["national_id"],
                        _plain(b["ob"]),
                        _plain(b["share"]),
                        b["loans"],
                    ]
                    for b in self.borrowers
                ],
            ),
            "measures": (
                ["kpi", "name", "value"],
                [[m.code, m.name, _plain(m.value)] for m in self.measures],
            ),
        }


CONCENTRATION_CODES = (
    "top_1_share",
    "top_10_share",
    "hhi",
    "active_borrowers",
    "repeat_borrower_rate",
    "outstanding_principal",
)


def concentration_read(
    *, as_of: date | None, basis: str, dimension: str, member: str, can_see_pii: bool
) -> Concentration:
    """Top-10 borrowers by OB at the date (personal data masked without clearance), HHI and
    borrower counts."""
    from compliance.classification import mask

    selection = _selection(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if selection.run is None:
        return Concentration(selection, [], [], can_see_pii)
    values = _values(runs=[selection.run], codes=CONCENTRATION_CODES, selection=selection)
    measures = []
    for code in CONCENTRATION_CODES:
        kpi = d.BY_CODE[code]
        found = values.get((selection.run.pk, code, selection.dimension, selection.member))
        v = found.value if found else None
        measures.append(
            Headline(
                code,
                kpi.name,
                kpi.unit,
                v,
                display(kpi.unit, v),
                kpi.status(v),
                kpi.formula,
                kpi.version,
            )
        )
    total = measures[-1].value
    # One grouped read of the run's loan states (index run, dpd narrows it to the run).
    top = list(
        LoanState.objects.filter(
            _slice_filter(selection), run=selection.run, outstanding_principal__gt=0
        )
        .values("customer_id")
        .annotate(ob=Sum("outstanding_principal"), loans=Count("id"))
        .order_by("-ob", "customer_id")[:10]
    )
    customers = Customer.objects.in_bulk([row["customer_id"] for row in top])
    borrowers = []
    for rank, row in enumerate(top, start=1):
        customer = customers.get(row["customer_id"])
        name = customer.name if customer else ""
        national_id = customer.national_id if customer else ""
        borrowers.append(
            {
                "rank": rank,
                "customer_id": customer.customer_id if customer else str(row["customer_id"]),
                "name": name if can_see_pii else mask(name),
                "national_id": national_id if can_see_pii else mask(national_id),
                "ob": row["ob"],
                "ob_display": display("USD", row["ob"]),
                "share": row["ob"] / total if total else None,
                "share_display": display("ratio", row["ob"] / total) if total else "",
                "loans": row["loans"],
            }
        )
    return Concentration(selection, borrowers, measures, can_see_pii)


# Drill-down ---------------------------------------------------------------------------------


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

    buckets = [(code, label) for code, label, *_ in d.BUCKETS]

    @property
    def filter_qs(self) -> str:
        """The drill-down's own filter, kept by sort, page and slice links."""
        return f"bucket={self.bucket}" if self.bucket else f"min_dpd={self.min_dpd}"

    def tables(self) -> dict[str, tuple[list[str], Rows]]:
        rows = (
            [
                s.loan.loan_id,
                s.loan.customer.customer_id,
                s.company,
                s.product_type,
                s.currency,
                s.dpd,
                s.bucket,
                _plain(s.outstanding_principal),
                _plain(s.written_off_balance),
                _plain(s.interest_rate),
            ]
            for s in (self.queryset.iterator(chunk_size=2000) if self.queryset is not None else [])
        )
        head = [
            "loan_id",
            "customer_id",
            "company",
            "product_type",
            "currency",
            "dpd",
            "bucket",
            "outstanding_principal",
            "written_off_balance",
            "interest_rate",
        ]
        return {"loans": (head, rows)}


SORTS = {
    "dpd": ("-dpd", "-id"),
    "-dpd": ("dpd", "id"),
    "outstanding": ("-outstanding_principal", "-id"),
    "-outstanding": ("outstanding_principal", "id"),
}


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
) -> Drilldown:
    """The loan states behind a bucket or a PAR number, one page at a time.

    The total comes from the run's stored bucket counts (plus, for a PAR threshold inside a
    bucket, a count over the index range of that bucket's upper days), never a count of the run.
    """
    selection = _selection(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if bucket not in BUCKET_LABELS:
        bucket = ""
    if not bucket and min_dpd is None:
        min_dpd = 1
    sort = sort if sort in SORTS else "dpd"
    if selection.run is None:
        return Drilldown(selection, bucket, min_dpd, sort, 1, 1, 0, [], "No snapshot")
    run = selection.run
    states = LoanState.objects.filter(_slice_filter(selection), run=run)
    if bucket:
        states = states.filter(bucket=bucket)
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
    values = _values(runs=[run], codes=[f"bucket_count_{c}" for c in counted], selection=selection)
    total = int(sum((v.value or 0) for v in values.values()))
    if straddle is not None:
        total += LoanState.objects.filter(
            _slice_filter(selection),
            run=run,
            dpd__gte=min_dpd,
            dpd__lte=straddle[1],
            written_off=False,
        ).count()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    ordered = states.select_related("loan__customer").order_by(*SORTS[sort])
    start = (page - 1) * PAGE_SIZE
    rows = list(ordered[start : start + PAGE_SIZE])
    return Drilldown(selection, bucket, min_dpd, sort, page, pages, total, rows, title, ordered)


# Loan page ----------------------------------------------------------------------------------


@dataclass
class LoanHistory:
    loan: Loan
    installments: list
    transactions: list
    states: list[LoanState]
    log_entries: list[LogEntry]
    changes: list[BatchChange]
    batches: list[Batch]
    can_see_pii: bool
    customer_name: str


def loan_read(*, loan_pk: int, can_see_pii: bool) -> LoanHistory | None:
    """A loan with its schedule, cash flows, state per snapshot, change history and batches."""
    from compliance.classification import mask

    loan = Loan.objects.select_related("customer", "batch").filter(pk=loan_pk).first()
    if loan is None:
        return None
    installments = list(loan.installments.order_by("due_date"))
    transactions = list(loan.transactions.order_by("date", "sequence"))
    states = list(
        LoanState.objects.filter(loan=loan)
        .select_related("run")
        .order_by("-run__as_of", "run__basis")
    )
    log_entries = list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Loan), object_pk=str(loan.pk)
        )
        .select_related("actor")
        .order_by("-timestamp")
    )
    # BatchChange keys are the tape's natural keys: "L1", "L1 due 2025-01-31", "L1 PAYMENT ...".
    changes = list(
        BatchChange.objects.filter(Q(key=loan.loan_id) | Q(key__startswith=f"{loan.loan_id} "))
        .select_related("batch", "reviewed_by")
        .order_by("-batch__created_at", "kind", "key")
    )
    batch_ids = {loan.batch_id, loan.customer.batch_id}
    batch_ids |= {row.batch_id for row in installments} | {row.batch_id for row in transactions}
    batch_ids |= {change.batch_id for change in changes}
    batches = list(Batch.objects.filter(pk__in=batch_ids).order_by("-created_at"))
    name = loan.customer.name
    return LoanHistory(
        loan,
        installments,
        transactions,
        states,
        log_entries,
        changes,
        batches,
        can_see_pii,
        name if can_see_pii else mask(name),
    )
