"""The loan tape import: every check with the message a person reads, all or nothing, quarantine,
re-imports that touch only what changed, other sources through a column map, ZIPs, the command."""

from __future__ import annotations

import io
import re
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from loans.imports.files import CHUNK, tape_files_find
from loans.lineage import ERROR, WARNING, Problem, TapeRejected
from loans.models import (
    Batch,
    BatchChange,
    ColumnMap,
    Customer,
    Installment,
    Loan,
    Transaction,
)
from loans.services import TapeImport, batch_changes_review, tape_import
from tests.factories import customer_create, installment_create, loan_create, transaction_create
from tests.loans.tape_files import HEADERS, Tape, tape_valid, tape_write, tape_zip

pytestmark = pytest.mark.django_db

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Raw files land in the test's own folder, not the project's media/."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def book() -> Loan:
    """A loan already in the book (with a schedule line and a payment) that tapes must not touch."""
    loan = loan_create(
        loan_id="DB-LOAN-1",
        disburse_date=date(2025, 1, 15),
        customer=customer_create(customer_id="DB-CUST-1"),
    )
    installment_create(loan=loan)
    transaction_create(loan=loan)
    return loan


def book_counts() -> dict[str, int]:
    return {
        "customers": Customer.objects.count(),
        "loans": Loan.objects.count(),
        "installments": Installment.objects.count(),
        "transactions": Transaction.objects.count(),
    }


def load(folder: Path, **kwargs) -> TapeImport:
    kwargs.setdefault("source", "cascade")
    return tape_import(path=folder, **kwargs)


def rejection(folder: Path, **kwargs) -> list[Problem]:
    """The errors of a rejected tape, after checking it changed nothing in the book and that each
    file's batch is marked failed with its own errors recorded."""
    before = book_counts()
    earlier = set(Batch.objects.values_list("pk", flat=True))
    with pytest.raises(TapeRejected) as rejected:
        load(folder, **kwargs)
    assert book_counts() == before
    batches = Batch.objects.exclude(pk__in=earlier)
    assert batches.exists()
    assert {b.status for b in batches} == {Batch.Status.FAILED}
    errors = [p for p in rejected.value.problems if p.severity == ERROR]
    for batch in batches:
        assert batch.errors == [p.as_dict() for p in errors if p.file == batch.original_name]
        assert batch.rows_inserted == batch.rows_updated == 0
    return errors


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def write(tmp_path: Path, tape: Tape, name: str = "tape", **kwargs) -> Path:
    return tape_write(tmp_path / name, **tape, **kwargs)


def file_load(result: TapeImport, name: str):
    return next(f for f in result.files if f.tape_file.name == name)


def counts(result: TapeImport, name: str) -> tuple[int, int, int, int, int]:
    """(read, inserted, updated, unchanged, rejected) of one file, as the summary prints them."""
    f = file_load(result, name)
    return f.rows_read, f.inserted, f.updated, f.unchanged, f.rejected


# ------------------------------------------------------------------------------------ checks


def test_it_rejects_a_loans_file_without_the_disburse_date_column(tmp_path, book):
    tape = tape_valid(3)
    header = [name for name in HEADERS["loans"] if name != "disburse_date"]
    folder = tape_write(
        tmp_path / "tape",
        customers=tape["customers"],
        loans=tape["loans"],
        headers={"loans": header},
    )

    errors = rejection(folder)

    assert messages(errors) == [
        "loans.csv, row 1, column disburse_date: required column is missing from the header"
    ]
    assert errors[0].as_dict() == {
        "file": "loans.csv",
        "row": 1,
        "column": "disburse_date",
        "value": "",
        "reason": "required column is missing from the header",
    }


def test_it_rejects_a_word_in_a_money_column(tmp_path, book):
    tape = tape_valid(3)
    tape["loans"][1]["outstanding_balance"] = "abc"

    errors = rejection(write(tmp_path, tape))

    assert messages(errors) == [
        "loans.csv, row 3, column outstanding_balance: not a number (value 'abc')"
    ]
    assert (errors[0].file, errors[0].row, errors[0].column, errors[0].value) == (
        "loans.csv",
        3,
        "outstanding_balance",
        "abc",
    )


def test_a_transaction_for_a_loan_already_in_the_book_loads_without_the_loan_in_the_tape(
    tmp_path, book
):
    payment = {
        "loan_id": "DB-LOAN-1",
        "transaction_type": "PAYMENT",
        "date_paid": "2025-03-01",
        "principal": "250.00",
        "interest": "12.50",
        "currency": "USD",
    }

    load(tape_write(tmp_path / "tape", transactions=[payment]))

    stored = book.transactions.get(date=date(2025, 3, 1))
    assert (stored.principal, stored.interest) == (Decimal("250.00"), Decimal("12.50"))


def cell(kind: str, index: int, column: str, value: str):
    """A change to a valid tape: one value of one row."""
    return lambda tape: tape[kind][index].__setitem__(column, value)


def repeated(kind: str, index: int, **changes: str):
    """A change to a valid tape: a copy of one of its rows at the end of its file."""
    return lambda tape: tape[kind].append(dict(tape[kind][index], **changes))


# A valid tape of ``loans`` loans, one change, and every error the import must answer with.
# Rows are numbered as in a spreadsheet (the header is row 1); tape_valid(3) has 3 loans (rows
# 2-4), 6 schedule lines and 6 transactions (a disbursement and a payment per loan).
BAD_VALUES = {
    "february_30th": (
        3,
        cell("loans", 1, "maturity_date", "2023-02-30"),
        [
            "loans.csv, row 3, column maturity_date: not a date (expected YYYY-MM-DD) "
            "(value '2023-02-30')"
        ],
    ),
    "a_day_first_date_in_a_cascade_file": (
        3,
        cell("loans", 2, "pledge_date", "31/12/2023"),
        [
            "loans.csv, row 4, column pledge_date: not a date (expected YYYY-MM-DD) "
            "(value '31/12/2023')"
        ],
    ),
    # Reported once, as not a date (not also as a missing required value).
    "an_unparseable_required_date": (
        3,
        cell("loans", 1, "disburse_date", "31/12/2023"),
        [
            "loans.csv, row 3, column disburse_date: not a date (expected YYYY-MM-DD) "
            "(value '31/12/2023')"
        ],
    ),
    "a_negative_disbursed_principal": (
        3,
        cell("loans", 1, "disburse_principal", "-5.00"),
        ["loans.csv, row 3, column disburse_principal: must not be negative (value '-5.00')"],
    ),
    "an_unknown_currency": (
        3,
        cell("loans", 1, "currency", "XXX"),
        [
            "loans.csv, row 3, column currency: unknown currency (not an ISO 4217 code) "
            "(value 'XXX')"
        ],
    ),
    "a_loan_that_matures_before_it_is_disbursed": (
        3,
        cell("loans", 1, "maturity_date", "2023-01-01"),
        [
            "loans.csv, row 3, column maturity_date: maturity date is before the disbursement "
            "date (value '2023-01-01')"
        ],
    ),
    "a_loan_applied_for_after_it_was_disbursed": (
        3,
        cell("loans", 0, "application_date", "2025-01-01"),
        [
            "loans.csv, row 2, column application_date: application date is after the "
            "disbursement date (value '2025-01-01')"
        ],
    ),
    "a_fractional_term": (
        3,
        cell("loans", 2, "term", "60.5"),
        ["loans.csv, row 4, column term: not a whole number (value '60.5')"],
    ),
    "an_installment_due_before_its_loan_was_disbursed": (
        3,
        cell("schedules", 2, "date_due", "2023-01-01"),  # L00002's first installment
        [
            "schedules.csv, row 4, column date_due: due date is before the loan's disbursement "
            "date (value '2023-01-01')"
        ],
    ),
    "a_schedule_line_for_a_loan_neither_in_the_tape_nor_in_the_book": (
        3,
        repeated("schedules", 0, loan_id="GHOST"),
        [
            "schedules.csv, row 8, column loan_id: loan is neither in this tape nor in the "
            "database (value 'GHOST')"
        ],
    ),
    "a_transaction_for_a_loan_neither_in_the_tape_nor_in_the_book": (
        3,
        cell("transactions", 3, "loan_id", "GHOST"),
        [
            "transactions.csv, row 5, column loan_id: loan is neither in this tape nor in the "
            "database (value 'GHOST')"
        ],
    ),
    "a_disbursement_dated_before_its_loan_was_disbursed": (
        3,
        cell("transactions", 2, "date_paid", "2023-01-01"),  # L00002's
        [
            "transactions.csv, row 4, column date_paid: payment date is before the loan's "
            "disbursement date (value '2023-01-01')"
        ],
    ),
    "a_payment_dated_before_its_loan_was_disbursed": (
        3,
        cell("transactions", 3, "date_paid", "2023-01-01"),  # L00002's
        [
            "transactions.csv, row 5, column date_paid: payment date is before the loan's "
            "disbursement date (value '2023-01-01')"
        ],
    ),
    "a_loan_for_a_customer_neither_in_the_tape_nor_in_the_book": (
        3,
        cell("loans", 1, "customer_id", "NOBODY"),
        [
            "loans.csv, row 3, column customer_id: customer is neither in this tape nor in the "
            "database (value 'NOBODY')"
        ],
    ),
    "a_loan_id_that_appears_twice_in_the_file": (
        3,
        repeated("loans", 0),
        ["loans.csv, row 5, column loan_id: duplicate key: first seen on row 2 (value 'L00001')"],
    ),
    "a_loan_id_repeated_with_a_trailing_space": (
        2,
        repeated("loans", 0, loan_id="L00001 "),
        ["loans.csv, row 4, column loan_id: duplicate key: first seen on row 2 (value 'L00001')"],
    ),
    # Its loan's schedule no longer adds up either; the duplicate is the one problem reported.
    "a_schedule_line_repeated_for_the_same_loan_and_due_date": (
        2,
        repeated("schedules", 0, loan_id=" L00001"),
        [
            "schedules.csv, row 6, column loan_id: duplicate key: first seen on row 2 "
            "(value 'L00001 / 2024-02-10')"
        ],
    ),
    "an_unknown_transaction_type": (
        3,
        cell("transactions", 3, "transaction_type", "GIFT"),
        [
            "transactions.csv, row 5, column transaction_type: unknown transaction type "
            "(expected one of DISBURSEMENT, PAYMENT, WRITE_OFF, REVERSAL, FEE, INTEREST, "
            "ADJUSTMENT, REFUND) (value 'GIFT')"
        ],
    ),
    "a_schedule_whose_principal_does_not_add_up_to_the_loan": (
        3,
        cell("schedules", 2, "principal", "400.00"),  # L00002: 400.00 + 501.00 of 1002.00
        [
            "schedules.csv, row 4, column principal: schedule principal 901.00 does not add up "
            "to the loan's disbursed principal 1002.00 (value 'L00002')"
        ],
    ),
    "payments_whose_principal_exceeds_the_loan": (
        3,
        cell("transactions", 3, "principal", "1500.00"),  # L00002's payment, of 1002.00 lent
        [
            "transactions.csv, row 5, column principal: payments' principal 1500.00 exceeds "
            "the loan's disbursed principal 1002.00 (value 'L00002')"
        ],
    ),
}


@pytest.mark.parametrize(("loans", "change", "expected"), BAD_VALUES.values(), ids=BAD_VALUES)
def test_it_rejects(tmp_path, book, loans, change, expected):
    tape = tape_valid(loans)
    change(tape)

    errors = rejection(write(tmp_path, tape))

    assert messages(errors) == expected


def binary(folder: Path, name: str) -> None:
    (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01")


def extra_fields(folder: Path, name: str, line: int) -> None:
    lines = (folder / name).read_text().splitlines()
    lines[line] += ",extra,fields"
    (folder / name).write_text("\n".join(lines) + "\n")


# Files that cannot be read as a tape: how the folder is made, and every (error, its row).
BAD_FILES = {
    "a_binary_file_named_loans_csv": (
        lambda tmp: binary(
            tape_write(tmp / "tape", customers=tape_valid(3)["customers"]), "loans.csv"
        ),
        [("loans.csv: this is a binary file, not a CSV text file", None)],
    ),
    "an_empty_file": (
        lambda tmp: (tape_write(tmp / "tape") / "loans.csv").write_bytes(b""),
        [("loans.csv: the file is empty (no header line)", None)],
    ),
    "a_file_with_a_header_and_no_rows": (
        lambda tmp: tape_write(tmp / "tape", loans=[]),
        [("loans.csv: the file has a header but no rows", None)],
    ),
    "a_row_with_too_many_fields": (
        lambda tmp: extra_fields(write(tmp, tape_valid(3)), "transactions.csv", 3),
        [("transactions.csv, row 4: unreadable row: extra data after last expected column", 4)],
    ),
    # The whole tape is rejected with its row: the files after it are not checked.
    "a_row_with_too_many_fields_in_loans_csv": (
        lambda tmp: extra_fields(write(tmp, tape_valid(3)), "loans.csv", 2),
        [
            ("loans.csv, row 3: unreadable row: extra data after last expected column", 3),
            ("schedules.csv: not checked: an earlier file of this tape could not be read", None),
            ("transactions.csv: not checked: an earlier file of this tape could not be read", None),
        ],
    ),
}


@pytest.mark.parametrize(("make", "expected"), BAD_FILES.values(), ids=BAD_FILES)
def test_it_rejects_a_file_that_cannot_be_read(tmp_path, book, make, expected):
    make(tmp_path)

    errors = rejection(tmp_path / "tape")

    assert [(str(p), p.row) for p in errors] == expected


@pytest.mark.parametrize(
    ("unreadable", "not_checked"),
    [("loans", ["schedules", "transactions"]), ("schedules", ["transactions"])],
)
def test_the_files_after_an_unreadable_one_are_reported_not_checked(
    tmp_path, book, unreadable, not_checked
):
    # Files are read side by side and transactions are checked before schedules when they are
    # ready first; what is reported follows the tape's order all the same.
    folder = write(tmp_path, tape_valid(3))
    (folder / f"{unreadable}.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")

    errors = rejection(folder)

    assert messages(errors) == [
        f"{unreadable}.csv: this is a binary file, not a CSV text file",
        *(
            f"{name}.csv: not checked: an earlier file of this tape could not be read"
            for name in not_checked
        ),
    ]


# ------------------------------------------------------------------------------------ warnings


def test_float_noise_is_rounded_to_cents_and_listed_as_a_warning(tmp_path):
    tape = tape_valid(3)
    tape["loans"][1]["outstanding_balance"] = "18.50000000000001"

    result = load(write(tmp_path, tape))

    assert Loan.objects.get(loan_id="L00002").outstanding_balance == Decimal("18.50")
    assert result.errors == []
    assert messages(result.problems) == [
        "loans.csv, row 3, column outstanding_balance: 1 value(s) carry float noise beyond cents; "
        "rounded to 2 decimals",
        # 18.50 is not what L00002's own cash flows leave outstanding: said, not refused.
        "loans.csv, row 3, column outstanding_balance: 1 loan(s) whose outstanding balance differs "
        "from disbursed minus paid principal in this tape; loaded as given",
    ]
    batch = Batch.objects.get(original_name="loans.csv")
    assert batch.status == Batch.Status.LOADED
    assert batch.warnings == [p.as_dict() for p in result.problems]


def test_a_negative_interest_rebate_on_a_payment_loads_as_given_with_a_warning(tmp_path):
    tape = tape_valid(3)
    tape["transactions"][1]["interest"] = "-3.25"  # L00001's payment

    result = load(write(tmp_path, tape))

    payment = Transaction.objects.get(loan__loan_id="L00001", transaction_type="PAYMENT")
    assert payment.interest == Decimal("-3.25")
    assert [(p.severity, str(p)) for p in result.problems] == [
        (
            WARNING,
            "transactions.csv, row 3, column interest: 1 row(s) with negative interest (rebates), "
            "loaded as given",
        )
    ]


def test_lowercase_types_and_currencies_are_stored_upper_case(tmp_path):
    tape = tape_valid(2)
    tape["transactions"][1].update(transaction_type=" payment", currency="usd ")

    result = load(write(tmp_path, tape))

    payment = Transaction.objects.get(loan__loan_id="L00001", date=date(2024, 2, 10))
    assert (payment.transaction_type, payment.currency) == ("PAYMENT", "USD")
    # It counts as a payment in the checks too: the loan's balance agrees with the tape's.
    assert result.problems == []


def test_ids_and_texts_padded_with_spaces_load_trimmed_and_join_their_loan(tmp_path):
    # Trimming is skipped for a file's column without a padded value: each file decides alone.
    tape = tape_valid(3)
    tape["customers"][0]["customer_id"] = " C00001"
    tape["loans"][0]["customer_id"] = "C00001 "
    tape["loans"][1]["loan_id"] = " L00002 "
    tape["loans"][1]["product_type"] = "factoring  "
    for row in tape["schedules"]:
        row["loan_id"] = {"L00001": "L00001 "}.get(row["loan_id"], row["loan_id"])
    for row in tape["transactions"]:
        row["loan_id"] = {"L00002": "  L00002"}.get(row["loan_id"], row["loan_id"])

    load(write(tmp_path, tape))

    assert sorted(Loan.objects.values_list("loan_id", flat=True)) == ["L00001", "L00002", "L00003"]
    assert Customer.objects.filter(customer_id="C00001").exists()
    assert Loan.objects.get(loan_id="L00001").customer.customer_id == "C00001"
    assert Loan.objects.get(loan_id="L00002").product_type == "factoring"
    for loan in Loan.objects.all():
        assert loan.installments.count() == 2, loan
        assert loan.transactions.count() == 2, loan


def test_two_identical_payments_on_the_same_day_both_load(tmp_path):
    tape = tape_valid(2)
    tape["transactions"].append(dict(tape["transactions"][1]))

    load(write(tmp_path, tape))

    payments = Transaction.objects.filter(loan__loan_id="L00001", transaction_type="PAYMENT")
    assert [(p.sequence, p.principal) for p in payments] == [
        (0, Decimal("500.50")),
        (1, Decimal("500.50")),
    ]


# ------------------------------------------------------------------------------ all or nothing


def schema(tables: list[str]) -> set[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = ANY(%s::regclass[]) "
            "UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
            [tables, tables],
        )
        return set(cursor.fetchall())


def test_a_first_load_into_empty_tables_leaves_every_index_and_constraint_as_it_was(tmp_path):
    # The bulk path drops indexes and keys of an empty table and builds them after the insert.
    tables = ["loans_customer", "loans_loan", "loans_installment", "loans_transaction"]
    before = schema(tables)
    assert ("loans_installment", "loans_installment_pkey", "PRIMARY KEY (id)") in before

    load(write(tmp_path, tape_valid(3)))

    assert schema(tables) == before
    assert Transaction.objects.count() == 6


def test_a_first_load_moves_each_tables_id_sequence_past_the_rows_it_inserted(tmp_path):
    # A first load numbers its rows itself (from their line numbers) instead of a nextval() each.
    load(write(tmp_path, tape_valid(3)))

    for model in (Customer, Loan, Installment, Transaction):
        ids = list(model.objects.values_list("id", flat=True))
        assert len(set(ids)) == len(ids) > 0
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [model._meta.db_table]
            )
            assert cursor.fetchone()[0] > max(ids), model


def test_one_bad_value_in_the_last_transaction_of_a_2000_loan_tape_loads_nothing(tmp_path, book):
    tape = tape_valid(2000)
    tape["transactions"][-1]["principal"] = "12,50"

    errors = rejection(write(tmp_path, tape))

    assert messages(errors) == [
        "transactions.csv, row 4001, column principal: not a number (value '12,50')"
    ]
    assert not Loan.objects.filter(loan_id__startswith="L0").exists()
    assert not Customer.objects.filter(customer_id__startswith="C0").exists()
    assert Batch.objects.filter(status=Batch.Status.FAILED).count() == 4


# ---------------------------------------------------------------------------------- quarantine


def test_quarantine_loads_the_valid_rows_and_holds_back_exactly_the_bad_ones(tmp_path):
    tape = tape_valid(6)
    tape["loans"][1]["disburse_principal"] = "-1.00"  # L00002, without schedule or cash flows
    tape["schedules"] = [s for s in tape["schedules"] if s["loan_id"] != "L00002"]
    tape["transactions"] = [t for t in tape["transactions"] if t["loan_id"] != "L00002"]
    tape["schedules"][5]["principal"] = "n/a"  # L00004's second installment
    tape["transactions"][7]["transaction_type"] = "GIFT"  # L00005's payment

    result = load(write(tmp_path, tape), quarantine=True)

    assert list(Loan.objects.values_list("loan_id", flat=True)) == [
        "L00001",
        "L00003",
        "L00004",
        "L00005",
        "L00006",
    ]
    assert Installment.objects.filter(loan__loan_id="L00004").count() == 1
    assert list(
        Transaction.objects.filter(loan__loan_id="L00005").values_list(
            "transaction_type", flat=True
        )
    ) == ["DISBURSEMENT"]
    expected = [
        Problem("loans.csv", 3, "disburse_principal", "-1.00", "must not be negative"),
        Problem("schedules.csv", 7, "principal", "n/a", "not a number"),
        Problem(
            "transactions.csv",
            9,
            "transaction_type",
            "GIFT",
            "unknown transaction type (expected one of DISBURSEMENT, PAYMENT, WRITE_OFF, "
            "REVERSAL, FEE, INTEREST, ADJUSTMENT, REFUND)",
        ),
    ]
    assert result.errors == expected
    assert result.rejected_rows == expected
    assert counts(result, "loans.csv") == (6, 5, 0, 0, 1)
    assert counts(result, "schedules.csv") == (10, 9, 0, 0, 1)
    assert counts(result, "transactions.csv") == (10, 9, 0, 0, 1)
    loans_batch = Batch.objects.get(original_name="loans.csv")
    assert (loans_batch.status, loans_batch.rows_rejected, loans_batch.rows_inserted) == (
        Batch.Status.LOADED,
        1,
        5,
    )
    assert loans_batch.errors == [expected[0].as_dict()]


def test_quarantine_counts_the_rows_of_a_held_back_loan_as_rejected(tmp_path):
    tape = tape_valid(3)
    tape["loans"][1]["currency"] = "XXX"  # L00002 has two installments and two transactions

    result = load(write(tmp_path, tape), quarantine=True)

    assert Installment.objects.count() == 4
    assert counts(result, "schedules.csv") == (6, 4, 0, 0, 2)
    assert {(p.file, p.row) for p in result.rejected_rows} >= {
        ("schedules.csv", 4),
        ("schedules.csv", 5),
    }


# ------------------------------------------------------------------------ same bytes, no-op


def test_importing_the_same_folder_twice_loads_nothing_the_second_time(tmp_path):
    folder = write(tmp_path, tape_valid(20))
    first = load(folder)
    first_batches = {b.original_name: b for b in first.batches}
    loan_batches = dict(Loan.objects.values_list("loan_id", "batch_id"))
    before = book_counts()

    started = time.perf_counter()
    second = load(folder)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0
    assert second.files == []
    assert [(b.original_name, b.status, b.duplicate_of_id) for b in second.batches] == [
        (name, Batch.Status.DUPLICATE, first_batches[name].pk)
        for name in ("customers.csv", "loans.csv", "schedules.csv", "transactions.csv")
    ]
    assert book_counts() == before
    assert dict(Loan.objects.values_list("loan_id", "batch_id")) == loan_batches
    assert (
        f"loans.csv                        same bytes as batch {first_batches['loans.csv'].pk}: "
        "nothing to load"
    ) in second.summary()


# -------------------------------------------------------------------------------- re-imports


def _first_import(tmp_path: Path, tape: Tape) -> Batch:
    """Load ``tape`` and age its rows, so a second import's writes are told apart by time."""
    result = load(write(tmp_path, tape, name="first"))
    Loan.objects.update(updated_at=LONG_AGO)
    return next(b for b in result.batches if b.kind == Batch.Kind.LOANS)


def test_a_newer_tape_updates_the_changed_loan_inserts_the_new_one_and_leaves_the_rest(tmp_path):
    tape = tape_valid(5)
    first_loans = _first_import(tmp_path, tape)
    tape["loans"][0]["outstanding_balance"] = "120.00"
    tape["loans"].append(dict(tape["loans"][4], loan_id="L00006"))

    result = load(write(tmp_path, tape, name="second"))

    assert counts(result, "loans.csv") == (6, 1, 1, 4, 0)
    assert [f.tape_file.name for f in result.files] == ["loans.csv"]  # the rest: same bytes
    new_loans = Batch.objects.get(pk=file_batch(result, "loans.csv"))
    assert (new_loans.rows_inserted, new_loans.rows_updated, new_loans.rows_unchanged) == (1, 1, 4)
    stored = {loan.loan_id: loan for loan in Loan.objects.all()}
    assert stored["L00001"].outstanding_balance == Decimal("120.00")
    assert stored["L00001"].batch_id == new_loans.pk
    assert stored["L00001"].updated_at > LONG_AGO
    assert stored["L00006"].batch_id == new_loans.pk
    for loan_id in ("L00002", "L00003", "L00004", "L00005"):
        assert stored[loan_id].batch_id == first_loans.pk
        assert stored[loan_id].updated_at == LONG_AGO
    change = BatchChange.objects.get(batch=new_loans)
    assert (change.kind, change.key, change.change, change.review) == (
        "loans",
        "L00001",
        BatchChange.Change.UPDATED,
        "",
    )
    assert {f: [Decimal(str(v)) for v in vs] for f, vs in change.fields.items()} == {
        "outstanding_balance": [Decimal("500.50"), Decimal("120.00")]
    }


def file_batch(result: TapeImport, name: str) -> int:
    return next(b.pk for b in result.batches if b.original_name == name)


def test_a_changed_disbursed_principal_waits_for_a_stewards_review(tmp_path):
    tape = tape_valid(3)
    _first_import(tmp_path, tape)
    tape["loans"][1]["disburse_principal"] = "1500.00"

    result = load(write(tmp_path, tape, name="second"))

    change = BatchChange.objects.get(batch_id=file_batch(result, "loans.csv"))
    assert (change.key, change.review) == ("L00002", BatchChange.Review.PENDING)
    assert {f: [Decimal(str(v)) for v in vs] for f, vs in change.fields.items()} == {
        "disburse_principal": [Decimal("1002.00"), Decimal("1500.00")]
    }
    assert Loan.objects.get(loan_id="L00002").disburse_principal == Decimal("1500.00")


def test_a_loan_missing_from_the_newer_tape_is_recorded_as_vanished(tmp_path):
    tape = tape_valid(3)
    _first_import(tmp_path, tape)
    del tape["loans"][2]

    result = load(write(tmp_path, tape, name="second"))

    changes = BatchChange.objects.filter(batch_id=file_batch(result, "loans.csv"))
    assert [(c.key, c.change, c.review) for c in changes] == [
        ("L00003", BatchChange.Change.VANISHED, BatchChange.Review.PENDING)
    ]
    assert Loan.objects.filter(
        loan_id="L00003"
    ).exists()  # the book keeps it; a steward reviews the flag


def test_a_steward_accepts_or_rejects_flagged_changes_and_must_give_a_reason(
    tmp_path, django_user_model
):
    steward = django_user_model.objects.create_user(username="sam.steward")
    tape = tape_valid(3)
    _first_import(tmp_path, tape)
    tape["loans"][0]["disburse_principal"] = "2000.00"
    del tape["loans"][2]
    result = load(write(tmp_path, tape, name="second"))
    changes = BatchChange.objects.filter(batch_id=file_batch(result, "loans.csv"))
    updated = changes.filter(change=BatchChange.Change.UPDATED)
    vanished = changes.filter(change=BatchChange.Change.VANISHED)

    with pytest.raises(ValueError, match="a reason is required"):
        batch_changes_review(changes=updated, accept=True, reason="  ", by=steward)
    assert set(changes.values_list("review", flat=True)) == {BatchChange.Review.PENDING}

    accepted = batch_changes_review(
        changes=updated, accept=True, reason=" Lender restated the principal ", by=steward
    )
    rejected = batch_changes_review(
        changes=vanished, accept=False, reason="Still open at the lender", by=steward
    )
    again = batch_changes_review(changes=updated, accept=False, reason="late", by=steward)

    assert (accepted, rejected, again) == (1, 1, 0)
    assert [(c.key, c.review, c.review_reason, c.reviewed_by) for c in changes.order_by("key")] == [
        ("L00001", "accepted", "Lender restated the principal", steward),
        ("L00003", "rejected", "Still open at the lender", steward),
    ]
    assert all(c.reviewed_at is not None for c in changes)


@pytest.mark.django_db(transaction=True)
def test_an_import_leaves_no_staging_table_and_the_search_path_as_it_found_it(tmp_path):
    # Files are staged on connections of their own, which commit their tables; whether the
    # import commits or is rejected, none is left.
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        search_path = cursor.fetchone()[0]

    load(write(tmp_path, tape_valid(2)))
    with pytest.raises(TapeRejected):
        tape = tape_valid(2)
        tape["loans"][0]["disburse_principal"] = "-1"
        load(write(tmp_path, tape, name="bad"))

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'import_staging'")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SHOW search_path")
        assert cursor.fetchone()[0] == search_path


@contextmanager
def ddl_trigger(when: str, then: str):
    """An event trigger that runs ``then`` (PL/pgSQL) after DDL of any connection whose
    ``pg_event_trigger_ddl_commands()`` row matches ``when`` (over ``command_tag`` and
    ``object_identity``): a way to make a staging connection fail, or wait, at a chosen step
    without patching the import. Committed, so the staging connections see it; dropped after."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_ddl_hook() RETURNS event_trigger LANGUAGE plpgsql AS $$ "
            "DECLARE c record; BEGIN "
            "FOR c IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP "
            f"IF {when} THEN {then} END IF; END LOOP; END $$"
        )
        cursor.execute(
            "CREATE EVENT TRIGGER test_ddl_hook ON ddl_command_end EXECUTE FUNCTION test_ddl_hook()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP EVENT TRIGGER IF EXISTS test_ddl_hook")
            cursor.execute("DROP FUNCTION IF EXISTS test_ddl_hook()")


def staging_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'import_staging'")
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_failure_on_a_staging_connection_loads_nothing_and_leaves_no_staging_table(tmp_path):
    # Staging tables already there are not this import's: a rejected import in a test that rolls
    # back leaves its worker connections' tables (the rollback undoes their DROP).
    before = staging_tables()
    # A database error on a worker's connection, in the schedules' own checks (the table of
    # each loan's schedule totals that check_keys makes).
    with (
        ddl_trigger(
            "c.object_identity LIKE 'import_staging.totals\\_schedules\\_%'",
            "PERFORM 1 / 0;",
        ),
        pytest.raises(Exception, match="division by zero"),
    ):
        load(write(tmp_path, tape_valid(3)))

    assert book_counts() == dict.fromkeys(book_counts(), 0)
    assert set(Batch.objects.values_list("status", flat=True)) == {Batch.Status.FAILED}
    assert staging_tables() - before == set()


def test_one_staging_connection_loads_the_whole_tape(tmp_path, settings):
    # The payments pass waits for the loans' first rows: the loans file is staged before the
    # payments, so a single connection never waits for itself.
    settings.IMPORT_JOBS = 1
    tape = tape_valid(3)
    second = dict(tape["transactions"][3], principal="501.00")  # repays L00002
    second["date_paid"] = tape["transactions"][3]["date_paid"] + timedelta(days=10)
    tape["transactions"].append(second)

    load(write(tmp_path, tape))

    assert book_counts() == {"customers": 2, "loans": 3, "installments": 6, "transactions": 7}
    repaid = dict(Loan.objects.values_list("loan_id", "repaid_on"))
    assert repaid == {"L00001": None, "L00002": second["date_paid"], "L00003": None}


@pytest.mark.django_db(transaction=True)
def test_a_staging_connection_that_waits_for_the_imports_lock_fails_instead_of_hanging(
    tmp_path, monkeypatch, settings
):
    # The import's connection reads the loans' staging tables (their checks, the loans lookup)
    # while the payments are still being checked on a staging connection, and holds its lock
    # on them until it commits: a lock wait there would be forever. Staging connections give up
    # instead. Here the payments' connection, in its own checks (the numbering of repeated
    # transactions), waits until another connection holds a lock on the staged loans, then
    # alters them.
    from loans.imports.tape import pool

    settings.IMPORT_JOBS = 2  # the loans are checked while the payments are still staged
    monkeypatch.setattr(pool, "STAGING_LOCK_TIMEOUT", "200ms")
    loans_read = (
        "EXISTS (SELECT 1 FROM pg_locks k JOIN pg_class r ON r.oid = k.relation "
        "WHERE k.pid <> pg_backend_pid() AND k.granted AND r.relname LIKE 'typed\\_loans\\_%')"
    )
    with (
        ddl_trigger(
            "c.object_identity LIKE 'import_staging.repeats\\_transactions\\_%' "
            "AND c.command_tag = 'CREATE TABLE AS'",
            # Waits up to 10 s for the import's connection to have read the loans.
            f"FOR i IN 1..1000 LOOP EXIT WHEN {loans_read}; PERFORM pg_sleep(0.01); END LOOP; "
            "EXECUTE (SELECT format('ALTER TABLE %s ADD COLUMN late text', r.oid::regclass) "
            "FROM pg_class r WHERE r.relname LIKE 'typed\\_loans\\_%' LIMIT 1);",
        ),
        pytest.raises(Exception, match="lock timeout"),
    ):
        load(write(tmp_path, tape_valid(3)))

    assert book_counts() == dict.fromkeys(book_counts(), 0)


def test_two_tapes_can_be_imported_inside_one_outer_transaction(tmp_path):
    tape = tape_valid(2)
    with transaction.atomic():
        load(write(tmp_path, tape, name="first"))
        tape["loans"][0]["outstanding_balance"] = "1.00"
        load(write(tmp_path, tape, name="second"))

    assert Loan.objects.get(loan_id="L00001").outstanding_balance == Decimal("1.00")


# ---------------------------------------------------------------------- other sources' formats

SPANISH_LOANS = [
    "id_prestamo",
    "id_cliente",
    "fecha_desembolso",
    "fecha_vencimiento",
    "monto_desembolso",
    "tasa_interes",
    "plazo",
    "entidad",
]
SPANISH_PAYMENTS = ["id_prestamo", "tipo", "fecha_pago", "capital_pagado", "moneda"]


@pytest.fixture
def lender_sv() -> ColumnMap:
    """How a Salvadoran lender writes its tape: Spanish names, ';', 1.234,56 and 29/02/2024."""
    return ColumnMap.objects.create(
        source="lender-sv",
        delimiter=";",
        decimal_comma=True,
        day_first=True,
        headers={
            "ID_Prestamo": "loan_id",
            "id_cliente": "customer_id",
            "fecha_desembolso": "disburse_date",
            "fecha_vencimiento": "maturity_date",
            "monto_desembolso": "disburse_principal",
            "tasa_interes": "interest_rate",
            "plazo": "term",
            "entidad": "company",
            "ciudad": "geography_city",
            "tipo": "transaction_type",
            "fecha_pago": "date_paid",
            "capital_pagado": "principal",
            "moneda": "currency",
        },
        file_names={"clientes": "customers", "prestamos": "loans", "pagos": "transactions"},
    )


def spanish_tape(folder: Path, *, loan: dict | None = None, **kwargs) -> Path:
    row = {
        "id_prestamo": "P-001",
        "id_cliente": "C-001",
        "fecha_desembolso": "29/02/2024",
        "fecha_vencimiento": "29/05/2024",
        "monto_desembolso": "1.234,56",
        "tasa_interes": "0,185",
        "plazo": "90",
        "entidad": "Abaco SV",
    }
    row.update(loan or {})
    return tape_write(
        folder,
        customers=[{"id_cliente": "C-001", "ciudad": "Cuscatlán"}],
        loans=[row],
        transactions=[
            {
                "id_prestamo": "P-001",
                "tipo": "PAYMENT",
                "fecha_pago": "15/03/2024",
                "capital_pagado": "1.000,50",
                "moneda": "USD",
            }
        ],
        headers={
            "customers": ["id_cliente", "ciudad"],
            "loans": SPANISH_LOANS,
            "transactions": SPANISH_PAYMENTS,
        },
        names={"customers": "clientes.csv", "loans": "prestamos.csv", "transactions": "pagos.csv"},
        delimiter=";",
        **kwargs,
    )


def test_a_spanish_source_loads_through_its_column_map(tmp_path, lender_sv):
    result = load(spanish_tape(tmp_path / "tape"), source="lender-sv")

    assert [(f.tape_file.name, f.tape_file.kind) for f in result.files] == [
        ("clientes.csv", "customers"),
        ("prestamos.csv", "loans"),
        ("pagos.csv", "transactions"),
    ]
    loan = Loan.objects.select_related("customer").get(loan_id="P-001")
    assert loan.disburse_principal == Decimal("1234.56")
    assert loan.disburse_date == date(2024, 2, 29)
    assert loan.maturity_date == date(2024, 5, 29)
    assert loan.interest_rate == Decimal("0.185")
    assert (loan.term, loan.company, loan.customer.customer_id) == (90, "Abaco SV", "C-001")
    payment = loan.transactions.get()
    assert (payment.date, payment.principal) == (date(2024, 3, 15), Decimal("1000.50"))


def test_a_latin1_file_with_crlf_line_endings_keeps_accented_city_names(tmp_path, lender_sv):
    folder = spanish_tape(tmp_path / "tape", encoding="latin-1", newline="\r\n")
    assert "Cuscatl\xe1n".encode("latin-1") in (folder / "clientes.csv").read_bytes()

    load(folder, source="lender-sv")

    assert Customer.objects.get(customer_id="C-001").geography_city == "Cuscatlán"
    assert (
        Loan.objects.get(loan_id="P-001").company == "Abaco SV"
    )  # no '\r' left on the last column


HEAD = b"customer_id,geography_city\nC1,San Jos"
FIRST_READ = HEAD + b"x" * (CHUNK - len(HEAD) - 1)  # one byte short of the first read


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        # "é" split across two reads: UTF-8.
        (FIRST_READ + "é".encode() + b"\nC2,x\n", "UTF8"),
        # The first read ends with a byte that starts a character, the next is all ASCII.
        (FIRST_READ + b"\xc3" + b"\nC2,x\n" * 10, "LATIN1"),
        # Latin-1 whose one accented letter is the file's last byte.
        (HEAD + b"\xe9", "LATIN1"),
    ],
    ids=["utf8-character-across-reads", "lead-byte-then-ascii", "latin1-last-byte"],
)
def test_the_encoding_is_told_from_every_byte_of_the_file(tmp_path, content, encoding):
    (tmp_path / "customers.csv").write_bytes(content)

    (found,), _ = tape_files_find(tmp_path)

    assert found.encoding == encoding


def test_a_utf8_tape_with_a_bom_and_crlf_line_endings_loads_its_first_and_last_columns(tmp_path):
    tape = tape_valid(2)
    tape["customers"][0]["geography_city"] = "Usulután"

    load(write(tmp_path, tape, bom=True, newline="\r\n"))

    customer = Customer.objects.get(customer_id="C00001")
    assert (customer.geography_city, customer.geography_country) == ("Usulután", "SLV")
    assert list(Loan.objects.values_list("loan_id", "location_state_province")) == [
        ("L00001", "San Salvador"),
        ("L00002", "San Salvador"),
    ]


def test_a_day_first_source_rejects_a_date_that_does_not_exist(tmp_path, lender_sv):
    folder = spanish_tape(tmp_path / "tape", loan={"fecha_vencimiento": "31/04/2024"})

    errors = rejection(folder, source="lender-sv")

    assert messages(errors) == [
        "prestamos.csv, row 2, column maturity_date: not a date (expected DD/MM/YYYY) "
        "(value '31/04/2024')"
    ]


def test_a_decimal_comma_source_rejects_a_word_as_a_rate(tmp_path, lender_sv):
    folder = spanish_tape(tmp_path / "tape", loan={"tasa_interes": "alta"})

    errors = rejection(folder, source="lender-sv")

    assert messages(errors) == [
        "prestamos.csv, row 2, column interest_rate: not a number (value 'alta')"
    ]


def test_a_file_name_the_column_map_does_not_know_is_skipped_not_loaded(tmp_path, lender_sv):
    folder = spanish_tape(tmp_path / "tape")
    (folder / "notas.csv").write_text("nota\nhola\n")

    result = load(folder, source="lender-sv")

    assert result.skipped == ["notas.csv"]
    assert "notas.csv                        not a tape file: skipped" in result.summary()


# ------------------------------------------------------------------------------------ ZIP


def _book_snapshot() -> dict[str, list[tuple]]:
    return {
        "customers": list(
            Customer.objects.values_list("customer_id", "income", "birth_date", "geography_city")
        ),
        "loans": list(
            Loan.objects.values_list(
                "loan_id",
                "customer__customer_id",
                "disburse_date",
                "disburse_principal",
                "outstanding_balance",
                "interest_rate",
            )
        ),
        "installments": list(
            Installment.objects.values_list("loan__loan_id", "due_date", "principal", "interest")
        ),
        "transactions": list(
            Transaction.objects.values_list(
                "loan__loan_id", "transaction_type", "date", "principal", "interest"
            )
        ),
    }


class _Undo(Exception):
    pass


def test_a_zip_of_the_four_files_loads_the_same_as_the_folder(tmp_path):
    folder = write(tmp_path, tape_valid(25))
    archive = tape_zip(tmp_path / "export" / "tape.zip", folder)
    # The same bytes would be recognized as already loaded: load the folder, look, roll back.
    with pytest.raises(_Undo), transaction.atomic():
        load(folder)
        from_folder = _book_snapshot()
        raise _Undo

    result = load(archive)

    assert _book_snapshot() == from_folder
    assert len(from_folder["loans"]) == 25
    assert [f.tape_file.name for f in result.files] == [
        "tape.zip:customers.csv",
        "tape.zip:loans.csv",
        "tape.zip:schedules.csv",
        "tape.zip:transactions.csv",
    ]


# ------------------------------------------------------------------------------- the command


def _summary_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s+", line.strip())
        if cells and cells[0].endswith(".csv") and len(cells) == 6:
            rows[cells[0]] = cells[1:]
    return rows


def test_the_import_tape_command_prints_what_each_file_did(tmp_path):
    tape = tape_valid(3)
    tape["loans"][0]["outstanding_balance"] = "0.100000000000001"
    out = io.StringIO()

    call_command("import_tape", str(write(tmp_path, tape)), stdout=out)

    text = out.getvalue()
    assert _summary_rows(text) == {
        "customers.csv": ["2", "2", "0", "0", "0"],
        "loans.csv": ["3", "3", "0", "0", "0"],
        "schedules.csv": ["6", "6", "0", "0", "0"],
        "transactions.csv": ["6", "6", "0", "0", "0"],
    }
    assert "carry float noise beyond cents" in text
    assert text.rstrip().endswith("Tape loaded.")
    assert Loan.objects.count() == 3
    assert set(Batch.objects.values_list("job", flat=True)) == {"import_tape"}


def test_the_import_tape_command_fails_with_the_reasons_and_loads_nothing(tmp_path):
    tape = tape_valid(3)
    tape["loans"][1]["currency"] = "XXX"
    err = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("import_tape", str(write(tmp_path, tape)), stderr=err)

    assert str(failed.value) == "tape rejected, nothing was loaded: 1 problem(s) listed above"
    assert (
        "loans.csv, row 3, column currency: unknown currency (not an ISO 4217 code) (value 'XXX')"
        in err.getvalue()
    )
    assert Loan.objects.count() == 0


def test_the_import_tape_command_with_quarantine_loads_the_rest_and_says_so(tmp_path):
    tape = tape_valid(3)
    tape["transactions"][3]["transaction_type"] = "GIFT"
    out = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("import_tape", str(write(tmp_path, tape)), "--quarantine", stdout=out)

    assert str(failed.value) == "1 row(s) quarantined; the rest loaded"
    assert _summary_rows(out.getvalue())["transactions.csv"] == ["6", "5", "0", "0", "1"]
    assert Transaction.objects.count() == 5


def test_the_import_tape_command_records_the_cut_off_the_export_gives(tmp_path):
    call_command(
        "import_tape",
        str(write(tmp_path, tape_valid(3))),
        "--data-through",
        "2025-12-10",
        stdout=io.StringIO(),
    )

    # Every dated file carries the given cut-off (customers have no dates of data).
    assert dict(Batch.objects.values_list("kind", "data_through")) == {
        "customers": None,
        "loans": date(2025, 12, 10),
        "schedules": date(2025, 12, 10),
        "transactions": date(2025, 12, 10),
    }


def test_the_import_tape_command_refuses_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_tape", str(tmp_path / "nowhere"))


def test_files_merged_while_a_later_one_is_checked_are_rolled_back_when_it_fails(tmp_path, book):
    # Customers and loans merge once the payments pass is through, before the schedule's
    # checks: its error must still leave the book as it was.
    tape = tape_valid(3)
    tape["schedules"][2]["principal"] = "400.00"
    steps: list[tuple[float, str]] = []

    errors = rejection(write(tmp_path, tape), progress=lambda *step: steps.append(step))

    assert len(errors) == 1
    labels = [label for _, label in steps]
    assert labels.index("merging loans.csv") < labels.index("checking schedules.csv")
    assert [fraction for fraction, _ in steps] == sorted(fraction for fraction, _ in steps)


def test_an_outstanding_balance_that_disagrees_with_the_cash_flows_loads_with_a_warning(tmp_path):
    tape = tape_valid(3)
    tape["loans"][1]["outstanding_balance"] = "600.00"  # L00002: 1002.00 lent, 501.00 repaid

    result = load(write(tmp_path, tape))

    assert Loan.objects.get(loan_id="L00002").outstanding_balance == Decimal("600.00")
    assert [(p.severity, str(p)) for p in result.problems] == [
        (
            WARNING,
            "loans.csv, row 3, column outstanding_balance: 1 loan(s) whose outstanding balance "
            "differs from disbursed minus paid principal in this tape; loaded as given",
        )
    ]


def test_the_import_records_the_day_payments_covered_a_loans_principal(tmp_path):
    tape = tape_valid(3)
    # L00002 (1002.00 lent): half on day 30, then the other half 10 days later.
    second = dict(tape["transactions"][3], principal="501.00")
    second["date_paid"] = tape["transactions"][3]["date_paid"] + timedelta(days=10)
    tape["transactions"].append(second)

    load(write(tmp_path, tape))

    repaid = dict(Loan.objects.values_list("loan_id", "repaid_on"))
    assert repaid == {"L00001": None, "L00002": second["date_paid"], "L00003": None}


def test_payments_loaded_without_their_loans_file_date_the_repayment_by_the_books_principal(
    tmp_path,
):
    tape = tape_valid(3)
    # L00002 (1002.00 lent): half paid in the first tape, the other half in a later file of
    # payments alone, whose loan the payments pass finds in the book.
    second = dict(tape["transactions"][3], principal="501.00")
    second["date_paid"] = tape["transactions"][3]["date_paid"] + timedelta(days=10)
    load(write(tmp_path, tape))
    assert Loan.objects.get(loan_id="L00002").repaid_on is None

    later = {"transactions": [*tape["transactions"], second]}
    load(write(tmp_path, later, name="later"))

    repaid = dict(Loan.objects.values_list("loan_id", "repaid_on"))
    assert repaid == {"L00001": None, "L00002": second["date_paid"], "L00003": None}


def test_a_newer_tape_that_changes_only_the_tapes_own_as_of_view_changed_no_past(tmp_path):
    """The daily export restates each live loan's own DPD, balance and status: the book's
    history (what snapshots read) is unchanged, so no stored snapshot is stale."""
    tape = tape_valid(5)
    _first_import(tmp_path, tape)
    tape["loans"][0].update(outstanding_balance="120.00", dpd="12", loan_status="Late")

    result = load(write(tmp_path, tape, name="second"))

    loans = Batch.objects.get(pk=file_batch(result, "loans.csv"))
    assert loans.rows_updated == 1
    assert loans.changes_from is None


def test_a_newer_tape_that_moves_a_disbursement_changed_the_past_from_the_earlier_date(tmp_path):
    tape = tape_valid(5)
    _first_import(tmp_path, tape)
    before = tape["loans"][2]["disburse_date"]
    tape["loans"][2].update(disburse_date=before + timedelta(days=3), dpd="4")
    tape["loans"][0].update(dpd="12")

    result = load(write(tmp_path, tape, name="second"))

    loans = Batch.objects.get(pk=file_batch(result, "loans.csv"))
    # Snapshots from the old date on read the loan as disbursed: the earlier of the two dates.
    assert loans.changes_from == before
