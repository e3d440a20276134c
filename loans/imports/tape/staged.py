"""One tape file on its way from upload to merge: how its source writes it, its staging tables,
what staging learned about it, and what its load counted."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from loans.imports.files import TapeFile
from loans.imports.specs import TAPE_SPECS, Column, FileSpec
from loans.imports.tape.compose import ident
from loans.lineage import ERROR, Problem, errors_of

MAX_LISTED = 1000  # problems kept per file for pages and messages; counts stay exact


@dataclass(frozen=True)
class SourceFormat:
    """How a source writes its files: the Cascade defaults, or a steward's column map."""

    delimiter: str = ","
    decimal_comma: bool = False
    day_first: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # file header (lower case) -> tape column

    @property
    def native(self) -> bool:
        """PostgreSQL's own input parsing reads this format (ISO dates, dot decimals)."""
        return not (self.decimal_comma or self.day_first)


@dataclass
class FileLoad:
    tape_file: TapeFile
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def unchanged(self) -> int:
        return max(self.rows_read - self.rejected - self.inserted - self.updated, 0)


class StagedFile:
    """One tape file through the phases: ``stage``, ``check_values``, ``check_keys``,
    ``check_across``, then ``merge``.

    Every bad row is found in bulk, in the checking phases; bad values land in the file's
    ``rejects`` table (line, column, value, reason). Staging and the file's own checks read
    nothing but the file, and may run on a connection of their own (``pool``); the checks
    across files and the merge run in the import's transaction."""

    def __init__(self, tape_file: TapeFile, fmt: SourceFormat, *, tables: str = ""):
        """``tables``: a suffix for this file's staging tables, the same for every file of one
        import, so that they never meet another import's."""
        self.file = tape_file
        self.spec: FileSpec = TAPE_SPECS[tape_file.kind]
        self.fmt = fmt
        self.suffix = tables
        self.stage_table = f"stage_{self.spec.kind}{tables}"
        self.typed_table = self.typed(self.spec.kind)
        self.rejects_table = self.rejects(self.spec.kind)
        self.totals_table = f"totals_{self.spec.kind}{tables}"  # schedules: per loan
        self.firsts_table = self.firsts(self.spec.kind)  # loans: each loan's first row
        self.repeats_table = f"repeats_{self.spec.kind}{tables}"  # transactions: see check_keys
        # Transactions: each loan's payments in this tape (see payments.payments_pass); one per
        # import.
        self.payments_table = f"payments{tables}"
        self.references_clean = False  # see check_across.prepare_lookups
        # Text columns with a value that starts or ends with a space; None until staged.
        self.padded: set[str] | None = None
        self.result = FileLoad(tape_file)
        self.columns: list[Column] = []  # spec columns present in the file
        self.file_columns: list[str] = []  # staging column per file column, in file order
        self.text_staged = False

    def typed(self, kind: str) -> str:
        """The typed staging table of this import's file of ``kind``."""
        return f"typed_{kind}{self.suffix}"

    def rejects(self, kind: str) -> str:
        """The rejected values of this import's file of ``kind``."""
        return f"rejects_{kind}{self.suffix}"

    def firsts(self, kind: str) -> str:
        """Each key's first row in this import's file of ``kind`` (loans, see check_keys)."""
        return f"firsts_{kind}{self.suffix}"

    def trimmed(self, alias: str | None, column: str) -> sql.Composable:
        """``alias.column`` as stored: trimmed. ``btrim()`` only when stage found a value
        of the file's column starting or ending with a space: on 5M rows it costs a second a
        pass (a hash join on the trimmed loan id took 1.9-2.5 s, on the column itself 1.1 s)."""
        ref = sql.SQL("{}.{}").format(ident(alias), ident(column)) if alias else ident(column)
        if self.padded is None or column in self.padded:
            return sql.SQL("btrim({})").format(ref)
        return ref

    @property
    def tables(self) -> list[str]:
        """The staging tables this file's ``stage`` and checks may create."""
        return [
            self.stage_table,
            self.typed_table,
            self.rejects_table,
            self.totals_table,
            self.firsts_table,
            self.repeats_table,
            *([self.payments_table] if self.spec.kind == "transactions" else []),
        ]

    def problem(
        self, row: int | None, column: str, value: object, reason: str, severity: str = ERROR
    ) -> None:
        self.result.problems.append(
            Problem(self.file.name, row, column, str(value or ""), reason, severity)
        )

    @property
    def errors(self) -> list[Problem]:
        return errors_of(self.result.problems)
