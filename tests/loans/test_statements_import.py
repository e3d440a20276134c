"""Financial statements and marketing spend uploads: formats, checks, lineage, all or nothing."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from openpyxl import Workbook

from loans.imports.statements import statements_import
from loans.lineage import TapeRejected
from loans.models import Batch, FinancialStatementLine, MarketingSpend
from tests.factories import batch_create

pytestmark = pytest.mark.django_db

STATEMENTS = Batch.Kind.STATEMENTS
MARKETING = Batch.Kind.MARKETING_SPEND

ENGLISH_STATEMENTS = (
    "Company,Period_End,Statement,Line_Item,Amount,Currency\n"
    "Abaco SV,2024-12-31,balance_sheet,Cash,125000.50,USD\n"
    'Abaco SV,2024-12-31,balance_sheet,"Loan portfolio, gross","1,250,000.00",USD\n'
    "Abaco SV,2024-12-31,profit_and_loss,Interest income,98765.43,USD\n"
    "Abaco GT,2024-12-31,profit_and_loss,Interest income,(1500.25),USD\n"
)

SPANISH_STATEMENTS = (
    "Entidad;Fecha_Cierre;Estado;Partida;Monto;Moneda\n"
    "Abaco SV;31/12/2024;balance;Cartera de préstamos, bruta;1.234.567,89;USD\n"
    "Abaco SV;31/12/2024;resultados;Ingresos por intereses;98.765,4;USD\n"
    "Abaco SV;31/12/2024;resultados;Provisión para pérdidas;-12.345,60;USD\n"
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Raw files land in the test's own folder, not the project's media/."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def uploader(django_user_model):
    return django_user_model.objects.create_user(username="uma.uploader", is_staff=True)


def write(path: Path, text: str, *, encoding: str = "utf-8", bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def workbook(path: Path, rows: list[list], *, second_sheet: list[list] | None = None) -> Path:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    if second_sheet is not None:
        other = book.create_sheet("notes")
        for row in second_sheet:
            other.append(row)
    book.save(path)
    return path


def load(path: Path, kind: str = STATEMENTS, **kwargs):
    kwargs.setdefault("source", "finance")
    return statements_import(path=path, kind=kind, **kwargs)


def rejection(path: Path, kind: str = STATEMENTS, **kwargs) -> list[str]:
    """The error messages the uploader sees, after checking that nothing was written."""
    with pytest.raises(TapeRejected) as rejected:
        load(path, kind, **kwargs)
    assert not FinancialStatementLine.objects.exists()
    assert not MarketingSpend.objects.exists()
    batch = Batch.objects.get(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert batch.status == Batch.Status.FAILED
    assert len(batch.errors) == len([p for p in rejected.value.problems if p.severity == "error"])
    return [str(p) for p in rejected.value.problems if p.severity == "error"]


def statement_amounts() -> dict[tuple[str, str], Decimal]:
    return {
        (line.company, line.line_item): line.amount for line in FinancialStatementLine.objects.all()
    }


# ---------------------------------------------------------------------------- formats


def test_it_loads_an_english_statements_csv_with_its_lineage(tmp_path, uploader):
    path = write(tmp_path / "statements.csv", ENGLISH_STATEMENTS)

    result = load(path, by=uploader, job="upload")

    assert (result.rows_read, result.inserted, result.updated, result.unchanged) == (4, 4, 0, 0)
    assert statement_amounts() == {
        ("Abaco SV", "Cash"): Decimal("125000.50"),
        ("Abaco SV", "Loan portfolio, gross"): Decimal("1250000.00"),
        ("Abaco SV", "Interest income"): Decimal("98765.43"),
        ("Abaco GT", "Interest income"): Decimal("-1500.25"),
    }
    cash = FinancialStatementLine.objects.get(line_item="Cash")
    assert cash.period_end == date(2024, 12, 31)
    assert cash.statement == FinancialStatementLine.Statement.BALANCE_SHEET
    assert cash.currency == "USD"
    batch = result.batch
    batch.refresh_from_db()
    assert cash.batch == batch
    assert batch.status == Batch.Status.LOADED
    assert (batch.kind, batch.source, batch.created_by, batch.job) == (
        STATEMENTS,
        "finance",
        uploader,
        "upload",
    )
    assert batch.original_name == "statements.csv"
    assert batch.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert batch.size == len(path.read_bytes())
    assert batch.file.read() == path.read_bytes()
    assert (batch.rows_read, batch.rows_inserted, batch.rows_rejected) == (4, 4, 0)
    assert batch.started_at is not None and batch.finished_at >= batch.started_at


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("latin-1", False), ("utf-8", True), ("utf-8", False)],
    ids=["latin-1", "utf-8-with-bom", "utf-8-without-bom"],
)
def test_it_loads_a_spanish_semicolon_file_with_decimal_commas(tmp_path, encoding, bom):
    path = write(tmp_path / "estados.csv", SPANISH_STATEMENTS, encoding=encoding, bom=bom)

    result = load(path)

    assert result.inserted == 3
    assert statement_amounts() == {
        ("Abaco SV", "Cartera de préstamos, bruta"): Decimal("1234567.89"),
        ("Abaco SV", "Ingresos por intereses"): Decimal("98765.40"),
        ("Abaco SV", "Provisión para pérdidas"): Decimal("-12345.60"),
    }
    portfolio = FinancialStatementLine.objects.get(line_item__startswith="Cartera")
    assert portfolio.period_end == date(2024, 12, 31)
    assert portfolio.statement == FinancialStatementLine.Statement.BALANCE_SHEET
    income = FinancialStatementLine.objects.get(line_item="Ingresos por intereses")
    assert income.statement == FinancialStatementLine.Statement.PROFIT_AND_LOSS


def test_it_defaults_the_currency_to_usd_when_the_file_has_no_currency_column(tmp_path):
    path = write(
        tmp_path / "s.csv",
        "company,period_end,statement,line_item,amount\nAbaco SV,2024-06-30,balance,Cash,10\n",
    )

    load(path)

    assert FinancialStatementLine.objects.get().currency == "USD"


def test_it_reads_headers_whatever_their_case_and_spacing(tmp_path):
    path = write(
        tmp_path / "s.csv",
        " COMPANY , Period End ,statement, line item ,Amount\nAbaco SV,2024-06-30,balance,Cash,10\n",
    )

    load(path)

    assert statement_amounts() == {("Abaco SV", "Cash"): Decimal("10.00")}


def test_it_loads_spanish_marketing_spend_with_every_month_format_as_the_first_day(tmp_path):
    path = write(
        tmp_path / "gasto.csv",
        "Mes;Canal;Segmento;Gasto;Moneda\n"
        "2024-01;Meta;pyme;1.500,25;USD\n"
        "02/2024;google;;2.000;USD\n"
        "2024-03-15;radio;pyme;0,5;USD\n",
        encoding="latin-1",
    )

    result = load(path, MARKETING)

    assert result.inserted == 3
    rows = {(s.month, s.channel, s.segment): s.spend for s in MarketingSpend.objects.all()}
    assert rows == {
        (date(2024, 1, 1), "meta", "pyme"): Decimal("1500.25"),
        (date(2024, 2, 1), "google", ""): Decimal("2000.00"),
        (date(2024, 3, 1), "radio", "pyme"): Decimal("0.50"),
    }


def test_it_loads_marketing_spend_without_a_segment_column(tmp_path):
    path = write(tmp_path / "spend.csv", "month,channel,spend\n2024-05,meta,300\n")

    load(path, MARKETING)

    spend = MarketingSpend.objects.get()
    assert (spend.month, spend.channel, spend.segment, spend.currency) == (
        date(2024, 5, 1),
        "meta",
        "",
        "USD",
    )


def test_it_loads_the_first_sheet_of_an_xlsx_workbook_rounding_cells_as_shown_not_as_floats(
    tmp_path,
):
    path = workbook(
        tmp_path / "statements.xlsx",
        [
            ["entidad", "fecha_cierre", "estado", "partida", "monto", "moneda"],
            ["Abaco SV", datetime(2024, 12, 31), "balance", "Caja", 1234567.89, "USD"],
            ["Abaco SV", "31/12/2024", "resultados", "Ingresos", 10.005, "USD"],
            [None, None, None, None, None, None],
            ["Abaco GT", date(2024, 12, 31), "balance_sheet", "Caja", 100, "usd"],
        ],
        second_sheet=[["not", "a", "statement"], [1, 2, 3]],
    )

    result = load(path)

    assert (result.rows_read, result.inserted) == (3, 3)
    assert statement_amounts() == {
        ("Abaco SV", "Caja"): Decimal("1234567.89"),
        ("Abaco SV", "Ingresos"): Decimal("10.01"),  # the float 10.005 would round down
        ("Abaco GT", "Caja"): Decimal("100.00"),
    }
    assert set(FinancialStatementLine.objects.values_list("period_end", flat=True)) == {
        date(2024, 12, 31)
    }
    assert [str(p) for p in result.warnings] == [
        "statements.xlsx, row 3, column monto: 1 value(s) carry digits beyond cents; rounded to 2 decimals"
    ]


def test_it_loads_marketing_spend_from_a_workbook_with_date_cells(tmp_path):
    path = workbook(
        tmp_path / "spend.xlsx",
        [
            ["Month", "Channel", "Segment", "Spend", "Currency"],
            [date(2024, 7, 1), "meta", "", 99.5, "USD"],
        ],
    )

    load(path, MARKETING)

    spend = MarketingSpend.objects.get()
    assert (spend.month, spend.spend) == (date(2024, 7, 1), Decimal("99.50"))


def test_it_warns_about_an_unknown_column_and_loads_the_rest(tmp_path):
    path = write(
        tmp_path / "s.csv",
        "company,period_end,statement,line_item,amount,notes\nAbaco SV,2024-06-30,balance,Cash,10,x\n",
    )

    result = load(path)

    assert result.inserted == 1
    assert [str(p) for p in result.warnings] == [
        "s.csv, row 1, column notes: unknown column, ignored"
    ]
    result.batch.refresh_from_db()
    assert result.batch.warnings[0]["reason"] == "unknown column, ignored"


# ---------------------------------------------------------------------------- checks

STATEMENT_HEADER = "company,period_end,statement,line_item,amount,currency\n"
GOOD_LINE = "Abaco SV,2024-12-31,balance_sheet,Cash,100.00,USD\n"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        pytest.param(
            STATEMENTS,
            "company,period_end,statement,line_item,currency\nAbaco SV,2024-12-31,balance,Cash,USD\n",
            "f.csv, row 1, column amount: required column is missing from the header "
            "(accepted names: amount, monto)",
            id="missing-column",
        ),
        pytest.param(
            STATEMENTS,
            "company,period_end,statement,line_item,amount,monto\nAbaco SV,2024-12-31,balance,Cash,1,1\n",
            "f.csv, row 1, column monto: column appears twice in the header",
            id="column-twice",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + GOOD_LINE + "Abaco SV,2024-12-31,balance_sheet,Bank,12.3x,USD\n",
            "f.csv, row 3, column amount: not a number (value '12.3x')",
            id="bad-number",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + "Abaco SV,2024-02-30,balance_sheet,Cash,1,USD\n",
            "f.csv, row 2, column period_end: not a date (expected YYYY-MM-DD or DD/MM/YYYY) "
            "(value '2024-02-30')",
            id="bad-date",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + "Abaco SV,2024-12-31,cash_flow,Cash,1,USD\n",
            "f.csv, row 2, column statement: unknown statement type (expected balance_sheet, "
            "profit_and_loss, balance or resultados) (value 'cash_flow')",
            id="unknown-statement",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + "Abaco SV,2024-12-31,balance_sheet,Cash,1,XYZ\n",
            "f.csv, row 2, column currency: unknown currency (not an ISO 4217 code) (value 'XYZ')",
            id="unknown-currency",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + ",2024-12-31,balance_sheet,Cash,1,USD\n",
            "f.csv, row 2, column company: required value is missing",
            id="missing-value",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER + "Abaco SV,2024-12-31,balance_sheet," + "x" * 129 + ",1,USD\n",
            "f.csv, row 2, column line_item: longer than 128 characters (value '"
            + "x" * 129
            + "')",
            id="too-long",
        ),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER
            + GOOD_LINE
            + "Abaco GT,2024-12-31,balance_sheet,Cash,5,USD\n"
            + GOOD_LINE,
            "f.csv, row 4, column company: duplicate key: first seen on row 2 "
            "(value 'Abaco SV / 2024-12-31 / balance_sheet / Cash')",
            id="duplicate-key",
        ),
        pytest.param(
            MARKETING,
            "mes,canal,gasto\n2024-01,meta,10\n2024-02,meta,-5.00\n",
            "f.csv, row 3, column gasto: must not be negative (value '-5.00')",
            id="negative-spend",
        ),
        pytest.param(
            MARKETING,
            "month,channel,spend\n2024-13,meta,10\n",
            "f.csv, row 2, column month: not a month (expected YYYY-MM, YYYY-MM-DD or MM/YYYY) "
            "(value '2024-13')",
            id="bad-month",
        ),
        pytest.param(
            MARKETING,
            "month,channel,spend\n2024-01,Meta,10\n2024-01,meta,12\n",
            "f.csv, row 3, column month: duplicate key: first seen on row 2 "
            "(value '2024-01-01 / meta / ')",
            id="duplicate-channel-in-another-case",
        ),
        pytest.param(STATEMENTS, "", "f.csv: the file is empty (no header line)", id="empty"),
        pytest.param(
            STATEMENTS,
            STATEMENT_HEADER,
            "f.csv: the file has a header but no rows",
            id="header-only",
        ),
    ],
)
def test_it_rejects_a_bad_file_naming_row_column_and_value(tmp_path, kind, text, message):
    path = write(tmp_path / "f.csv", text)

    assert rejection(path, kind) == [message]


def test_it_rejects_a_binary_file(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

    assert rejection(path) == [
        "f.csv: this is a binary file, not a CSV text file or an XLSX workbook"
    ]


def test_it_rejects_a_zip_that_is_not_a_workbook(tmp_path):
    import zipfile

    path = tmp_path / "f.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")

    (message,) = rejection(path)
    assert message.startswith("f.xlsx: not a readable XLSX workbook")


def test_it_lists_every_bad_row_not_only_the_first(tmp_path):
    path = write(
        tmp_path / "f.csv",
        STATEMENT_HEADER
        + "Abaco SV,2024-12-31,balance_sheet,Cash,abc,USD\n"
        + "Abaco SV,31-12-2024,balance_sheet,Bank,1,EUR\n"
        + "Abaco SV,2024-12-31,balance_sheet,Other,1,usd\n",
    )

    assert rejection(path) == [
        "f.csv, row 2, column amount: not a number (value 'abc')",
        "f.csv, row 3, column period_end: not a date (expected YYYY-MM-DD or DD/MM/YYYY) "
        "(value '31-12-2024')",
    ]


def test_a_comma_file_does_not_read_a_decimal_comma(tmp_path):
    path = write(
        tmp_path / "f.csv", STATEMENT_HEADER + 'Abaco SV,2024-12-31,balance,Cash,"12,5",USD\n'
    )

    assert rejection(path) == ["f.csv, row 2, column amount: not a number (value '12,5')"]


def test_it_refuses_a_kind_that_is_not_statements_or_marketing_spend(tmp_path):
    path = write(tmp_path / "f.csv", STATEMENT_HEADER + GOOD_LINE)

    with pytest.raises(ValueError, match="not a statements kind"):
        load(path, Batch.Kind.LOANS)
    assert not Batch.objects.exists()


# ---------------------------------------------------------------------------- all or nothing


def test_one_bad_row_near_the_end_writes_nothing_and_fails_the_batch(tmp_path):
    lines = [f"Abaco SV,2024-12-31,balance_sheet,Line {n},{n}.00,USD\n" for n in range(1, 200)]
    lines.append("Abaco SV,2024-12-31,balance_sheet,Line 200,two hundred,USD\n")
    path = write(tmp_path / "f.csv", STATEMENT_HEADER + "".join(lines))

    with pytest.raises(TapeRejected):
        load(path)

    assert FinancialStatementLine.objects.count() == 0
    batch = Batch.objects.get()
    assert batch.status == Batch.Status.FAILED
    assert (batch.rows_read, batch.rows_inserted, batch.rows_rejected) == (200, 0, 1)
    assert batch.errors == [
        {
            "file": "f.csv",
            "row": 201,
            "column": "amount",
            "value": "two hundred",
            "reason": "not a number",
        }
    ]
    assert batch.file.read() == path.read_bytes()  # the raw file is kept even when it fails


def test_quarantine_loads_the_good_rows_and_lists_exactly_the_bad_ones(tmp_path):
    path = write(
        tmp_path / "f.csv",
        STATEMENT_HEADER
        + GOOD_LINE
        + "Abaco SV,2024-12-31,balance_sheet,Bank,oops,USD\n"
        + "Abaco SV,2024-12-31,profit_and_loss,Interest income,50,USD\n"
        + GOOD_LINE
        + "Abaco SV,2024-12-31,nope,Fees,1,USD\n",
    )

    result = load(path, quarantine=True)

    assert statement_amounts() == {
        ("Abaco SV", "Cash"): Decimal("100.00"),
        ("Abaco SV", "Interest income"): Decimal("50.00"),
    }
    assert (result.rows_read, result.inserted, result.rejected) == (5, 2, 3)
    assert [(p.row, p.column) for p in result.errors] == [
        (3, "amount"),
        (5, "company"),
        (6, "statement"),
    ]
    result.batch.refresh_from_db()
    assert result.batch.status == Batch.Status.LOADED
    assert (result.batch.rows_inserted, result.batch.rows_rejected) == (2, 3)
    assert [e["row"] for e in result.batch.errors] == [3, 5, 6]


def test_quarantine_does_not_load_a_file_missing_a_required_column(tmp_path):
    path = write(tmp_path / "f.csv", "month,channel\n2024-01,meta\n")

    assert rejection(path, MARKETING, quarantine=True) == [
        "f.csv, row 1, column spend: required column is missing from the header "
        "(accepted names: spend, gasto)"
    ]


# ---------------------------------------------------------------------------- idempotency


def test_the_same_bytes_twice_make_a_duplicate_batch_and_load_nothing(tmp_path):
    path = write(tmp_path / "statements.csv", ENGLISH_STATEMENTS)
    first = load(path)
    stamps = dict(FinancialStatementLine.objects.values_list("line_item", "updated_at"))

    again = load(tmp_path / "statements.csv")

    assert again.batch.status == Batch.Status.DUPLICATE
    assert again.batch.duplicate_of == first.batch
    assert again.batch.file.name == first.batch.file.name
    assert (again.rows_read, again.inserted, again.updated) == (0, 0, 0)
    assert FinancialStatementLine.objects.count() == 4
    assert dict(FinancialStatementLine.objects.values_list("line_item", "updated_at")) == stamps
    assert set(FinancialStatementLine.objects.values_list("batch", flat=True)) == {first.batch.pk}
    assert again.summary().splitlines()[1] == (
        f"{'statements.csv':<32} same bytes as batch {first.batch.pk}: nothing to load"
    )


def test_bytes_that_failed_before_are_checked_again_not_treated_as_a_duplicate(tmp_path):
    path = write(tmp_path / "f.csv", STATEMENT_HEADER + "Abaco SV,2024-12-31,x,Cash,1,USD\n")
    rejection(path)

    with pytest.raises(TapeRejected):
        load(path)

    assert list(Batch.objects.values_list("status", flat=True)) == [Batch.Status.FAILED] * 2


def test_a_reupload_with_one_amount_changed_updates_exactly_that_row(tmp_path):
    first = load(write(tmp_path / "v1.csv", ENGLISH_STATEMENTS))
    changed = ENGLISH_STATEMENTS.replace("125000.50", "126000.00")

    second = load(write(tmp_path / "v2.csv", changed))

    assert (second.rows_read, second.inserted, second.updated, second.unchanged) == (4, 0, 1, 3)
    assert statement_amounts()[("Abaco SV", "Cash")] == Decimal("126000.00")
    batches = dict(FinancialStatementLine.objects.values_list("line_item", "batch"))
    assert batches == {
        "Cash": second.batch.pk,
        "Loan portfolio, gross": first.batch.pk,
        "Interest income": first.batch.pk,
    }
    second.batch.refresh_from_db()
    assert (second.batch.rows_updated, second.batch.rows_unchanged) == (1, 3)
    assert second.summary().splitlines()[1].split() == ["v2.csv", "4", "0", "1", "3", "0"]


def test_a_reupload_of_marketing_spend_inserts_new_months_and_keeps_the_old(tmp_path):
    load(write(tmp_path / "a.csv", "month,channel,spend\n2024-01,meta,10\n"), MARKETING)

    result = load(
        write(tmp_path / "b.csv", "month,channel,spend\n2024-01,meta,10.00\n2024-02,meta,20\n"),
        MARKETING,
    )

    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 1)
    assert MarketingSpend.objects.count() == 2


# ---------------------------------------------------------------------------- constraints


def test_the_database_refuses_marketing_spend_not_on_the_first_of_a_month():
    batch = batch_create(kind=MARKETING)

    with pytest.raises(IntegrityError), transaction.atomic():
        MarketingSpend.objects.create(
            month=date(2024, 1, 15), channel="meta", spend=Decimal("1"), batch=batch
        )


def test_the_database_refuses_negative_marketing_spend():
    batch = batch_create(kind=MARKETING)

    with pytest.raises(IntegrityError), transaction.atomic():
        MarketingSpend.objects.create(
            month=date(2024, 1, 1), channel="meta", spend=Decimal("-1"), batch=batch
        )
