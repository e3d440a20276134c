"""Tape import speed (issue: loan tape import).

Figures: rows per second end to end for a synthetic tape (loans, schedules, transactions,
customers) next to a bare COPY of the same rows into unindexed tables on the same server, as a
ratio; the Python process's peak memory; a re-import of identical bytes; a re-import with 1% of
loans changed; and Django's bulk_create on a sample, for scale.
"""

from __future__ import annotations

import csv
import resource
import shutil
import statistics
import time
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from loans.demo import tape_generate
from loans.services import tape_import

OUT = Path(settings.BASE_DIR) / "benchmarks" / "out"
TABLES = [
    "loans_batchchange",
    "loans_transaction",
    "loans_installment",
    "loans_loan",
    "loans_customer",
]


def _rows(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.csv"):
        with path.open("rb") as f:
            total += sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - 1
    return total


def _empty_book() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)}, loans_upload_batches, loans_batch CASCADE")


def _settle() -> None:
    """Start each timed run from the same state: write out what the previous run left in the
    WAL and the buffers, so no run pays for another's checkpoint. Needs the pg_checkpoint role
    (or superuser, as on the embedded server); skipped without it."""
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                cursor.execute("CHECKPOINT")
        except DatabaseError:
            pass


def _bare_copy(folder: Path) -> float:
    """COPY every file into an unindexed table of the same column types; seconds."""
    _settle()
    types = {"customers": None, "loans": None, "schedules": None, "transactions": None}
    from loans.imports.specs import TAPE_SPECS
    from loans.imports.tape import TYPED_SQL

    started = time.perf_counter()
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        for kind in types:
            spec = TAPE_SPECS[kind]
            cols = ", ".join(f'"{c.name}" {TYPED_SQL[c.type]}' for c in spec.columns)
            cursor.execute(
                f"DROP TABLE IF EXISTS bench_copy_{kind}; CREATE TABLE bench_copy_{kind} ({cols})"
            )
            with (folder / f"{kind}.csv").open("rb") as stream:
                header = stream.readline().decode().strip().split(",")
                stream.seek(0)
                names = ", ".join(f'"{h}"' for h in header)
                with cursor.copy(
                    f"COPY bench_copy_{kind} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true)"
                ) as copy:
                    while chunk := stream.read(1 << 20):
                        copy.write(chunk)
        seconds = time.perf_counter() - started
        for kind in types:
            cursor.execute(f"DROP TABLE bench_copy_{kind}")
    return seconds


def _bulk_create_rate(sample: int = 100_000) -> float:
    """Rows per second for Django's bulk_create of installments (the ORM way, for scale)."""
    from loans.models import Batch, Installment, Loan

    loans = list(Loan.objects.values_list("id", flat=True)[:sample])
    batch = Batch.objects.filter(kind="schedules").first()
    rows = [
        Installment(
            loan_id=loans[i % len(loans)],
            due_date=f"2030-01-{1 + i // len(loans):02d}",
            principal=Decimal("1.00"),
            batch=batch,
        )
        for i in range(sample)
    ]
    started = time.perf_counter()
    Installment.objects.bulk_create(rows, batch_size=5000)
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:  # raw: the ORM's delete would write an audit entry per row
        cursor.execute("DELETE FROM loans_installment WHERE due_date >= '2030-01-01'")
    return sample / seconds


def _change_one_percent(src: Path, dst: Path) -> int:
    """A copy of the tape with every 100th loan's outstanding balance changed."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    changed = 0
    with (
        (src / "loans.csv").open(newline="") as fin,
        (dst / "loans.csv").open("w", newline="") as fout,
    ):
        reader = csv.DictReader(fin)
        writer = csv.DictWriter(fout, fieldnames=reader.fieldnames)
        writer.writeheader()
        for i, row in enumerate(reader):
            if i % 100 == 0:
                row["outstanding_balance"] = (
                    f"{Decimal(row['outstanding_balance']) + Decimal('1.00'):.2f}"
                )
                changed += 1
            writer.writerow(row)
    return changed


def run(*, loans: int, working_capital_share: float) -> None:
    folder = OUT / f"tape-{loans}-wc{round(working_capital_share * 100)}"
    if not (folder / "transactions.csv").exists():
        started = time.perf_counter()
        tape_generate(
            out_dir=_mkdir(folder),
            loans=loans,
            customers=max(300, loans // 15),
            seed=7,
            working_capital_share=working_capital_share,
        )
        print(f"generated {loans:,}-loan tape in {time.perf_counter() - started:.1f} s")
    rows = _rows(folder)
    size = sum(p.stat().st_size for p in folder.glob("*.csv"))
    print(f"tape: {loans:,} loans, {rows:,} rows, {size / 1e6:,.0f} MB")

    _empty_book()
    # The ratio's denominator: three runs, the median (one run varied from 9.9 s to 14.7 s).
    copies = [_bare_copy(folder) for _ in range(3)]
    copy_seconds = statistics.median(copies)
    print(
        f"bare COPY into unindexed tables: {', '.join(f'{s:.1f}' for s in copies)} s, "
        f"median {copy_seconds:.1f} s, {rows / copy_seconds:,.0f} rows/s"
    )

    _settle()
    started = time.perf_counter()
    result = tape_import(path=folder, source="bench", job="bench")
    first = time.perf_counter() - started
    assert result.ok, result.errors[:5]
    print(f"tape_import end to end (empty book): {first:.1f} s, {rows / first:,.0f} rows/s")
    print(
        f"  ratio to bare COPY: 1/{first / copy_seconds:.1f} of COPY's rate (target: 1/5 or better)"
    )
    print(
        f"  peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
    )

    _settle()
    started = time.perf_counter()
    again = tape_import(path=folder, source="bench", job="bench")
    same = time.perf_counter() - started
    assert len(again.duplicates) == 4
    print(f"re-import of identical bytes: {same:.2f} s (target < 1 s)")

    changed_folder = folder.with_name(f"{folder.name}-changed")
    changed = _change_one_percent(folder, changed_folder)
    _settle()
    started = time.perf_counter()
    result = tape_import(path=changed_folder, source="bench", job="bench")
    one_percent = time.perf_counter() - started
    updated = {f.tape_file.kind: f.updated for f in result.files}
    print(
        f"re-import with 1% of loans changed ({changed:,} loans): {one_percent:.1f} s = {one_percent / first:.0%} of the first import (target < 50%); updated {updated}"
    )

    rate = _bulk_create_rate()
    print(
        f"Django bulk_create (installments, 100k sample): {rate:,.0f} rows/s; tape_import is {rows / first / rate:.1f}x that"
    )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
