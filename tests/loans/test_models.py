"""The loan book's database constraints: bad rows never reach the tables the KPIs read."""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal

from django.db import DataError, IntegrityError, connection, transaction
from django.test import TestCase

from loans.models import Batch, Customer, Installment, Loan, Transaction
from tests.factories import (
    batch_create,
    customer_create,
    installment_create,
    loan_create,
    transaction_create,
)

# The check constraint rejects lower case and short codes; a four-letter code already overflows
# the varchar(3) column, which PostgreSQL reports as a DataError rather than an IntegrityError.
BAD_CURRENCIES = [("usd", IntegrityError), ("US", IntegrityError), ("USDX", DataError)]


class LoanConstraintTests(TestCase):
    def test_it_rejects_a_loan_with_negative_principal(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(disburse_principal=Decimal("-0.01"))

    def test_it_rejects_a_loan_with_negative_outstanding_balance(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(outstanding_balance=Decimal("-5.00"))

    def test_it_rejects_a_loan_whose_currency_is_not_an_iso_code(self):
        for currency, error in BAD_CURRENCIES:
            with (
                self.subTest(currency=currency),
                self.assertRaises(error),
                transaction.atomic(),
            ):
                loan_create(currency=currency)

    def test_it_rejects_a_loan_maturing_before_it_is_disbursed(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(disburse_date=date(2025, 3, 1), maturity_date=date(2025, 2, 28))

    def test_it_rejects_a_loan_applied_for_after_it_is_disbursed(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(disburse_date=date(2025, 3, 1), application_date=date(2025, 3, 2))

    def test_it_rejects_a_loan_with_a_negative_interest_rate(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(interest_rate=Decimal("-0.010000"))

    def test_it_rejects_a_second_loan_with_the_same_loan_id(self):
        loan_create(loan_id="L-1")
        with self.assertRaises(IntegrityError), transaction.atomic():
            loan_create(loan_id="L-1")
        self.assertEqual(Loan.objects.filter(loan_id="L-1").count(), 1)

    def test_it_accepts_a_valid_loan_and_returns_money_as_two_place_decimals(self):
        loan = loan_create(
            disburse_principal=Decimal("12500.5"),
            outstanding_balance=Decimal("0"),
            disburse_date=date(2025, 3, 1),
            maturity_date=date(2025, 3, 1),
            application_date=date(2025, 3, 1),
        )
        stored = Loan.objects.get(pk=loan.pk)
        self.assertEqual(stored.disburse_principal, Decimal("12500.50"))
        self.assertIsInstance(stored.disburse_principal, Decimal)
        self.assertEqual(stored.disburse_principal.as_tuple().exponent, -2)
        self.assertEqual(stored.outstanding_balance.as_tuple().exponent, -2)
        self.assertEqual(str(stored.outstanding_balance), "0.00")


class CustomerConstraintTests(TestCase):
    def test_it_rejects_a_customer_whose_currency_is_not_an_iso_code(self):
        for currency, error in BAD_CURRENCIES:
            with (
                self.subTest(currency=currency),
                self.assertRaises(error),
                transaction.atomic(),
            ):
                customer_create(currency=currency)

    def test_it_rejects_a_second_customer_with_the_same_customer_id(self):
        customer_create(customer_id="C-1")
        with self.assertRaises(IntegrityError), transaction.atomic():
            customer_create(customer_id="C-1")
        self.assertEqual(Customer.objects.filter(customer_id="C-1").count(), 1)

    def test_it_accepts_a_valid_customer_and_returns_income_as_a_two_place_decimal(self):
        customer = customer_create(income=Decimal("1800"))
        stored = Customer.objects.get(pk=customer.pk)
        self.assertEqual(stored.income, Decimal("1800.00"))
        self.assertEqual(str(stored.income), "1800.00")
        self.assertEqual(stored.currency, "USD")


class InstallmentConstraintTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.loan = loan_create()

    def test_it_rejects_an_installment_with_negative_principal(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            installment_create(loan=self.loan, principal=Decimal("-1.00"))

    def test_it_rejects_an_installment_whose_currency_is_not_an_iso_code(self):
        for currency, error in BAD_CURRENCIES:
            with (
                self.subTest(currency=currency),
                self.assertRaises(error),
                transaction.atomic(),
            ):
                installment_create(loan=self.loan, currency=currency)

    def test_it_rejects_two_installments_of_a_loan_due_on_the_same_date(self):
        installment_create(loan=self.loan, due_date=date(2025, 2, 15))
        with self.assertRaises(IntegrityError), transaction.atomic():
            installment_create(loan=self.loan, due_date=date(2025, 2, 15))
        self.assertEqual(self.loan.installments.filter(due_date=date(2025, 2, 15)).count(), 1)

    def test_it_accepts_installments_of_different_loans_due_on_the_same_date(self):
        other = loan_create()
        installment_create(loan=self.loan, due_date=date(2025, 2, 15))
        installment_create(loan=other, due_date=date(2025, 2, 15))
        self.assertEqual(Installment.objects.filter(due_date=date(2025, 2, 15)).count(), 2)

    def test_it_accepts_a_valid_installment_and_returns_money_as_two_place_decimals(self):
        line = installment_create(
            loan=self.loan, principal=Decimal("3333.333"), fees=Decimal("7.5")
        )
        stored = Installment.objects.get(pk=line.pk)
        # Three decimals round to the column's two places on the way in.
        self.assertEqual(str(stored.principal), "3333.33")
        self.assertEqual(str(stored.fees), "7.50")
        self.assertEqual(stored.total, Decimal("3540.83"))


class TransactionConstraintTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.loan = loan_create()

    def test_it_rejects_a_transaction_with_negative_principal(self):
        with self.assertRaises(IntegrityError), transaction.atomic():
            transaction_create(loan=self.loan, principal=Decimal("-100.00"))

    def test_it_rejects_a_transaction_whose_currency_is_not_an_iso_code(self):
        for currency, error in BAD_CURRENCIES:
            with (
                self.subTest(currency=currency),
                self.assertRaises(error),
                transaction.atomic(),
            ):
                transaction_create(loan=self.loan, currency=currency)

    def test_it_rejects_a_second_transaction_with_the_same_natural_key(self):
        key = {
            "loan": self.loan,
            "date": date(2025, 2, 14),
            "transaction_type": Transaction.Type.PAYMENT,
            "sequence": 0,
        }
        transaction_create(**key)
        with self.assertRaises(IntegrityError), transaction.atomic():
            transaction_create(**key)
        self.assertEqual(Transaction.objects.filter(loan=self.loan).count(), 1)

    def test_it_accepts_a_second_payment_on_the_same_day_as_the_next_sequence(self):
        day = date(2025, 2, 14)
        transaction_create(loan=self.loan, date=day, sequence=0)
        transaction_create(loan=self.loan, date=day, sequence=1)
        self.assertEqual(Transaction.objects.filter(loan=self.loan, date=day).count(), 2)

    def test_it_accepts_a_valid_transaction_and_returns_money_as_two_place_decimals(self):
        payment = transaction_create(loan=self.loan, principal=Decimal("999.9"))
        stored = Transaction.objects.get(pk=payment.pk)
        self.assertEqual(str(stored.principal), "999.90")
        self.assertEqual(stored.transaction_type, "PAYMENT")


class BatchConstraintTests(TestCase):
    digest = hashlib.sha256(b"the same tape, uploaded twice").hexdigest()

    def test_it_rejects_a_second_loaded_batch_with_the_same_bytes(self):
        batch_create(sha256=self.digest, status=Batch.Status.LOADED)
        with self.assertRaises(IntegrityError), transaction.atomic():
            batch_create(sha256=self.digest, status=Batch.Status.LOADED)
        self.assertEqual(Batch.objects.filter(sha256=self.digest).count(), 1)

    def test_it_accepts_a_duplicate_batch_pointing_at_the_loaded_one(self):
        first = batch_create(sha256=self.digest, status=Batch.Status.LOADED)
        again = batch_create(sha256=self.digest, status=Batch.Status.DUPLICATE, duplicate_of=first)
        self.assertEqual(
            list(
                Batch.objects.filter(sha256=self.digest)
                .order_by("pk")
                .values_list("status", flat=True)
            ),
            ["loaded", "duplicate"],
        )
        self.assertEqual(again.duplicate_of, first)

    def test_it_rejects_a_batch_whose_sha256_is_not_64_lowercase_hex_digits(self):
        for bad in ["not-a-hash", self.digest.upper(), self.digest[:63], self.digest[:63] + "g"]:
            with self.subTest(sha256=bad), self.assertRaises(IntegrityError), transaction.atomic():
                batch_create(sha256=bad)

    def test_it_accepts_a_valid_batch(self):
        batch = batch_create(sha256=self.digest)
        self.assertEqual(Batch.objects.get(pk=batch.pk).sha256, self.digest)


class IndexTests(TestCase):
    def test_the_indexes_the_kpi_engine_reads_through_exist(self):
        wanted = {
            "loan_customer_disbursed_idx": "loans_loan",
            "loan_disbursed_idx": "loans_loan",
            "installment_due_idx": "loans_installment",
            "transaction_date_type_idx": "loans_transaction",
            "installment_loan_due_unique": "loans_installment",
            "transaction_natural_key": "loans_transaction",
        }
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, tablename FROM pg_indexes WHERE indexname = ANY(%s)",
                [list(wanted)],
            )
            found = dict(cursor.fetchall())
        self.assertEqual(found, wanted)
