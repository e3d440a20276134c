"""Valid rows with sensible defaults; pass keyword overrides for what a test is about."""

from __future__ import annotations

import hashlib
import itertools
from datetime import date, timedelta
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile

from loans.models import Batch, Customer, Installment, Loan, Transaction, Upload

_batches = itertools.count(1)
_customers = itertools.count(1)
_loans = itertools.count(1)
_sequences = itertools.count(1)


def batch_create(**overrides) -> Batch:
    n = next(_batches)
    fields = {
        "source": "cascade",
        "kind": Batch.Kind.TAPE,
        "original_name": f"tape-{n}.zip",
        "sha256": hashlib.sha256(f"batch-{n}".encode()).hexdigest(),
        "size": 1024,
        "status": Batch.Status.LOADED,
    }
    fields.update(overrides)
    return Batch.objects.create(**fields)


def customer_create(**overrides) -> Customer:
    fields = {
        "customer_id": f"CUST-{next(_customers):06d}",
        "customer_type": "SME",
        "currency": "USD",
        "geography_city": "San Salvador",
        "geography_country": "SLV",
    }
    fields.update(overrides)
    if "batch" not in fields:
        fields["batch"] = batch_create()
    return Customer.objects.create(**fields)


def loan_create(**overrides) -> Loan:
    disbursed = overrides.get("disburse_date", date(2025, 1, 15))
    fields = {
        "loan_id": f"LOAN-{next(_loans):06d}",
        "company": "Abaco Technologies",
        "product_type": "factoring",
        "application_date": disbursed - timedelta(days=3),
        "disburse_date": disbursed,
        "maturity_date": disbursed + timedelta(days=90),
        "disburse_principal": Decimal("10000.00"),
        "outstanding_balance": Decimal("10000.00"),
        "interest_rate": Decimal("0.240000"),
        "term": 90,
        "currency": "USD",
        "loan_status": "Current",
    }
    fields.update(overrides)
    if "batch" not in fields:
        fields["batch"] = batch_create()
    if "customer" not in fields:
        fields["customer"] = customer_create(batch=fields["batch"])
    return Loan.objects.create(**fields)


def installment_create(**overrides) -> Installment:
    fields = {
        "principal": Decimal("3333.33"),
        "interest": Decimal("200.00"),
        "currency": "USD",
    }
    fields.update(overrides)
    if "loan" not in fields:
        fields["loan"] = loan_create()
    if "due_date" not in fields:
        # A distinct due date per call keeps (loan, due_date) unique for a shared loan.
        fields["due_date"] = fields["loan"].disburse_date + timedelta(days=30 * next(_sequences))
    if "batch" not in fields:
        fields["batch"] = fields["loan"].batch
    return Installment.objects.create(**fields)


def transaction_create(**overrides) -> Transaction:
    fields = {
        "transaction_type": Transaction.Type.PAYMENT,
        "principal": Decimal("1000.00"),
        "interest": Decimal("50.00"),
        "currency": "USD",
        "sequence": next(_sequences),
    }
    fields.update(overrides)
    if "loan" not in fields:
        fields["loan"] = loan_create()
    if "date" not in fields:
        fields["date"] = fields["loan"].disburse_date + timedelta(days=30)
    if "batch" not in fields:
        fields["batch"] = fields["loan"].batch
    return Transaction.objects.create(**fields)


def upload_create(**overrides) -> Upload:
    """A tape upload with a small file (pass ``created_by``, and the status a test is about)."""
    fields = {
        "kind": Upload.Kind.TAPE,
        "source": "cascade",
        "file": SimpleUploadedFile("tape.csv", b"loan_id\nL9\n"),
    }
    fields.update(overrides)
    return Upload.objects.create(**fields)
