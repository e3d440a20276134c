"""docs/kpis.md, written from kpis.definitions so the page and the code cannot drift apart
(``manage.py kpi_docs`` rewrites it; a test fails when the file is stale)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from kpis import definitions as d

PATH = Path(settings.BASE_DIR) / "docs" / "kpis.md"


def kpi_docs_render() -> str:
    lines = [
        "# KPI definitions",
        "",
        f"Version {d.VERSION}. Generated from `kpis/definitions.py` by `manage.py kpi_docs`; do not edit by hand.",
        "As-of date R means end of day R; amounts are USD; ratios are fractions (0.05 = 5%).",
        f"Every KPI is stored for the portfolio and per {', '.join(x for x in d.DIMENSIONS if x != 'portfolio')}.",
        "",
        "## Shared rules",
        "",
        f"- **Outstanding principal.** {d.OB_RULE}",
        f"- **Days past due and write-off.** {d.DPD_RULE}",
        "- **Buckets.** " + "; ".join(label for _, label, *_ in d.BUCKETS) + ".",
        "- **Snapshots.** The first computation of a date is kept *as reported*; a recomputation whose numbers differ"
        " (a late correction), or any recomputation under a later definition version, is stored beside it as"
        " *restated*, with the reason. Every snapshot and value records the definition version that made it."
        " A snapshot is *provisional* while a source's latest import failed or tape-diff changes wait for review.",
        "",
        "## KPIs",
        "",
        "| code | name | unit | amber | red |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kpi in d.KPIS:
        lines.append(
            f"| `{kpi.code}` | {kpi.name} | {kpi.unit} | {kpi.amber if kpi.amber is not None else ''} | {kpi.red if kpi.red is not None else ''} |"
        )
    lines += [
        "",
        "## Tables stored with each snapshot",
        "",
        "- **Roll rates** (`kpis.RollRate`): for the previous month-end's loans, the share of each DPD bucket's"
        " balance found in each bucket at R (or repaid), weighted by the balance at the previous month-end.",
        "- **Vintages** (`kpis.VintagePoint`, month-ends only): per disbursement-month cohort and months on book,"
        " the cohort's disbursed principal, its written-off balance at R, and the principal of its loans that were"
        " 30+ DPD at any month-end up to R (ever-30+). Curves divide both by the disbursed principal.",
    ]
    for kpi in d.KPIS:
        lines += [
            "",
            f"### `{kpi.code}` — {kpi.name} (v{kpi.version}, {kpi.unit})",
            "",
            kpi.formula,
        ]
        if kpi.amber is not None:
            direction = "at or above" if kpi.higher_is_worse else "at or below"
            lines += ["", f"Amber {direction} {kpi.amber}, red {direction} {kpi.red}."]
        if kpi.example:
            lines += ["", f"*Example.* {kpi.example}"]
        if kpi.edge_cases:
            lines += ["", f"*Edge cases.* {kpi.edge_cases}"]
    return "\n".join(lines) + "\n"
