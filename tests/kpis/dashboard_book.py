"""A small loan book for the dashboard tests, with snapshots at three month-ends.

Every number the tests assert is worked out here by hand (KPI definitions version 1):

    loan  customer  entity  product          principal  disbursed    schedule (unpaid unless said)
    L1    C1        ABT     factoring        10,000     2025-01-10   02-10 5,000 (paid 02-10); 03-10 5,000
    L2    C2        ABF     working_capital   4,000     2024-12-15   2025-01-15 4,000
    L3    C3        ABT     factoring         2,000     2025-02-01   04-01 2,000
    L4    C1        ABT     factoring         1,000     2025-01-20   02-20 1,000
    =L5   +C5       ABF     factoring           500     2025-03-15   04-15 500   (ids that a spreadsheet would run)

At 2025-03-31: L1 OB 5,000 DPD 21 (8-30), L2 4,000 DPD 75 (61-90), L3 2,000 current,
L4 1,000 DPD 39 (31-60), =L5 500 current. OB 12,500; PAR30 = 5,000 / 12,500 = 0.40; PAR90 = 0.
ABT slice: OB 8,000, PAR30 = 1,000 / 8,000 = 0.125. ABF slice: OB 4,500, PAR30 = 4,000 / 4,500.
Disbursements in March: 500. Active borrowers: C1, C2, C3, +C5 = 4.
Top borrowers: C1 6,000 (0.48), C2 4,000, C3 2,000, +C5 500; HHI = 48² + 32² + 16² + 4² = 3,600.

At 2025-02-28: L1 5,000 current, L2 4,000 DPD 44 (31-60), L3 2,000 current, L4 1,000 DPD 8.
OB 12,000; PAR30 = 4,000 / 12,000. At 2025-01-31: L1 10,000, L2 4,000 DPD 16, L4 1,000; OB 15,000.
Roll rates 02-28 → 03-31: current (7,000) → 8-30 5,000 (L1), current 2,000 (L3);
31-60 → 61-90 all (L2); 8-30 → 31-60 all (L4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from loans.models import Batch, Customer, Loan, Transaction
from tests.factories import (
    batch_create,
    customer_create,
    installment_create,
    loan_create,
    transaction_create,
)

ABT, ABF = "ABT", "ABF"
MONTH_ENDS = (date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31))
AS_OF = MONTH_ENDS[-1]


@dataclass
class DashboardBook:
    batches: dict[str, Batch] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    loans: dict[str, Loan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batches = {
            kind: batch_create(kind=kind)
            for kind in ("customers", "loans", "schedules", "transactions")
        }

    def lend(
        self,
        name: str,
        *,
        customer: str,
        principal: str,
        on: date,
        company: str = ABT,
        product: str = "factoring",
        schedule: tuple[tuple[date, str], ...] = (),
        paid: tuple[tuple[date, str], ...] = (),
    ) -> Loan:
        if customer not in self.customers:
            self.customers[customer] = customer_create(
                customer_id=customer,
                name=f"Name of {customer}",
                national_id=f"ID-{customer}",
                batch=self.batches["customers"],
            )
        loan = loan_create(
            loan_id=name,
            customer=self.customers[customer],
            company=company,
            product_type=product,
            disburse_date=on,
            maturity_date=date(2026, 12, 31),
            disburse_principal=Decimal(principal),
            outstanding_balance=Decimal(principal),
            batch=self.batches["loans"],
        )
        for due, amount in schedule:
            installment_create(
                loan=loan,
                due_date=due,
                principal=Decimal(amount),
                interest=Decimal("0"),
                batch=self.batches["schedules"],
            )
        for day, amount in paid:
            transaction_create(
                loan=loan,
                transaction_type=Transaction.Type.PAYMENT,
                date=day,
                principal=Decimal(amount),
                interest=Decimal("0"),
                batch=self.batches["transactions"],
            )
        self.loans[name] = loan
        return loan

    def compute(self) -> dict[date, SnapshotRun]:
        """Snapshots at every month-end, in date order (roll rates read the month before)."""
        return {day: snapshot_compute(as_of=day) for day in MONTH_ENDS}


def dashboard_book() -> DashboardBook:
    book = DashboardBook()
    book.lend(
        "L1",
        customer="C1",
        principal="10000",
        on=date(2025, 1, 10),
        schedule=((date(2025, 2, 10), "5000"), (date(2025, 3, 10), "5000")),
        paid=((date(2025, 2, 10), "5000"),),
    )
    book.lend(
        "L2",
        customer="C2",
        principal="4000",
        on=date(2024, 12, 15),
        company=ABF,
        product="working_capital",
        schedule=((date(2025, 1, 15), "4000"),),
    )
    book.lend(
        "L3",
        customer="C3",
        principal="2000",
        on=date(2025, 2, 1),
        schedule=((date(2025, 4, 1), "2000"),),
    )
    book.lend(
        "L4",
        customer="C1",
        principal="1000",
        on=date(2025, 1, 20),
        schedule=((date(2025, 2, 20), "1000"),),
    )
    book.lend(
        "=L5",
        customer="+C5",
        principal="500",
        on=date(2025, 3, 15),
        company=ABF,
        schedule=((date(2025, 4, 15), "500"),),
    )
    return book


def more_loans(book: DashboardBook, *, count: int) -> None:
    """Extra loans spread over the buckets, to show query counts do not grow with the book."""
    for n in range(count):
        book.lend(
            f"X{n}",
            customer=f"CX{n}",
            principal="700",
            on=date(2025, 1, 5 + n % 20),
            company=ABT if n % 2 else ABF,
            schedule=((date(2025, 2, 5 + n % 20), "300"), (date(2025, 3, 5 + n % 20), "400")),
            paid=((date(2025, 2, 5 + n % 20), "300"),) if n % 3 else (),
        )
