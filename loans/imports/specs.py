"""What each tape file must contain, and where each column lands.

A ``FileSpec`` names the file's columns (the Cascade headers of docs/tape-import.md), their types, which are
required, the natural key, and the target table. The loader builds its SQL from these, so a new
column is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ColumnType(StrEnum):
    TEXT = "text"
    MONEY = "money"  # numeric, rounded to cents
    DECIMAL = "decimal"  # numeric, kept as given (rates, ratios)
    INTEGER = "integer"
    DATE = "date"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.TEXT
    required: bool = False
    target: str | None = None  # model column, when it differs from the tape's name; "" = not stored
    max_length: int = 255
    non_negative: bool = False

    @property
    def db_column(self) -> str:
        return self.name if self.target is None else self.target


@dataclass(frozen=True)
class FileSpec:
    kind: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    aliases: tuple[str, ...] = field(default=())

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


T, M, D, INT, DT = (
    ColumnType.TEXT,
    ColumnType.MONEY,
    ColumnType.DECIMAL,
    ColumnType.INTEGER,
    ColumnType.DATE,
)


def _cash_parts() -> tuple[Column, ...]:
    return (
        Column("principal", M, non_negative=True),
        Column("interest", M),
        Column("other", M),
        Column("fees", M),
        Column("to_tax", M),
        Column("add_balance", M),
        Column("reduce_balance", M),
        Column("currency", T, max_length=3),
    )


CUSTOMERS = FileSpec(
    kind="customers",
    table="loans_customer",
    key=("customer_id",),
    columns=(
        Column("customer_id", T, required=True, max_length=64),
        Column("customer_type", T, max_length=64),
        Column("income", M, non_negative=True),
        Column("currency", T, max_length=3),
        Column("gender", T, max_length=16),
        Column("birth_date", DT),
        Column("channel_type", T, max_length=64),
        Column("dependents", INT, non_negative=True),
        Column("geography_city", T, max_length=128),
        Column("geography_state", T, max_length=128),
        Column("geography_country", T, max_length=3),
    ),
)

LOANS = FileSpec(
    kind="loans",
    table="loans_loan",
    key=("loan_id",),
    columns=(
        Column("loan_id", T, required=True, max_length=64),
        Column("maturity_date", DT),
        Column("customer_id", T, required=True, max_length=64, target="customer_id"),
        Column("application_date", DT),
        Column("disburse_date", DT, required=True),
        Column("pledge_date", DT),
        Column("product_type", T, max_length=64),
        Column("loan_grade", T, max_length=16),
        Column("lender", T, max_length=64),
        Column("facility", T, max_length=64),
        Column("total_fees", M),
        Column("total_other", M),
        Column("total_interest", M),
        Column("credit_bureau_score", INT, non_negative=True),
        Column("term", INT, non_negative=True),
        Column("frequency", T, max_length=32),
        Column("interest_rate", D, non_negative=True),
        Column("disburse_principal", M, required=True, non_negative=True),
        Column("outstanding_balance", M, non_negative=True),
        Column("currency", T, max_length=3),
        Column("dpd", INT),
        Column("ratio_paid", D),
        Column("loan_status", T, max_length=32),
        Column("amount_buckets", T, max_length=32),
        Column("company", T, required=True, max_length=32),
        Column("loan_counts", T, max_length=16),
        Column("term_buckets", T, max_length=32),
        Column("location_state_province", T, max_length=128),
    ),
)

SCHEDULES = FileSpec(
    kind="schedules",
    table="loans_installment",
    key=("loan_id", "date_due"),
    columns=(
        Column("loan_id", T, required=True, max_length=64),
        Column("date_due", DT, required=True, target="due_date"),
        *_cash_parts(),
    ),
)

TRANSACTIONS = FileSpec(
    kind="transactions",
    table="loans_transaction",
    key=("loan_id", "date_paid", "transaction_type", "sequence"),
    columns=(
        Column("loan_id", T, required=True, max_length=64),
        Column("transaction_type", T, required=True, max_length=16),
        Column("date_paid", DT, required=True, target="date"),
        *_cash_parts(),
    ),
)

# Load order: each file may refer to the ones before it.
TAPE_SPECS: dict[str, FileSpec] = {
    spec.kind: spec for spec in (CUSTOMERS, LOANS, SCHEDULES, TRANSACTIONS)
}

# Active ISO 4217 codes: a currency outside this list is rejected as unknown.
ISO_CURRENCIES = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWL",
    ]
)
