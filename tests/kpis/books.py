"""Small hand-built loan books for the KPI engine's golden tests and the dashboard tests: one
builder (Book), the books the tests read, each with its numbers worked out by hand.

Each function writes rows through tests/factories.py and returns the book; the test that reads it
works out every expected number by hand. Loan and customer ids are short and fixed ("L1", "C1")
so a test can name them; every book is written inside one test's rolled-back transaction (or
class, for the dashboards' ``setUpTestData``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from loans.models import Batch, Customer, Installment, Loan, MarketingSpend, Transaction
from tests.factories import (
    batch_create,
    customer_create,
    installment_create,
    loan_create,
    transaction_create,
)

ABACO_TECH = "Abaco Technologies"
ABACO_FIN = "Abaco Financial"
FACTORING = "factoring"
WORKING_CAPITAL = "working_capital"

GOLDEN_AS_OF = date(2025, 3, 31)


@dataclass
class Tape:
    """The four batches a Cascade tape load writes, one per file, as the importer does."""

    customers: Batch
    loans: Batch
    schedules: Batch
    transactions: Batch

    @classmethod
    def load(cls, *, source: str = "cascade") -> Tape:
        return cls(
            **{
                kind: batch_create(source=source, kind=kind)
                for kind in ("customers", "loans", "schedules", "transactions")
            }
        )

    def batches(self) -> list[Batch]:
        return [self.customers, self.loans, self.schedules, self.transactions]


@dataclass
class Book:
    tape: Tape = field(default_factory=Tape.load)
    customers: dict[str, Customer] = field(default_factory=dict)
    loans: dict[str, Loan] = field(default_factory=dict)
    # Customers with a name and a national id (pages show them), and the dates compute() snapshots.
    identities: bool = False
    month_ends: tuple[date, ...] = ()
    maturity: date | None = None  # every loan's; else a year after its disbursement
    company: str = ABACO_TECH  # a loan's unless it names its own

    @property
    def batches(self) -> dict[str, Batch]:
        return {batch.kind: batch for batch in self.tape.batches()}

    def customer(self, name: str) -> Customer:
        if name not in self.customers:
            identity = {"name": f"Name of {name}", "national_id": f"ID-{name}"}
            self.customers[name] = customer_create(
                customer_id=name,
                batch=self.tape.customers,
                **(identity if self.identities else {}),
            )
        return self.customers[name]

    def compute(self) -> dict[date, SnapshotRun]:
        """Snapshots at every month-end, in date order (roll rates read the month before).

        The tape's export runs to the last of them, as a Cascade export dated that day says
        (its loan and transaction batches record that cut-off): the book's data-through date."""
        if self.month_ends:
            for batch in (self.tape.loans, self.tape.transactions):
                if batch.data_through is None:
                    batch.data_through = max(self.month_ends)
                    batch.save(update_fields=["data_through"])
        return {day: snapshot_compute(as_of=day) for day in self.month_ends}

    def lend(
        self,
        name: str,
        *,
        customer: str,
        principal: str,
        on: date,
        company: str | None = None,
        product: str = FACTORING,
        rate: str = "0.24",
        currency: str = "USD",
        schedule: tuple[tuple[date, str], ...] = (),
        paid: tuple[tuple[date, str], ...] = (),
    ) -> Loan:
        """A loan, with its principal installments (``schedule``) and principal payments
        (``paid``) as (date, amount) pairs when given."""
        loan = loan_create(
            loan_id=name,
            customer=self.customer(customer),
            company=company or self.company,
            product_type=product,
            disburse_date=on,
            maturity_date=self.maturity or on + timedelta(days=365),
            disburse_principal=Decimal(principal),
            outstanding_balance=Decimal(principal),
            interest_rate=Decimal(rate),
            currency=currency,
            batch=self.tape.loans,
        )
        self.loans[name] = loan
        for due, amount in schedule:
            self.due(name, due, amount)
        for day, amount in paid:
            self.cash(name, day, amount)
        return loan

    def due(
        self,
        loan: str,
        on: date,
        principal: str,
        interest: str = "0",
        fees: str = "0",
        other: str = "0",
    ) -> Installment:
        return installment_create(
            loan=self.loans[loan],
            due_date=on,
            principal=Decimal(principal),
            interest=Decimal(interest),
            fees=Decimal(fees),
            other=Decimal(other),
            currency=self.loans[loan].currency,
            batch=self.tape.schedules,
        )

    def cash(
        self,
        loan: str,
        on: date,
        principal: str = "0",
        interest: str = "0",
        fees: str = "0",
        other: str = "0",
        to_tax: str = "0",
        kind: str = Transaction.Type.PAYMENT,
        batch: Batch | None = None,
    ) -> Transaction:
        return transaction_create(
            loan=self.loans[loan],
            transaction_type=kind,
            date=on,
            principal=Decimal(principal),
            interest=Decimal(interest),
            fees=Decimal(fees),
            other=Decimal(other),
            to_tax=Decimal(to_tax),
            currency=self.loans[loan].currency,
            batch=batch or self.tape.transactions,
        )


def golden_book() -> Book:
    """Seven loans of four customers, two entities and two products, read at 2025-03-31.

    L1  C1  Tech  factoring        11,000 @ 24%  2025-01-15  due 02-15 5,000 (paid 02-15);
                                                             due 03-15 6,000 +200 I +40 F +10 O;
                                                             paid 1,000 +200 I +40 F +10 O (+30 tax) ON R
                                                             → paid 6,000, OB 5,000, DPD 16 (03-15 unpaid)
    L2  C2  Tech  factoring         3,000 @ 36%  2025-03-10  due 04-10 → OB 3,000, DPD 0
    L3  C3  Fin   working_capital   1,000 @ 30%  2024-10-01  due 2024-11-01, unpaid → DPD 150
    L4  C1  Tech  factoring         4,000 @ 24%  2025-01-05  due 02-04, paid 02-04 → OB 0, no state
    L5  C4  Fin   factoring         1,500 @ 30%  2024-08-01  due 2024-09-01, 500 paid → DPD 211,
                                                             written off with 1,000
    L6  C3  Fin   working_capital   1,000 @ 18%  ON R        due 04-30 → OB 1,000, DPD 0
    L7  C2  Tech  factoring         2,000 @ 24%  2025-04-01  after R: in nothing at R
    """
    book = Book()
    book.lend("L1", customer="C1", principal="11000", on=date(2025, 1, 15), rate="0.24")
    book.due("L1", date(2025, 2, 15), "5000", interest="200")
    book.due("L1", date(2025, 3, 15), "6000", interest="200", fees="40", other="10")
    book.cash("L1", date(2025, 2, 15), "5000", interest="200")
    book.cash("L1", GOLDEN_AS_OF, "1000", interest="200", fees="40", other="10", to_tax="30")

    book.lend("L2", customer="C2", principal="3000", on=date(2025, 3, 10), rate="0.36")
    book.due("L2", date(2025, 4, 10), "3000", interest="90")

    book.lend(
        "L3",
        customer="C3",
        principal="1000",
        on=date(2024, 10, 1),
        company=ABACO_FIN,
        product=WORKING_CAPITAL,
        rate="0.30",
    )
    book.due("L3", date(2024, 11, 1), "1000", interest="30")

    book.lend("L4", customer="C1", principal="4000", on=date(2025, 1, 5), rate="0.24")
    book.due("L4", date(2025, 2, 4), "4000", interest="100")
    book.cash("L4", date(2025, 2, 4), "4000", interest="100")

    book.lend(
        "L5", customer="C4", principal="1500", on=date(2024, 8, 1), company=ABACO_FIN, rate="0.30"
    )
    book.due("L5", date(2024, 9, 1), "1500", interest="45")
    book.cash("L5", date(2024, 9, 15), "500", interest="45")

    book.lend(
        "L6",
        customer="C3",
        principal="1000",
        on=GOLDEN_AS_OF,
        company=ABACO_FIN,
        product=WORKING_CAPITAL,
        rate="0.18",
    )
    book.due("L6", date(2025, 4, 30), "1000", interest="15")

    book.lend("L7", customer="C2", principal="2000", on=date(2025, 4, 1), rate="0.24")
    book.due("L7", date(2025, 5, 1), "2000", interest="40")
    return book


def bullet_book(*, paid_on: date | None = None) -> Book:
    """One bullet loan: 1,000 lent 2025-01-01, all due 2025-01-31 with 30 interest; paid in full
    on ``paid_on`` when given."""
    book = Book()
    book.lend("B1", customer="C1", principal="1000", on=date(2025, 1, 1))
    book.due("B1", date(2025, 1, 31), "1000", interest="30")
    if paid_on is not None:
        book.cash("B1", paid_on, "1000", interest="30")
    return book


def instalment_book() -> Book:
    """3,000 lent 2025-01-01 in three instalments of 1,000 (+30 interest) due 02-01, 03-01, 04-01;
    paid 1,000 on 02-01 and 400 on 03-05 (a partial payment)."""
    book = Book()
    book.lend("I1", customer="C1", principal="3000", on=date(2025, 1, 1))
    for month in (2, 3, 4):
        book.due("I1", date(2025, month, 1), "1000", interest="30")
    book.cash("I1", date(2025, 2, 1), "1000", interest="30")
    book.cash("I1", date(2025, 3, 5), "400")
    return book


def prepaid_book() -> Book:
    """P1: the instalment schedule above, prepaid 2,500 on 2025-01-20.
    P2: 1,000 lent 2025-01-01, due 01-31, overpaid with 1,200 on 01-31."""
    book = Book()
    book.lend("P1", customer="C1", principal="3000", on=date(2025, 1, 1))
    for month in (2, 3, 4):
        book.due("P1", date(2025, month, 1), "1000", interest="30")
    book.cash("P1", date(2025, 1, 20), "2500")
    book.lend("P2", customer="C2", principal="1000", on=date(2025, 1, 1))
    book.due("P2", date(2025, 1, 31), "1000", interest="30")
    book.cash("P2", date(2025, 1, 31), "1200", interest="30")
    return book


def dpd_ladder_book(*, as_of: date, rungs: dict[int, str]) -> Book:
    """One loan per DPD at ``as_of``: loan "D<n>" has a single instalment of the given principal
    due ``n`` days before ``as_of`` and nothing paid (n = 0: due ON as_of)."""
    book = Book()
    for n, principal in rungs.items():
        due = as_of - timedelta(days=n)
        book.lend(f"D{n}", customer=f"C{n}", principal=principal, on=due - timedelta(days=30))
        book.due(f"D{n}", due, principal, interest="10")
    return book


def rebate_book() -> Book:
    """2,000 lent 2025-02-10, two instalments of 1,000 due 03-10 (+250 interest) and 04-10;
    03-10 paid in full, then a rebate of 125 interest on 03-20 (negative interest, no principal)."""
    book = Book()
    book.lend("R1", customer="C1", principal="2000", on=date(2025, 2, 10))
    book.due("R1", date(2025, 3, 10), "1000", interest="250")
    book.due("R1", date(2025, 4, 10), "1000", interest="250")
    book.cash("R1", date(2025, 3, 10), "1000", interest="250")
    book.cash("R1", date(2025, 3, 20), "0", interest="-125")
    return book


def reversal_book() -> Book:
    """1,000 lent 2025-01-01, due 02-01 with 20 interest; paid 02-01, and that payment reversed
    (bounced) on 02-03."""
    book = Book()
    book.lend("V1", customer="C1", principal="1000", on=date(2025, 1, 1))
    book.due("V1", date(2025, 2, 1), "1000", interest="20")
    book.cash("V1", date(2025, 2, 1), "1000", interest="20")
    book.cash("V1", date(2025, 2, 3), "1000", interest="20", kind=Transaction.Type.REVERSAL)
    return book


def write_off_book() -> Book:
    """1,000 lent 2025-01-01, due 02-01; written off explicitly on 03-01 (28 DPD); 300 recovered
    on 04-01."""
    book = Book()
    book.lend("W1", customer="C1", principal="1000", on=date(2025, 1, 1))
    book.due("W1", date(2025, 2, 1), "1000", interest="20")
    book.cash("W1", date(2025, 3, 1), "1000", kind=Transaction.Type.WRITE_OFF)
    book.cash("W1", date(2025, 4, 1), "300")
    return book


def two_currency_book() -> Book:
    """U1: 1,000 USD (C1, 24%) current; G1: 7,700 GTQ (C2, 30%), due 03-01 unpaid → 30 DPD at
    2025-03-31; G2: 2,300 GTQ (C3, 20%) current. All disbursed in 2025-01 or 2025-03."""
    book = Book()
    book.lend("U1", customer="C1", principal="1000", on=date(2025, 3, 3), rate="0.24")
    book.due("U1", date(2025, 4, 3), "1000", interest="20")
    book.lend(
        "G1", customer="C2", principal="7700", on=date(2025, 1, 30), rate="0.30", currency="GTQ"
    )
    book.due("G1", date(2025, 3, 1), "7700", interest="190")
    book.lend(
        "G2", customer="C3", principal="2300", on=date(2025, 3, 15), rate="0.20", currency="GTQ"
    )
    book.due("G2", date(2025, 4, 15), "2300", interest="40")
    return book


RESIDUAL_MONTH_ENDS = (date(2024, 12, 31), date(2025, 1, 31))


def residual_book() -> Book:
    """Loans repaid but for cents (definitions v2, RESIDUAL_TOLERANCE 0.02), read at 2024-12-31
    and 2025-01-31 (the tape's ABT - DSB0684-004, made small):

    CENT   C1  20,000.00  2024-11-20  due 12-10 6,595.91 (paid 12-10), 12-20 13,404.09;
                                      13,404.08 paid 2025-01-25 → 0.01 left
    THREE  C2   1,000.00  2024-12-01  due 12-25 1,000; 999.97 paid 2025-01-20 → 0.03 left
    TWO    C3     500.00  2025-01-05  due 01-25 500; 499.98 paid 01-25 → 0.02 left
    CUR    C1   2,000.00  2024-12-15  due 2025-02-15 2,000
    W      C4     300.00  2024-12-01  due 12-10 300; written off 2025-01-15, 299.99 recovered
                                      01-20 → 0.01 left
    LATE   C5     700.00  2024-11-25  due 12-15 700, unpaid
    """
    book = Book(month_ends=RESIDUAL_MONTH_ENDS)
    book.lend(
        "CENT",
        customer="C1",
        principal="20000.00",
        on=date(2024, 11, 20),
        schedule=((date(2024, 12, 10), "6595.91"), (date(2024, 12, 20), "13404.09")),
        paid=((date(2024, 12, 10), "6595.91"), (date(2025, 1, 25), "13404.08")),
    )
    book.lend(
        "THREE",
        customer="C2",
        principal="1000.00",
        on=date(2024, 12, 1),
        schedule=((date(2024, 12, 25), "1000.00"),),
        paid=((date(2025, 1, 20), "999.97"),),
    )
    book.lend(
        "TWO",
        customer="C3",
        principal="500.00",
        on=date(2025, 1, 5),
        schedule=((date(2025, 1, 25), "500.00"),),
        paid=((date(2025, 1, 25), "499.98"),),
    )
    book.lend(
        "CUR",
        customer="C1",
        principal="2000.00",
        on=date(2024, 12, 15),
        schedule=((date(2025, 2, 15), "2000.00"),),
    )
    book.lend(
        "W",
        customer="C4",
        principal="300.00",
        on=date(2024, 12, 1),
        schedule=((date(2024, 12, 10), "300.00"),),
    )
    book.cash("W", date(2025, 1, 15), "300.00", kind=Transaction.Type.WRITE_OFF)
    book.cash("W", date(2025, 1, 20), "299.99")
    book.lend(
        "LATE",
        customer="C5",
        principal="700.00",
        on=date(2024, 11, 25),
        schedule=((date(2024, 12, 15), "700.00"),),
    )
    return book


MONTH_BEFORE = date(2025, 2, 28)


def monthly_rates_book() -> Book:
    """For March 2025 against the 2025-02-28 snapshot (OB then 10,000):

    A   C1  6,000  2025-01-10  due 03-10, 04-10, 05-10 (2,000 each); paid 2,000 on 03-10 and
                               1,000 ahead of schedule on 03-20
    B   C2  1,000  2024-08-01  due 2024-09-15, unpaid: DPD 166 at 02-28, 197 at 03-31 → written off
    D   C3  3,000  2025-01-20  due 04-20
    A2  C1  1,000  2025-03-15  C1's second loan: not a new customer
    E   C4    500  2025-03-05  new customer in March
    F   C5    500  2025-03-25  new customer in March
    G   C6    500  2025-04-02  after R
    Marketing spend for March: 600 (meta) + 300 (google); 1,000 for February.
    """
    book = Book()
    book.lend("A", customer="C1", principal="6000", on=date(2025, 1, 10))
    for month in (3, 4, 5):
        book.due("A", date(2025, month, 10), "2000", interest="60")
    book.cash("A", date(2025, 3, 10), "2000", interest="60")
    book.cash("A", date(2025, 3, 20), "1000")
    book.lend("B", customer="C2", principal="1000", on=date(2024, 8, 1))
    book.due("B", date(2024, 9, 15), "1000", interest="30")
    book.lend("D", customer="C3", principal="3000", on=date(2025, 1, 20))
    book.due("D", date(2025, 4, 20), "3000", interest="90")
    for name, customer, on in (
        ("A2", "C1", date(2025, 3, 15)),
        ("E", "C4", date(2025, 3, 5)),
        ("F", "C5", date(2025, 3, 25)),
        ("G", "C6", date(2025, 4, 2)),
    ):
        principal = "1000" if name == "A2" else "500"
        book.lend(name, customer=customer, principal=principal, on=on)
        book.due(name, on + timedelta(days=30), principal, interest="10")
    spend = batch_create(kind=Batch.Kind.MARKETING_SPEND, source="meta")
    for month, channel, amount in (
        (date(2025, 3, 1), "meta", "600"),
        (date(2025, 3, 1), "google", "300"),
        (date(2025, 2, 1), "meta", "1000"),
    ):
        MarketingSpend.objects.create(
            month=month, channel=channel, spend=Decimal(amount), batch=spend
        )
    return book


# --- The dashboards' book -------------------------------------------------------------------------
# A small loan book for the dashboard tests, with snapshots at three month-ends.
#
# Every number the tests assert is worked out here by hand (KPI definitions version 1):
#
#     loan  customer  entity  product          principal  disbursed    schedule (unpaid unless said)
#     L1    C1        ABT     factoring        10,000     2025-01-10   02-10 5,000 (paid 02-10); 03-10 5,000
#     L2    C2        ABF     working_capital   4,000     2024-12-15   2025-01-15 4,000
#     L3    C3        ABT     factoring         2,000     2025-02-01   04-01 2,000
#     L4    C1        ABT     factoring         1,000     2025-01-20   02-20 1,000
#     =L5   +C5       ABF     factoring           500     2025-03-15   04-15 500   (ids that a spreadsheet would run)
#
# At 2025-03-31: L1 OB 5,000 DPD 21 (8-30), L2 4,000 DPD 75 (61-90), L3 2,000 current,
# L4 1,000 DPD 39 (31-60), =L5 500 current. OB 12,500; PAR30 = 5,000 / 12,500 = 0.40; PAR90 = 0.
# ABT slice: OB 8,000, PAR30 = 1,000 / 8,000 = 0.125. ABF slice: OB 4,500, PAR30 = 4,000 / 4,500.
# Disbursements in March: 500. Active borrowers: C1, C2, C3, +C5 = 4.
# Top borrowers: C1 6,000 (0.48), C2 4,000, C3 2,000, +C5 500; HHI = 48² + 32² + 16² + 4² = 3,600.
#
# At 2025-02-28: L1 5,000 current, L2 4,000 DPD 44 (31-60), L3 2,000 current, L4 1,000 DPD 8.
# OB 12,000; PAR30 = 4,000 / 12,000. At 2025-01-31: L1 10,000, L2 4,000 DPD 16, L4 1,000; OB 15,000.
# Roll rates 02-28 → 03-31: current (7,000) → 8-30 5,000 (L1), current 2,000 (L3);
# 31-60 → 61-90 all (L2); 8-30 → 31-60 all (L4).

ABT, ABF = "ABT", "ABF"
MONTH_ENDS = (date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31))
AS_OF = MONTH_ENDS[-1]


def dashboard_book() -> Book:
    """The dashboards' book (the notes above), snapshots at its three month-ends."""
    book = Book(identities=True, month_ends=MONTH_ENDS, maturity=date(2026, 12, 31), company=ABT)
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


def more_loans(book: Book, *, count: int) -> None:
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
