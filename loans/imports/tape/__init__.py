"""The tape import, a module per phase. Read ``run`` first: it follows a file from its upload to
the merge. The format it reads is declared once, in ``loans.imports.specs``.

Only ``loans.services`` imports this package (a CI contract says so)."""

from loans.imports.tape.run import Progress, TapeImport, source_format, tape_import
from loans.imports.tape.stage import TYPED_SQL
from loans.imports.tape.staged import FileLoad, SourceFormat

__all__ = [
    "TYPED_SQL",
    "FileLoad",
    "Progress",
    "SourceFormat",
    "TapeImport",
    "source_format",
    "tape_import",
]
