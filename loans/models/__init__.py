"""The loans app's models: the loan book (``book``), import bookkeeping (``imports``) and the
other kinds of files staff load (``statements``: financial statements and marketing spend)."""

from loans.models.book import (
    CURRENCY_CODE,
    MONEY,
    ZERO,
    Batch,
    CashFlowParts,
    Customer,
    Installment,
    Loan,
    Segment,
    Transaction,
    money_field,
)
from loans.models.imports import BatchChange, ColumnMap, Upload
from loans.models.statements import FinancialStatementLine, MarketingSpend

__all__ = [
    "CURRENCY_CODE",
    "MONEY",
    "ZERO",
    "Batch",
    "BatchChange",
    "CashFlowParts",
    "ColumnMap",
    "Customer",
    "FinancialStatementLine",
    "Installment",
    "Loan",
    "MarketingSpend",
    "Segment",
    "Transaction",
    "Upload",
    "money_field",
]
