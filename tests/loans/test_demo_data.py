"""The synthetic Cascade tape and the demo_data command: reproducible, consistent, realistic."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from abaco.roles import Role
from loans.demo import tape_generate
from loans.management.commands.demo_data import DEMO_USERS, demo_users_ensure
from loans.models import Batch, Customer, Loan

AS_OF = date(2025, 11, 30)

# The headers of docs/tape-import.md ("Cascade headers"), in the real export's column order.
CASCADE_HEADERS = {
    "customers": "customer_id,customer_type,income,currency,gender,birth_date,channel_type,"
    "dependents,geography_city,geography_state,geography_country",
    "loans": "loan_id,maturity_date,customer_id,application_date,disburse_date,pledge_date,"
    "product_type,loan_grade,lender,facility,total_fees,total_other,total_interest,"
    "credit_bureau_score,term,frequency,interest_rate,disburse_principal,outstanding_balance,"
    "currency,dpd,ratio_paid,loan_status,amount_buckets,company,loan_counts,term_buckets,"
    "location_state_province",
    "schedules": "loan_id,date_due,principal,interest,other,fees,to_tax,add_balance,"
    "reduce_balance,currency",
    "transactions": "loan_id,transaction_type,date_paid,principal,interest,other,fees,to_tax,"
    "add_balance,reduce_balance,currency",
}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tape(tmp_path_factory) -> dict[str, list[dict[str, str]]]:
    """A 2,000-loan tape, big enough for every payment behaviour to show up."""
    paths = tape_generate(out_dir=tmp_path_factory.mktemp("tape"), loans=2000, customers=150)
    return {name: rows(path) for name, path in paths.items()}


def by_loan(table: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped = defaultdict(list)
    for row in table:
        grouped[row["loan_id"]].append(row)
    return grouped


def test_the_same_seed_writes_byte_identical_files(tmp_path):
    first = tape_generate(out_dir=tmp_path / "a", loans=300, customers=40, seed=11)
    second = tape_generate(out_dir=tmp_path / "b", loans=300, customers=40, seed=11)
    assert sorted(first) == ["customers", "loans", "schedules", "transactions"]
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_a_different_seed_writes_a_different_tape(tmp_path):
    first = tape_generate(out_dir=tmp_path / "a", loans=300, customers=40, seed=1)
    second = tape_generate(out_dir=tmp_path / "b", loans=300, customers=40, seed=2)
    for name in ("loans", "schedules", "transactions"):
        assert first[name].read_bytes() != second[name].read_bytes(), name


def _rows_per_loan(paths) -> float:
    counts = {name: sum(1 for _ in path.open(encoding="utf-8")) - 1 for name, path in paths.items()}
    return (counts["schedules"] + counts["transactions"]) / counts["loans"]


def test_the_working_capital_share_sets_the_book_density(tmp_path):
    """The benchmark book (share 0.7) carries about 10 schedule and cash rows per loan, the KPI
    issue's 10M per million loans; the demo default (0.25) about 5."""
    dense = _rows_per_loan(
        tape_generate(out_dir=tmp_path / "d", loans=3000, customers=200, working_capital_share=0.7)
    )
    default = _rows_per_loan(tape_generate(out_dir=tmp_path / "s", loans=3000, customers=200))
    assert 9.5 < dense < 11.5
    assert 4.5 < default < 6.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        tape_generate(out_dir=tmp_path / "x", loans=1, working_capital_share=1.5)


def test_the_files_carry_exactly_the_cascade_headers(tmp_path):
    paths = tape_generate(out_dir=tmp_path, loans=50, customers=10)
    for name, header in CASCADE_HEADERS.items():
        with paths[name].open(encoding="utf-8") as handle:
            assert handle.readline().rstrip("\n") == header, name


def test_it_writes_the_loans_and_customers_asked_for_with_unique_ids(tape):
    loan_ids = [row["loan_id"] for row in tape["loans"]]
    customer_ids = [row["customer_id"] for row in tape["customers"]]
    assert len(loan_ids) == len(set(loan_ids)) == 2000
    assert len(customer_ids) == len(set(customer_ids)) == 150
    assert {row["customer_id"] for row in tape["loans"]} <= set(customer_ids)
    assert all(row["loan_id"].startswith(("ABF - DSB", "ABT - DSB")) for row in tape["loans"])


def test_every_loan_has_one_disbursement_of_its_principal_on_its_disbursement_date(tape):
    cash = by_loan(tape["transactions"])
    for loan in tape["loans"]:
        disbursements = [
            r for r in cash[loan["loan_id"]] if r["transaction_type"] == "DISBURSEMENT"
        ]
        assert len(disbursements) == 1, loan["loan_id"]
        assert disbursements[0]["principal"] == loan["disburse_principal"]
        assert disbursements[0]["date_paid"] == loan["disburse_date"]


def test_each_schedule_sums_to_the_principal_and_ends_at_maturity(tape):
    schedules = by_loan(tape["schedules"])
    for loan in tape["loans"]:
        lines = schedules[loan["loan_id"]]
        assert sum(Decimal(r["principal"]) for r in lines) == Decimal(loan["disburse_principal"])
        assert max(r["date_due"] for r in lines) == loan["maturity_date"]
        expected = 1 if loan["product_type"] == "factoring" else len(lines)
        assert len(lines) == expected and 1 <= expected <= 12


def test_no_loan_is_repaid_or_written_off_beyond_its_principal(tape):
    cash = by_loan(tape["transactions"])
    for loan in tape["loans"]:
        principal = Decimal(loan["disburse_principal"])
        rows_ = cash[loan["loan_id"]]
        paid = sum(Decimal(r["principal"]) for r in rows_ if r["transaction_type"] == "PAYMENT")
        written_off = [
            Decimal(r["principal"]) for r in rows_ if r["transaction_type"] == "WRITE_OFF"
        ]
        assert paid <= principal, loan["loan_id"]
        if written_off:
            assert written_off == [principal - paid], loan["loan_id"]
            assert loan["loan_status"] == "Default"


def test_no_cash_is_dated_after_the_tape_date(tape):
    assert max(r["date_paid"] for r in tape["transactions"]) <= AS_OF.isoformat()
    assert max(r["disburse_date"] for r in tape["loans"]) <= AS_OF.isoformat()
    assert min(r["disburse_date"] for r in tape["loans"]) > "2022-11-30"


def test_the_as_of_columns_agree_with_the_cash_flows(tape):
    """Outstanding, ratio paid, DPD (rolling, as docs/kpis.md defines it) and status, recomputed."""
    schedules, cash = by_loan(tape["schedules"]), by_loan(tape["transactions"])
    for loan in tape["loans"]:
        loan_id = loan["loan_id"]
        principal = Decimal(loan["disburse_principal"])
        rows_ = cash[loan_id]
        paid = sum(Decimal(r["principal"]) for r in rows_ if r["transaction_type"] == "PAYMENT")
        assert Decimal(loan["outstanding_balance"]) == principal - paid, loan_id
        assert Decimal(loan["ratio_paid"]) == (paid / principal).quantize(Decimal("0.0001"))

        dpd, left = 0, paid
        for line in sorted(schedules[loan_id], key=lambda r: r["date_due"]):
            if left >= Decimal(line["principal"]):
                left -= Decimal(line["principal"])
                continue
            due = date.fromisoformat(line["date_due"])
            dpd = (AS_OF - due).days if due < AS_OF else 0
            break
        assert int(loan["dpd"]) == dpd, loan_id

        written_off = any(r["transaction_type"] == "WRITE_OFF" for r in rows_)
        if paid == principal:
            assert loan["loan_status"] == "Complete", loan_id
        elif written_off or dpd > 180:
            assert loan["loan_status"] == "Default", loan_id
        else:
            assert loan["loan_status"] == "Current", loan_id

        term = (
            date.fromisoformat(loan["maturity_date"]) - date.fromisoformat(loan["disburse_date"])
        ).days
        assert int(loan["term"]) == term


def test_loan_counts_number_each_customers_loans_in_order(tape):
    seen: dict[str, int] = defaultdict(int)
    for loan in tape["loans"]:
        seen[loan["customer_id"]] += 1
        assert int(loan["loan_counts"]) == seen[loan["customer_id"]]
    repeat = sum(1 for n in seen.values() if n > 1)
    assert repeat / len(seen) > 0.5


def test_the_book_mixes_entities_products_and_payment_behaviours(tape):
    loans = tape["loans"]
    abf = sum(1 for r in loans if r["company"] == "ABF") / len(loans)
    assert 0.55 < abf < 0.75
    assert {r["product_type"] for r in loans} == {"factoring", "working_capital"}
    assert {r["frequency"] for r in loans if r["product_type"] == "factoring"} == {"One-time"}
    assert {r["loan_status"] for r in loans} == {"Complete", "Current", "Default"}

    schedules, cash = by_loan(tape["schedules"]), by_loan(tape["transactions"])
    late = 0
    for loan in loans:
        payments = [r for r in cash[loan["loan_id"]] if r["transaction_type"] == "PAYMENT"]
        last_due = max(r["date_due"] for r in schedules[loan["loan_id"]])
        if payments and loan["loan_status"] == "Complete" and payments[-1]["date_paid"] > last_due:
            late += 1
    assert late >= 1
    assert any(int(r["dpd"]) > 180 for r in loans)
    transactions = tape["transactions"]
    assert any(r["transaction_type"] == "WRITE_OFF" for r in transactions)
    rebates = [r for r in transactions if r["interest"].startswith("-")]
    assert rebates and all(r["to_tax"].startswith("-") for r in rebates)


def test_money_has_two_places_and_the_optional_columns_stay_empty(tape):
    loan = tape["loans"][0]
    for column in ("application_date", "pledge_date", "loan_grade", "lender", "facility"):
        assert all(r[column] == "" for r in tape["loans"]), column
    assert all(r["credit_bureau_score"] == "" for r in tape["loans"])
    assert len(loan["disburse_principal"].split(".")[1]) == 2
    assert all(len(r["principal"].split(".")[1]) == 2 for r in tape["transactions"])
    assert all(r["currency"] == "USD" for r in tape["schedules"])
    countries = {r["geography_country"] for r in tape["customers"]}
    assert countries <= {"SLV", "GTM", "HND"} and "SLV" in countries


def test_the_command_only_writes_files_with_no_load(tmp_path):
    out = io.StringIO()
    call_command(
        "demo_data",
        "--no-load",
        "--loans",
        "40",
        "--customers",
        "5",
        "--out",
        str(tmp_path),
        stdout=out,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "customers.csv",
        "loans.csv",
        "schedules.csv",
        "transactions.csv",
    ]
    assert len(rows(tmp_path / "loans.csv")) == 40
    assert str(tmp_path / "loans.csv") in out.getvalue()


@pytest.mark.django_db
def test_the_command_refuses_to_load_into_a_book_that_has_loans(tmp_path):
    batch = Batch.objects.create(source="test", kind=Batch.Kind.TAPE, sha256="0" * 64)
    customer = Customer.objects.create(customer_id="CLI-EXISTING", batch=batch)
    Loan.objects.create(
        loan_id="L-EXISTING",
        customer=customer,
        company="ABF",
        disburse_date=date(2025, 1, 2),
        disburse_principal=Decimal("100.00"),
        batch=batch,
    )
    with pytest.raises(CommandError, match="already has loans"):
        call_command("demo_data", "--loans", "10", "--out", str(tmp_path), stdout=io.StringIO())
    assert not list(tmp_path.iterdir())


@pytest.mark.django_db
def test_the_command_loads_the_tape_and_segments_its_customers():
    out = io.StringIO()
    call_command("demo_data", "--loans", "200", "--customers", "40", stdout=out)
    assert Loan.objects.count() == 200
    borrowers = Customer.objects.filter(loans__isnull=False).distinct()
    segments = set(borrowers.values_list("segment", flat=True))
    assert "" not in segments and {"new", "recurrent"} <= segments, segments
    assert f"{borrowers.count():,} set." in out.getvalue()


@pytest.mark.django_db
def test_demo_users_get_their_role_group_and_admin_flags():
    passwords = demo_users_ensure()
    assert set(passwords) == {"uploader", "steward", "manager", "auditor", "admin", "api"}
    User = get_user_model()
    for username, password in passwords.items():
        user = User.objects.get(username=username)
        role = DEMO_USERS[username]
        if role is Role.API_CLIENT:  # a token, never a password (abaco.second_factor)
            assert password is None and not user.has_usable_password()
        else:
            assert password and len(password) >= 16
            assert user.check_password(password)
        assert list(user.groups.values_list("name", flat=True)) == [role.value]
        assert user.is_staff == (role in {Role.UPLOADER, Role.STEWARD, Role.ADMIN})
        assert user.is_superuser == (role is Role.ADMIN)
    people = [password for password in passwords.values() if password]
    assert len(set(people)) == len(people) == len(passwords) - 1


@pytest.mark.django_db
def test_a_second_run_keeps_the_demo_users_passwords():
    first = demo_users_ensure()
    second = demo_users_ensure()
    assert second == dict.fromkeys(first)
    User = get_user_model()
    for username, password in first.items():
        user = User.objects.get(username=username)
        assert user.check_password(password) if password else not user.has_usable_password()
        assert user.groups.count() == 1
