"""Small Cascade tapes written by the tests themselves: rows are dicts, headers come from the specs.

``tape_valid`` builds a consistent tape (every loan has its customer, a schedule after its
disbursement, a disbursement and a payment); a test changes the one value it is about and
``tape_write`` puts the files in a folder (or ``tape_zip`` in a ZIP), the way the platform does.
"""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from loans.imports.specs import TAPE_SPECS

Row = dict[str, object]
Tape = dict[str, list[Row]]

# The Cascade headers in the export's column order (docs/tape-import.md, "Cascade headers").
HEADERS: dict[str, list[str]] = {
    kind: [column.name for column in spec.columns] for kind, spec in TAPE_SPECS.items()
}
FIRST_DISBURSEMENT = date(2024, 1, 10)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def tape_csv(
    rows: list[Row],
    *,
    header: list[str],
    delimiter: str = ",",
    newline: str = "\n",
) -> str:
    """One CSV as text: the header, then each row's values in header order (missing = empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_text(row.get(name)) for name in header])
    return buffer.getvalue()


def tape_write(
    folder: Path,
    *,
    customers: list[Row] | None = None,
    loans: list[Row] | None = None,
    schedules: list[Row] | None = None,
    transactions: list[Row] | None = None,
    headers: dict[str, list[str]] | None = None,
    names: dict[str, str] | None = None,
    delimiter: str = ",",
    newline: str = "\n",
    encoding: str = "utf-8",
    bom: bool = False,
) -> Path:
    """Write the given files into ``folder`` (created) and return it.

    ``headers`` replaces a file's header (the row dicts are keyed by that header's names);
    ``names`` replaces a file's name (``{"loans": "prestamos.csv"}``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    given = {
        "customers": customers,
        "loans": loans,
        "schedules": schedules,
        "transactions": transactions,
    }
    for kind, rows in given.items():
        if rows is None:
            continue
        header = (headers or {}).get(kind, HEADERS[kind])
        text = tape_csv(rows, header=header, delimiter=delimiter, newline=newline)
        data = (b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding)
        (folder / (names or {}).get(kind, f"{kind}.csv")).write_bytes(data)
    return folder


def tape_zip(path: Path, folder: Path) -> Path:
    """A ZIP of every CSV in ``folder``, as the platform's export sends it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(folder.glob("*.csv")):
            archive.write(member, member.name)
    return path


def tape_zip_bytes(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in sorted(folder.glob("*.csv")):
            archive.write(member, member.name)
    return buffer.getvalue()


def loan_id(n: int) -> str:
    return f"L{n:05d}"


def customer_id(n: int) -> str:
    return f"C{n:05d}"


def tape_valid(n_loans: int, *, customers: int | None = None) -> Tape:
    """A consistent tape of ``n_loans`` loans, one customer per two loans unless told otherwise.

    Loan n: disbursed FIRST_DISBURSEMENT + n days, principal 1000 + n, 60-day term, two
    installments (30 and 60 days after disbursement), one DISBURSEMENT and one PAYMENT.
    """
    n_customers = customers or max(1, (n_loans + 1) // 2)
    tape: Tape = {
        "customers": [
            {
                "customer_id": customer_id(c),
                "customer_type": "SME",
                "income": "2500.00",
                "currency": "USD",
                "gender": "F" if c % 2 else "M",
                "birth_date": date(1980, 1, 1) + timedelta(days=c),
                "channel_type": "direct",
                "dependents": c % 4,
                "geography_city": "San Salvador",
                "geography_state": "San Salvador",
                "geography_country": "SLV",
            }
            for c in range(1, n_customers + 1)
        ],
        "loans": [],
        "schedules": [],
        "transactions": [],
    }
    for n in range(1, n_loans + 1):
        disbursed = FIRST_DISBURSEMENT + timedelta(days=n % 300)
        principal = Decimal(1000 + n).quantize(Decimal("0.01"))
        half = (principal / 2).quantize(Decimal("0.01"))
        tape["loans"].append(
            {
                "loan_id": loan_id(n),
                "maturity_date": disbursed + timedelta(days=60),
                "customer_id": customer_id((n - 1) % n_customers + 1),
                "application_date": disbursed - timedelta(days=2),
                "disburse_date": disbursed,
                "product_type": "factoring",
                "loan_grade": "A",
                "lender": "Abaco",
                "facility": "F1",
                "total_fees": "10.00",
                "total_other": "0",
                "total_interest": "40.00",
                "credit_bureau_score": 700,
                "term": 60,
                "frequency": "monthly",
                "interest_rate": "0.24",
                "disburse_principal": principal,
                "outstanding_balance": principal - half,
                "currency": "USD",
                "dpd": 0,
                "ratio_paid": "0.5",
                "loan_status": "Current",
                "amount_buckets": "1k-5k",
                "company": "Abaco SV",
                "loan_counts": "1",
                "term_buckets": "60",
                "location_state_province": "San Salvador",
            }
        )
        for month, part in ((1, half), (2, principal - half)):
            tape["schedules"].append(
                {
                    "loan_id": loan_id(n),
                    "date_due": disbursed + timedelta(days=30 * month),
                    "principal": part,
                    "interest": "20.00",
                    "other": "0",
                    "fees": "5.00",
                    "to_tax": "0",
                    "add_balance": "0",
                    "reduce_balance": "0",
                    "currency": "USD",
                }
            )
        tape["transactions"].append(
            {
                "loan_id": loan_id(n),
                "transaction_type": "DISBURSEMENT",
                "date_paid": disbursed,
                "principal": principal,
                "interest": "0",
                "currency": "USD",
            }
        )
        tape["transactions"].append(
            {
                "loan_id": loan_id(n),
                "transaction_type": "PAYMENT",
                "date_paid": disbursed + timedelta(days=30),
                "principal": half,
                "interest": "20.00",
                "fees": "5.00",
                "currency": "USD",
            }
        )
    return tape
