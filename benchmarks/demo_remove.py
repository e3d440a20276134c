"""Demo data removal at scale (issue 17): `demo_data --remove` on a book holding the demo tape
(5,000 loans) beside a million real loans; target under 30 s.

The demo tape is loaded into the benchmark book (its ids and entities start ``DEMO-``, so it
shares no key with the book's own loans), then removed by the command as an operator runs it.
The recomputation of the snapshots it touched is queued for the task cluster, as in production,
and is not part of the figure. Yardstick, in the same run: the dry run (``--remove --dry-run``),
which finds and counts the same rows through the same indexes and deletes nothing; the ratio is
what deleting them costs beyond finding them. The real rows are counted before and after: the
removal must leave every one."""

from __future__ import annotations

import io
import time

from django.core.management import call_command

from loans.demo import DEMO_SOURCE
from loans.models import Batch, Installment, Loan, Transaction

DEMO_LOANS = 5000


def run() -> None:
    if not Loan.objects.exists():
        print(
            "demo_remove: no loans in the benchmark database; run the tape_import benchmark first"
        )
        return
    if not Batch.objects.filter(source=DEMO_SOURCE).exists():
        started = time.perf_counter()
        call_command("demo_data", "--force", "--loans", str(DEMO_LOANS), stdout=io.StringIO())
        print(f"demo tape of {DEMO_LOANS:,} loans loaded in {time.perf_counter() - started:.1f} s")
    real_loans = Loan.objects.exclude(batch__source=DEMO_SOURCE).count()
    demo_loans = Loan.objects.filter(batch__source=DEMO_SOURCE).count()
    exact_before = (
        real_loans,
        Installment.objects.exclude(loan__batch__source=DEMO_SOURCE).count(),
        Transaction.objects.exclude(loan__batch__source=DEMO_SOURCE).count(),
    )
    print(
        f"book: {real_loans:,} real loans ({exact_before[1]:,} installments, "
        f"{exact_before[2]:,} transactions) and {demo_loans:,} demo loans"
    )

    started = time.perf_counter()
    call_command("demo_data", "--remove", "--dry-run", stdout=io.StringIO())
    floor = time.perf_counter() - started

    out = io.StringIO()
    started = time.perf_counter()
    call_command("demo_data", "--remove", stdout=out)
    seconds = time.perf_counter() - started
    print(
        f"demo_data --remove: {seconds:.1f} s (target < 30 s); the dry run finding the same rows: "
        f"{floor:.1f} s, ratio {seconds / max(floor, 1e-3):.1f}x"
    )
    for line in out.getvalue().splitlines():
        print(f"  {line}")
    exact_after = (
        Loan.objects.count(),
        Installment.objects.count(),
        Transaction.objects.count(),
    )
    same = (
        "unchanged" if exact_after == exact_before else f"CHANGED: {exact_before} -> {exact_after}"
    )
    print(f"real loans, installments and transactions after the removal: {same}")
