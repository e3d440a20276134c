"""Concentration page: top borrowers, HHI and borrower counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db.models import F

from kpis.models import TopBorrower
from kpis.selectors.common import (
    Headline,
    Rows,
    Selection,
    display,
    headline_of,
    plain,
    selection_read,
    value_at,
    values_read,
)
from loans.models import Customer


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
                        plain(b["ob"]),
                        plain(b["share"]),
                        b["loans"],
                    ]
                    for b in self.borrowers
                ],
            ),
            "measures": (
                ["kpi", "name", "value"],
                [[m.code, m.name, plain(m.value)] for m in self.measures],
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

    selection = selection_read(as_of=as_of, basis=basis, dimension=dimension, member=member)
    if selection.run is None:
        return Concentration(selection, [], [], can_see_pii)
    values = values_read(runs=[selection.run], codes=CONCENTRATION_CODES, selection=selection)
    measures = [
        headline_of(code, value_at(values, selection.run, code, selection))
        for code in CONCENTRATION_CODES
    ]
    total = measures[-1].value
    # Ranked by the engine with the snapshot (kpis.engine.facts.TOP_CUSTOMERS).
    top = list(
        TopBorrower.objects.filter(
            run=selection.run, dimension=selection.dimension, member=selection.member
        )
        .order_by("rank")
        .values("rank", "customer_id", "loans", ob=F("outstanding_principal"))
    )
    customers = Customer.objects.only("customer_id", "name", "national_id").in_bulk(
        [row["customer_id"] for row in top]
    )
    borrowers = []
    for row in top:
        customer = customers.get(row["customer_id"])
        name = customer.name if customer else ""
        national_id = customer.national_id if customer else ""
        borrowers.append(
            {
                "rank": row["rank"],
                "pk": customer.pk if customer else None,
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
