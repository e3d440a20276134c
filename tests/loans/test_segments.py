"""Customer segments from loan behaviour (loans.segments)."""

from __future__ import annotations

from datetime import date

import pytest

from loans.models import Customer, Transaction
from loans.segments import customer_segments_refresh
from tests.factories import customer_create, loan_create, transaction_create

pytestmark = pytest.mark.django_db
AS_OF = date(2025, 6, 30)


def borrower(*loans: tuple[date, date | None], **customer) -> Customer:
    """A customer with loans given as (disbursed, repaid on); maturity is 90 days after disbursement."""
    person = customer_create(**customer)
    for disbursed, repaid in loans:
        loan_create(customer=person, disburse_date=disbursed, repaid_on=repaid)
    return person


def segment(customer: Customer) -> str:
    customer.refresh_from_db()
    return customer.segment


def test_each_customer_gets_the_segment_their_loans_describe():
    new = borrower((date(2025, 5, 1), None))
    recurrent = borrower((date(2025, 1, 1), date(2025, 3, 20)), (date(2025, 4, 1), None))
    # Repaid 2024-03-01, back 2025-02-01: eleven months without a loan.
    reactivated = borrower((date(2023, 12, 1), date(2024, 3, 1)), (date(2025, 2, 1), None))
    # Matured 2024-03-01 but repaid only on 2024-07-15: 136 days late, a default that was cured.
    recovered = borrower((date(2023, 12, 2), date(2024, 7, 15)), (date(2024, 8, 1), None))
    later = borrower((date(2025, 8, 1), None))  # nothing by the date: no segment
    assert customer_segments_refresh(as_of=AS_OF) == 4
    assert [segment(c) for c in (new, recurrent, reactivated, recovered, later)] == [
        "new",
        "recurrent",
        "reactivated",
        "recovered",
        "",
    ]


def test_a_written_off_earlier_loan_makes_a_returning_customer_recovered():
    person = customer_create()
    defaulted = loan_create(customer=person, disburse_date=date(2024, 1, 10))
    transaction_create(
        loan=defaulted, transaction_type=Transaction.Type.WRITE_OFF, date=date(2024, 9, 1)
    )
    loan_create(customer=person, disburse_date=date(2025, 1, 10))
    customer_segments_refresh(as_of=AS_OF)
    assert segment(person) == "recovered"


def test_a_refresh_changes_only_what_changed():
    borrower((date(2025, 5, 1), None))
    assert customer_segments_refresh(as_of=AS_OF) == 1
    assert customer_segments_refresh(as_of=AS_OF) == 0
