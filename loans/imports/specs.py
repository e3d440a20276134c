"""The tape's format, declared once: what each file must contain, where each column lands, and
the per-kind facts the import acts on.

A ``FileSpec`` names the file's columns (the Cascade headers of docs/tape-import.md), their types, which are
required, what an absent value is stored as, the natural key, the target table, the file its rows
refer to, the fields that describe the past, and the per-kind checks. The import
(``loans.imports.tape``) builds its SQL from these, so a new column is one line here, and a new
rule of that kind (a date order, a code list, a historical field) one declaration.
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


# What an absent value is stored as, unless the column says otherwise: texts are stored empty,
# money as zero, the rest as NULL.
BY_TYPE = object()
TYPE_DEFAULTS: dict[ColumnType, str | int | None] = {ColumnType.TEXT: "", ColumnType.MONEY: 0}


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.TEXT
    required: bool = False
    target: str | None = None  # model column, when it differs from the tape's name; "" = not stored
    max_length: int = 255
    non_negative: bool = False
    default: object = BY_TYPE  # stored for an absent value (None: NULL); see TYPE_DEFAULTS
    codes: str = ""  # the code list a value must be one of (loans.imports.tape.compose.CODES)

    @property
    def db_column(self) -> str:
        return self.name if self.target is None else self.target

    @property
    def stored_default(self) -> str | int | None:
        return TYPE_DEFAULTS.get(self.type) if self.default is BY_TYPE else self.default  # type: ignore[return-value]


@dataclass(frozen=True)
class DateOrder:
    """A row is refused when ``column`` is ``bad`` ("<" or ">") than ``other`` in the same row."""

    column: str
    bad: str
    other: str
    reason: str


@dataclass(frozen=True)
class FileSpec:
    kind: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    aliases: tuple[str, ...] = field(default=())
    # The kind this file's rows refer to (by its key): it is merged first, a row whose parent is
    # neither in the tape nor the book is refused, and quarantine holds back its orphans.
    parent: str = ""
    # Fields that describe the past: a newer tape changing them needs a steward's review.
    historical: tuple[str, ...] = ()
    # Fields that describe the row as of the export's date (the tape's own view, kept for
    # reconciliation): a newer tape changing only these changed nothing a snapshot read, so it
    # makes no stored snapshot stale (loans.imports.tape.cutoff).
    as_of_view: tuple[str, ...] = ()
    # How the change log names a row: a format over the file's columns.
    change_key: str = ""
    created_at: bool = False  # the table keeps created_at / updated_at
    blank_on_insert: tuple[str, ...] = ()  # model columns not on the tape, stored empty
    date_order: tuple[DateOrder, ...] = ()
    # (date column, what it is): a row dated before its loan's disbursement is refused.
    after_disbursement: tuple[str, str] | None = None
    negative_interest_warning: bool = False  # rebates: loaded, but a steward should know

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def numbered(self) -> bool:
        """Rows of one key are numbered in file order (``sequence``), not duplicates."""
        return "sequence" in self.key

    @property
    def conflict(self) -> list[str]:
        """The key as the table's columns."""
        names = {c.name: c.db_column for c in self.columns}
        return [names.get(k, k) for k in self.key]


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
        Column("currency", T, max_length=3, default="USD", codes="currency"),
    )


CUSTOMERS = FileSpec(
    kind="customers",
    table="loans_customer",
    key=("customer_id",),
    change_key="{customer_id}",
    created_at=True,
    blank_on_insert=("name", "national_id", "email", "phone"),
    columns=(
        Column("customer_id", T, required=True, max_length=64),
        Column("customer_type", T, max_length=64),
        Column("income", M, non_negative=True, default=None),
        Column("currency", T, max_length=3, default="USD", codes="currency"),
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
    parent="customers",
    historical=("disburse_date", "disburse_principal", "customer_id"),
    as_of_view=("outstanding_balance", "dpd", "ratio_paid", "loan_status"),
    change_key="{loan_id}",
    created_at=True,
    date_order=(
        DateOrder(
            "maturity_date", "<", "disburse_date", "maturity date is before the disbursement date"
        ),
        DateOrder(
            "application_date",
            ">",
            "disburse_date",
            "application date is after the disbursement date",
        ),
    ),
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
        Column("interest_rate", D, non_negative=True, default=0),
        Column("disburse_principal", M, required=True, non_negative=True),
        Column("outstanding_balance", M, non_negative=True),
        Column("currency", T, max_length=3, default="USD", codes="currency"),
        Column("dpd", INT, default=0),
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
    parent="loans",
    change_key="{loan_id} due {date_due}",
    after_disbursement=("date_due", "due date"),
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
    parent="loans",
    historical=("principal", "interest", "fees", "other", "to_tax"),
    change_key="{loan_id} {transaction_type} {date_paid}",
    after_disbursement=("date_paid", "payment date"),
    negative_interest_warning=True,
    columns=(
        Column("loan_id", T, required=True, max_length=64),
        Column("transaction_type", T, required=True, max_length=16, codes="transaction_type"),
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
