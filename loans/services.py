"""Writes to the loan book. The tape import is the one way data gets in: admin uploads, the
``import_tape`` command, the scheduled Cascade job and ``demo_data`` all call ``tape_import``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.db import connection, transaction
from django.utils import timezone

from loans.imports.files import TapeFile, tape_files_find
from loans.imports.loader import ERROR, FileLoad, FileLoader, Problem, SourceFormat, TapeRejected
from loans.models import Batch

logger = logging.getLogger(__name__)


@dataclass
class TapeImport:
    """What an import did, file by file."""

    files: list[FileLoad] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duplicates: list[Batch] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [
            f"{'file':<32} {'read':>10} {'inserted':>10} {'updated':>10} {'unchanged':>10} {'rejected':>9}"
        ]
        for f in self.files:
            lines.append(
                f"{f.tape_file.name:<32} {f.rows_read:>10,} {f.inserted:>10,} {f.updated:>10,} {f.unchanged:>10,} {f.rejected:>9,}"
            )
        for batch in self.duplicates:
            lines.append(
                f"{batch.original_name:<32} same bytes as batch {batch.duplicate_of_id}: nothing to load"
            )
        for name in self.skipped:
            lines.append(f"{name:<32} not a tape file: skipped")
        return "\n".join(lines)


def _batch_for(tape_file: TapeFile, *, source: str, by, job: str) -> Batch:
    """Keep the raw file (always, even when it fails) and open its lineage record."""
    earlier = Batch.objects.filter(sha256=tape_file.sha256, status=Batch.Status.LOADED).first()
    batch = Batch(
        source=source,
        kind=tape_file.kind,
        original_name=tape_file.name,
        sha256=tape_file.sha256,
        size=tape_file.size,
        created_by=by,
        job=job,
        status=Batch.Status.DUPLICATE if earlier else Batch.Status.PENDING,
        duplicate_of=earlier,
    )
    if earlier:
        # Same bytes: point at the earlier batch and its stored file instead of storing a copy.
        batch.file.name = earlier.file.name
    else:
        with tape_file.open() as stream:
            batch.file.save(Path(tape_file.name.replace(":", "_")).name, File(stream), save=False)
    batch.save()
    return batch


def tape_import(
    *,
    path: Path | str,
    source: str,
    by=None,
    job: str = "",
    fmt: SourceFormat | None = None,
    quarantine: bool = False,
    aliases: dict[str, str] | None = None,
) -> TapeImport:
    """Load a tape (a folder of CSVs, a ZIP, or one CSV) all or nothing.

    With ``quarantine`` the valid rows load and exactly the bad rows are held back and listed.
    Files whose bytes were loaded before are recognized by SHA-256 and not loaded again.
    Raises ``TapeRejected`` (database untouched, batches marked failed) when any file has errors.
    """
    fmt = fmt or SourceFormat()
    found, skipped = tape_files_find(Path(path), aliases=aliases)
    result = TapeImport(skipped=skipped)
    if not found:
        problem = Problem(
            Path(path).name,
            None,
            "",
            "",
            "no tape files found (expected customers.csv, loans.csv, schedules.csv or transactions.csv)",
        )
        raise TapeRejected([problem])

    started = timezone.now()
    to_load: list[tuple[TapeFile, Batch]] = []
    for tape_file in found:
        batch = _batch_for(tape_file, source=source, by=by, job=job)
        result.batches.append(batch)
        if batch.status == Batch.Status.DUPLICATE:
            result.duplicates.append(batch)
        else:
            to_load.append((tape_file, batch))
    if not to_load:
        return result

    Batch.objects.filter(pk__in=[b.pk for _, b in to_load]).update(
        status=Batch.Status.RUNNING, started_at=started
    )
    loaders = [FileLoader(tape_file, fmt) for tape_file, _ in to_load]
    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor  # psycopg's own cursor: COPY and composed SQL
            loaded_kinds: list[str] = []
            for loader in loaders:
                if loader.stage(cursor):
                    loader.validate(cursor, loaded_kinds)
                    loaded_kinds.append(loader.spec.kind)
                result.files.append(loader.result)
            if result.errors and not quarantine:
                raise TapeRejected(result.problems)
            if any(
                not lo.result.rows_read for lo in loaders
            ):  # unreadable file: nothing to quarantine
                raise TapeRejected(result.problems)
            for loader, (_, batch) in zip(loaders, to_load, strict=True):
                loader.merge(cursor, batch_id=batch.pk, quarantine=quarantine)
    except TapeRejected as rejected:
        for loader, (_, batch) in zip(loaders, to_load, strict=False):
            _batch_finish(batch, loader.result, Batch.Status.FAILED)
        logger.info("tape rejected", extra={"errors": len(rejected.problems), "source": source})
        raise
    for loader, (_, batch) in zip(loaders, to_load, strict=True):
        _batch_finish(batch, loader.result, Batch.Status.LOADED)
    return result


def _batch_finish(batch: Batch, load: FileLoad, status: str) -> None:
    batch.status = status
    batch.finished_at = timezone.now()
    batch.rows_read = load.rows_read
    batch.rows_inserted = load.inserted if status == Batch.Status.LOADED else 0
    batch.rows_updated = load.updated if status == Batch.Status.LOADED else 0
    batch.rows_unchanged = load.unchanged if status == Batch.Status.LOADED else 0
    batch.rows_rejected = load.rejected
    as_dict = lambda p: {"row": p.row, "column": p.column, "value": p.value, "reason": p.reason}  # noqa: E731
    batch.errors = [as_dict(p) for p in load.problems if p.severity == ERROR]
    batch.warnings = [as_dict(p) for p in load.problems if p.severity != ERROR]
    batch.save()
