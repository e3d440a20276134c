"""Financial statements and marketing spend: the two small files staff upload besides the tape.

They arrive as CSV (UTF-8 with or without BOM, or Latin-1; ``,`` or ``;``; decimal commas in
``;`` files) or as an XLSX workbook (first sheet), with English or Spanish headers. They are a few
thousand rows at most, so they are read and checked in Python and written through the ORM; the
lineage, idempotency and all-or-nothing rules are the tape import's, through the same helpers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from django.db import models, transaction
from django.utils import timezone

from abaco.dates import month_end
from loans.imports.files import BOM, TapeFile
from loans.imports.specs import ISO_CURRENCIES
from loans.lineage import (
    ERROR,
    SUMMARY_HEADER,
    WARNING,
    LoadTally,
    Problem,
    TapeRejected,
    batch_finish,
    batch_for,
    duplicate_line,
    summary_line,
)
from loans.models import Batch, FinancialStatementLine, MarketingSpend

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
MONEY_LIMIT = Decimal(10) ** 16  # numeric(18, 2): at most 16 digits before the point
ZIP_MAGIC = b"PK\x03\x04"  # every XLSX workbook is a ZIP archive


# ---------------------------------------------------------------------------- result


@dataclass(kw_only=True)
class StatementsImport(LoadTally):
    """What one statements or marketing-spend upload did."""

    batch: Batch

    @property
    def batches(self) -> list[Batch]:
        return [self.batch]

    @property
    def rejected_rows(self) -> list[Problem]:
        return self.errors

    @property
    def duplicate(self) -> bool:
        return self.batch.status == Batch.Status.DUPLICATE

    def summary(self) -> str:
        name = self.batch.original_name
        row = duplicate_line(self.batch) if self.duplicate else summary_line(name, self)
        return f"{SUMMARY_HEADER}\n{row}"


# ---------------------------------------------------------------------------- values


class _Bad(ValueError):
    """A cell that cannot be read; the message is the reason shown to the uploader."""


class _Unreadable(Exception):
    """The file as a whole cannot be read (empty, binary, broken workbook)."""


_POINT_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d*)?(?:[eE][-+]?\d+)?")
_COMMA_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:\.\d{3})+|\d*)(?:,\d*)?")


def _money(*, non_negative: bool = False) -> Callable[[str, bool], Decimal]:
    def parse(text: str, decimal_comma: bool) -> Decimal:
        s = text.replace(" ", "").replace("\u00a0", "")
        negative = s.startswith("(") and s.endswith(")")  # accountants' (1,234.56)
        if negative:
            s = s[1:-1]
        pattern = _COMMA_NUMBER if decimal_comma else _POINT_NUMBER
        if not pattern.fullmatch(s) or not any(c.isdigit() for c in s):
            raise _Bad("not a number")
        s = s.replace(".", "").replace(",", ".") if decimal_comma else s.replace(",", "")
        try:
            value = Decimal(s)
        except InvalidOperation as exc:  # "e5" passes the pattern
            raise _Bad("not a number") from exc
        if negative:
            value = -value
        if abs(value) >= MONEY_LIMIT:
            raise _Bad("too large (at most 16 digits before the decimal point)")
        if non_negative and value < 0:
            raise _Bad("must not be negative")
        return value

    return parse


# Workbook date cells arrive as "2024-12-31 00:00:00".
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]00:00(?::00)?)?")
_DAY_FIRST = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_YEAR_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_MONTH_YEAR = re.compile(r"(\d{1,2})/(\d{4})")


def _date_or_none(text: str) -> date | None:
    try:
        if m := _ISO_DATE.fullmatch(text):
            return date(int(m[1]), int(m[2]), int(m[3]))
        if m := _DAY_FIRST.fullmatch(text):
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None
    return None


def _period_end(text: str, decimal_comma: bool) -> date:
    if (value := _date_or_none(text)) is None:
        raise _Bad("not a date (expected YYYY-MM-DD or DD/MM/YYYY)")
    return value


def _month(text: str, decimal_comma: bool) -> date:
    """Any way of naming a month, as its first day: 2024-03, 03/2024, 2024-03-15 → 2024-03-01."""
    year_month = None
    if m := _YEAR_MONTH.fullmatch(text):
        year_month = int(m[1]), int(m[2])
    elif m := _MONTH_YEAR.fullmatch(text):
        year_month = int(m[2]), int(m[1])
    elif day := _date_or_none(text):
        year_month = day.year, day.month
    if year_month and 1 <= year_month[1] <= 12:
        return date(year_month[0], year_month[1], 1)
    raise _Bad("not a month (expected YYYY-MM, YYYY-MM-DD or MM/YYYY)")


_STATEMENTS = {
    "balance_sheet": FinancialStatementLine.Statement.BALANCE_SHEET,
    "balance": FinancialStatementLine.Statement.BALANCE_SHEET,
    "balance_general": FinancialStatementLine.Statement.BALANCE_SHEET,
    "profit_and_loss": FinancialStatementLine.Statement.PROFIT_AND_LOSS,
    "p&l": FinancialStatementLine.Statement.PROFIT_AND_LOSS,
    "resultados": FinancialStatementLine.Statement.PROFIT_AND_LOSS,
    "estado_de_resultados": FinancialStatementLine.Statement.PROFIT_AND_LOSS,
}


def _statement(text: str, decimal_comma: bool) -> str:
    statement = _STATEMENTS.get(_normalized(text))
    if statement is None:
        raise _Bad(
            "unknown statement type (expected balance_sheet, profit_and_loss, balance or resultados)"
        )
    return statement.value  # a plain str: it is compared and hashed with values from the database


def _currency(text: str, decimal_comma: bool) -> str:
    code = text.upper()
    if code not in ISO_CURRENCIES:
        raise _Bad("unknown currency (not an ISO 4217 code)")
    return code


def _text(max_length: int, *, lower: bool = False) -> Callable[[str, bool], str]:
    def parse(text: str, decimal_comma: bool) -> str:
        if len(text) > max_length:
            raise _Bad(f"longer than {max_length} characters")
        return text.lower() if lower else text

    return parse


# ---------------------------------------------------------------------------- file specs


@dataclass(frozen=True)
class _Column:
    name: str  # the model field
    headers: tuple[str, ...]  # accepted headers, normalized: English first, then Spanish
    parse: Callable[[str, bool], object]  # (cell text, decimal comma?) -> value, or raises _Bad
    required: bool = True  # the header must carry it and every row a value
    default: object = None  # for an optional column: absent from the header, or a blank cell
    money: bool = False


@dataclass(frozen=True)
class _Spec:
    model: type[models.Model]
    columns: tuple[_Column, ...]
    key: tuple[str, ...]

    @property
    def values(self) -> list[str]:
        return [c.name for c in self.columns if c.name not in self.key]


_CURRENCY = _Column("currency", ("currency", "moneda"), _currency, required=False, default="USD")

SPECS: dict[str, _Spec] = {
    Batch.Kind.STATEMENTS: _Spec(
        model=FinancialStatementLine,
        key=("company", "period_end", "statement", "line_item"),
        columns=(
            _Column("company", ("company", "entidad"), _text(32)),
            _Column("period_end", ("period_end", "fecha_cierre"), _period_end),
            _Column("statement", ("statement", "estado"), _statement),
            _Column("line_item", ("line_item", "partida"), _text(128)),
            _Column("amount", ("amount", "monto"), _money(), money=True),
            _CURRENCY,
        ),
    ),
    Batch.Kind.MARKETING_SPEND: _Spec(
        model=MarketingSpend,
        key=("month", "channel", "segment"),
        columns=(
            _Column("month", ("month", "mes"), _month),
            # Channels are codes ("meta", "google"): "Meta" and "meta" are one channel.
            _Column("channel", ("channel", "canal"), _text(64, lower=True)),
            _Column("segment", ("segment", "segmento"), _text(64), required=False, default=""),
            _Column("spend", ("spend", "gasto"), _money(non_negative=True), money=True),
            _CURRENCY,
        ),
    ),
}


def _normalized(header: str) -> str:
    """' Fecha Cierre ' → 'fecha_cierre': headers match whatever their case and spacing."""
    return re.sub(r"[\s_-]+", "_", header.strip().lower()).strip("_")


# ---------------------------------------------------------------------------- reading


@dataclass
class _Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (row number as the uploader counts it, cells)
    delimiter: str | None  # None for a workbook


def _decode(raw: bytes) -> tuple[str, str]:
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    try:
        return body.decode("utf-8"), "UTF8"
    except UnicodeDecodeError:
        return body.decode("latin-1"), "LATIN1"


def _table(raw: bytes) -> _Table:
    if raw.startswith(ZIP_MAGIC):
        return _workbook_table(raw)
    if b"\x00" in raw:
        raise _Unreadable("this is a binary file, not a CSV text file or an XLSX workbook")
    text, _ = _decode(raw)
    if not text.strip():
        raise _Unreadable("the file is empty (no header line)")
    first_line = text.lstrip("\r\n").splitlines()[0]
    # Sniff on the header line, where no value can hide a decimal comma.
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise _Unreadable(f"unreadable CSV: {exc}") from exc
    return _Table(
        header=records[0],
        rows=list(enumerate(records[1:], start=2)),
        delimiter=delimiter,
    )


def _workbook_table(raw: bytes) -> _Table:
    # pandas costs every process that imports the upload service ~45 MB and 0.25 s: only a
    # workbook upload needs it.
    import pandas as pd

    try:
        # dtype=str: numbers arrive as their text and are parsed to Decimal here, never float.
        frame = pd.read_excel(
            io.BytesIO(raw),
            sheet_name=0,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            engine="openpyxl",
        )
    except Exception as exc:  # openpyxl raises many kinds for a damaged or foreign archive
        raise _Unreadable(f"not a readable XLSX workbook ({type(exc).__name__})") from exc
    records = [[str(cell) for cell in row] for row in frame.itertuples(index=False)]
    if not records or not any(cell.strip() for cell in records[0]):
        raise _Unreadable("the file is empty (no header line)")
    return _Table(header=records[0], rows=list(enumerate(records[1:], start=2)), delimiter=None)


# ---------------------------------------------------------------------------- checking


@dataclass
class _Checked:
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0
    good: list[dict] = field(default_factory=list)  # parsed rows without any error
    rejected_rows: set[int] = field(default_factory=set)
    fatal: bool = False  # the file cannot be loaded at all, quarantine or not


def _check(table: _Table, spec: _Spec, name: str) -> _Checked:
    checked = _Checked()

    def problem(row, column, value, reason, severity=ERROR) -> None:
        checked.problems.append(Problem(name, row, column, str(value or ""), reason, severity))
        if severity == ERROR and row and row > 1:
            checked.rejected_rows.add(row)

    by_header = {alias: column for column in spec.columns for alias in column.headers}
    positions: dict[str, int] = {}
    labels: dict[str, str] = {}  # the column as the uploader wrote it, for messages
    for position, header in enumerate(table.header):
        if not header.strip():
            continue
        column = by_header.get(_normalized(header))
        if column is None:
            problem(1, header.strip(), "", "unknown column, ignored", WARNING)
        elif column.name in positions:
            problem(1, header.strip(), "", "column appears twice in the header")
            checked.fatal = True
        else:
            positions[column.name] = position
            labels[column.name] = header.strip()
    for column in spec.columns:
        if column.required and column.name not in positions:
            accepted = ", ".join(column.headers)
            problem(
                1,
                column.name,
                "",
                f"required column is missing from the header (accepted names: {accepted})",
            )
            checked.fatal = True

    rows = [(n, cells) for n, cells in table.rows if any(c.strip() for c in cells)]
    checked.rows_read = len(rows)
    if checked.fatal:
        return checked
    if not rows:
        problem(None, "", "", "the file has a header but no rows")
        checked.fatal = True
        return checked

    def cell(cells: list[str], column: _Column) -> str:
        position = positions[column.name]
        return cells[position].strip() if position < len(cells) else ""

    money_columns = [c for c in spec.columns if c.money and c.name in positions]
    decimal_comma = table.delimiter == ";" and any(
        "," in cell(cells, c) for _, cells in rows for c in money_columns
    )
    noise: dict[str, list[int]] = {}
    first_seen: dict[tuple, int] = {}
    for row, cells in rows:
        values: dict[str, object] = {}
        for column in spec.columns:
            if column.name not in positions:
                values[column.name] = column.default
                continue
            text = cell(cells, column)
            if not text:
                if column.required:
                    problem(row, labels[column.name], "", "required value is missing")
                else:
                    values[column.name] = column.default
                continue
            try:
                value = column.parse(text, decimal_comma)
            except _Bad as bad:
                problem(row, labels[column.name], text, str(bad))
                continue
            if column.money:
                cents = value.quantize(CENT, rounding=ROUND_HALF_UP)
                if cents != value:
                    noise.setdefault(column.name, []).append(row)
                value = cents
            values[column.name] = value
        if all(k in values for k in spec.key):
            key = tuple(values[k] for k in spec.key)
            if key in first_seen:
                shown = " / ".join(v.isoformat() if isinstance(v, date) else str(v) for v in key)
                problem(
                    row,
                    labels[spec.key[0]],
                    shown,
                    f"duplicate key: first seen on row {first_seen[key]}",
                )
            else:
                first_seen[key] = row
        if row not in checked.rejected_rows:
            checked.good.append(values)
    for column_name, noisy_rows in noise.items():
        problem(
            noisy_rows[0],
            labels[column_name],
            "",
            f"{len(noisy_rows)} value(s) carry digits beyond cents; rounded to 2 decimals",
            WARNING,
        )
    return checked


# ---------------------------------------------------------------------------- writing


def _upsert(spec: _Spec, rows: list[dict], batch: Batch) -> tuple[int, int, int]:
    """Insert new keys, update changed rows, leave identical rows untouched (and their batch)."""
    model = spec.model
    narrowed = {f"{k}__in": {row[k] for row in rows} for k in spec.key}
    n = len(spec.key)
    existing = {
        found[:n]: found[n:]
        for found in model.objects.filter(**narrowed).values_list(*spec.key, *spec.values)
    }
    inserted = updated = unchanged = 0
    to_write = []
    for row in rows:
        key = tuple(row[k] for k in spec.key)
        current = existing.get(key)
        if current is None:
            inserted += 1
        elif current != tuple(row[v] for v in spec.values):
            updated += 1
        else:
            unchanged += 1
            continue
        to_write.append(model(**row, batch=batch))
    model.objects.bulk_create(
        to_write,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=list(spec.key),
        update_fields=[*spec.values, "batch", "updated_at"],
    )
    return inserted, updated, unchanged


# ---------------------------------------------------------------------------- service


def _data_through(rows: list[dict]) -> date | None:
    """The cut-off of a statements or marketing-spend file: its latest period end (a spend
    month runs to its last day)."""
    ends = [row["period_end"] for row in rows if row.get("period_end")]
    ends += [month_end(row["month"]) for row in rows if row.get("month")]
    return max(ends, default=None)


def statements_import(
    *,
    path: Path,
    kind: str,
    source: str,
    by=None,
    job: str = "",
    quarantine: bool = False,
) -> StatementsImport:
    """Load a financial-statements or marketing-spend file (CSV or XLSX) all or nothing.

    ``kind`` is ``Batch.Kind.STATEMENTS`` or ``Batch.Kind.MARKETING_SPEND``. The raw bytes are
    kept and recorded in a ``Batch``; bytes loaded before make a DUPLICATE batch and load nothing.
    Any error raises ``TapeRejected`` with every problem, the batch FAILED and nothing written;
    with ``quarantine`` the valid rows load and exactly the bad rows are listed.
    """
    spec = SPECS.get(kind)
    if spec is None:
        raise ValueError(f"not a statements kind: {kind!r} (expected one of {sorted(SPECS)})")
    path = Path(path)
    raw = path.read_bytes()
    tape_file = TapeFile(
        name=path.name,
        kind=kind,
        opener=lambda: io.BytesIO(raw),  # exactly the bytes hashed and checked
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        encoding="BINARY" if raw.startswith(ZIP_MAGIC) else _decode(raw)[1],
        has_bom=raw.startswith(BOM),
        binary=b"\x00" in raw,
    )
    batch = batch_for(tape_file, kind=kind, source=source, by=by, job=job)
    result = StatementsImport(batch=batch)
    if batch.status == Batch.Status.DUPLICATE:
        return result

    batch.status, batch.started_at = Batch.Status.RUNNING, timezone.now()
    batch.save(update_fields=["status", "started_at"])
    try:
        try:
            checked = _check(_table(raw), spec, path.name)
        except _Unreadable as unreadable:
            checked = _Checked(problems=[Problem(path.name, None, "", "", str(unreadable))])
            checked.fatal = True
        result.problems = checked.problems
        result.rows_read = checked.rows_read
        result.rejected = len(checked.rejected_rows)
        if checked.fatal or (result.errors and not quarantine):
            raise TapeRejected(result.problems)
        with transaction.atomic():  # the rows and their batch's LOADED status commit together
            result.inserted, result.updated, result.unchanged = _upsert(spec, checked.good, batch)
            batch.data_through = _data_through(checked.good)
            batch_finish(batch, status=Batch.Status.LOADED, load=result)
    except TapeRejected as rejected:
        batch_finish(batch, status=Batch.Status.FAILED, load=result)
        logger.info(
            "statements rejected",
            extra={"errors": len(rejected.problems), "source": source, "kind": kind},
        )
        raise
    return result
