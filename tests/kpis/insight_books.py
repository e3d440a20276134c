"""The insights' golden set: snapshot pairs that reproduce, in small generated books, what the real
tape's month-ends showed (shared/data/cascade-tape-abaco, computed with ``compute_kpis
--backfill``; the tape itself never enters the repository or the tests):

| real month-ends          | what moved (whole portfolio)                               | book here |
| ------------------------ | ---------------------------------------------------------- | --------- |
| 2025-06-30 → 2025-07-31  | PAR30 3.63% → 5.84%: crosses its amber threshold (5%)      | ``par30_crossing_book`` |
| 2025-07-31 → 2025-08-31  | largest borrower's share 8.60% → 10.55%: crosses red (10%) | ``concentration_jump_book`` |
| 2024-08-31 → 2024-09-30  | collection rate 93.46% → 59.58%: falls through red (80%)   | ``collections_drop_book`` |

Each book gives the same figures at the same dates, worked out by hand in its docstring, and
spreads its loans over the two entities so each entity has an insight too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from kpis.engine import snapshot_compute
from kpis.models import SnapshotRun
from tests.kpis.books import ABACO_FIN, ABACO_TECH, Book


@dataclass
class Golden:
    name: str
    book: Book
    before: date
    after: date
    # The facts the summary must state: (kpi, slice, direction, crossing word or "").
    facts: tuple[tuple[str, str, str, str], ...]

    def compute(self) -> tuple[SnapshotRun, SnapshotRun]:
        return snapshot_compute(as_of=self.before), snapshot_compute(as_of=self.after)


def par30_crossing_book() -> Golden:
    """Six loans disbursed 2025-04-15, 100,000 in all, nothing repaid:
    H1 to H3 (Tech) and H4 (Fin) 23,540 each, due 2025-12-31: current;
    LA 3,630 due 2025-05-20 unpaid: 41 DPD at 06-30, 72 at 07-31;
    LB 2,210 due 2025-06-25 unpaid: 5 DPD at 06-30, 36 at 07-31.
    PAR30 at 06-30 = 3,630 / 100,000 = 3.63% (ok); at 07-31 = 5,840 / 100,000 = 5.84% (amber)."""
    book = Book()
    on = date(2025, 4, 15)
    for i in range(1, 5):
        company = ABACO_FIN if i == 4 else ABACO_TECH
        book.lend(f"H{i}", customer=f"C{i}", principal="23540", on=on, company=company)
        book.due(f"H{i}", date(2025, 12, 31), "23540")
    book.lend("LA", customer="C5", principal="3630", on=on)
    book.due("LA", date(2025, 5, 20), "3630")
    book.lend("LB", customer="C6", principal="2210", on=on)
    book.due("LB", date(2025, 6, 25), "2210")
    return Golden(
        "PAR30 crossing its threshold (real month-ends 2025-06-30 → 2025-07-31)",
        book,
        date(2025, 6, 30),
        date(2025, 7, 31),
        (("par_30", "portfolio", "rose", "into its amber threshold"),),
    )


def concentration_jump_book() -> Golden:
    """Twenty-one loans disbursed 2025-06-10: CB's 8,600 (Tech, due 2025-12-31) and twenty of
    4,570 (O1 to O10 Tech, O11 to O20 Fin), each with 924.15 due and paid on 2025-08-15 and the rest due
    2025-12-31. At 07-31: OB 100,000, largest share 8,600 / 100,000 = 8.60% (amber); at 08-31:
    OB 8,600 + 20 x 3,645.85 = 81,517, largest share 8,600 / 81,517 = 10.55% (red)."""
    book = Book()
    on = date(2025, 6, 10)
    book.lend("CB", customer="CB", principal="8600", on=on)
    book.due("CB", date(2025, 12, 31), "8600")
    for i in range(1, 21):
        company = ABACO_FIN if i > 10 else ABACO_TECH
        book.lend(f"O{i}", customer=f"C{i}", principal="4570", on=on, company=company)
        book.due(f"O{i}", date(2025, 8, 15), "924.15")
        book.due(f"O{i}", date(2025, 12, 31), "3645.85")
        book.cash(f"O{i}", date(2025, 8, 15), "924.15")
    return Golden(
        "a concentration jump (real month-ends 2025-07-31 → 2025-08-31)",
        book,
        date(2025, 7, 31),
        date(2025, 8, 31),
        (("top_1_share", "portfolio", "rose", "into its red threshold"),),
    )


def collections_drop_book() -> Golden:
    """Ten loans of 3,000 disbursed 2024-07-10 (K1 to K5 Tech, K6 to K10 Fin), 1,000 principal due on
    the 20th of August, September and October. August: K1 to K9 pay 1,000, K10 pays 346 → 9,346 /
    10,000 = 93.46% (ok). September: K1 to K5 pay 1,000, K6 pays 958 → 5,958 / 10,000 = 59.58% (red)."""
    book = Book()
    on = date(2024, 7, 10)
    for i in range(1, 11):
        company = ABACO_FIN if i > 5 else ABACO_TECH
        book.lend(f"K{i}", customer=f"C{i}", principal="3000", on=on, company=company)
        for month in (8, 9, 10):
            book.due(f"K{i}", date(2024, month, 20), "1000")
        book.cash(f"K{i}", date(2024, 8, 20), "346" if i == 10 else "1000")
        if i <= 6:
            book.cash(f"K{i}", date(2024, 9, 20), "958" if i == 6 else "1000")
    return Golden(
        "a collections drop (real month-ends 2024-08-31 → 2024-09-30)",
        book,
        date(2024, 8, 31),
        date(2024, 9, 30),
        (("collection_rate", "portfolio", "fell", "into its red threshold"),),
    )


GOLDEN = (par30_crossing_book, concentration_jump_book, collections_drop_book)
