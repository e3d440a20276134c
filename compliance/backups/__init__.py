"""Backups with proof (docs/runbooks/restore.md): a consistent dump of the database and the raw
files it references, with a manifest of checksums, in the ``backups`` storage (a folder, or
Azure Blob Storage), kept per day, week and month; and a restore check that restores the latest
one into a scratch database and proves it whole.

Consistency: the row counts and the list of raw files are read in one REPEATABLE READ
transaction whose snapshot ``pg_dump --snapshot`` then dumps, so the manifest describes exactly
the dump. The dump is made by the ``pg_dump`` of the server's own major version (``pg_tools``):
a newer one writes archives an older ``pg_restore`` cannot read, an older one refuses the server.

A backup is a folder ``<id>/`` (id = UTC time, ``20261207T050000Z``) holding ``database.dump``,
``files/<storage name>`` and ``manifest.json``, written last: a folder without it is incomplete.
"""

from __future__ import annotations

from typing import Any

from compliance.backups.create import backup_create, file_fields
from compliance.backups.restore import RestoreReport, restore_check
from compliance.backups.store import (
    Manifest,
    backup_manifest,
    backup_storage,
    backups_list,
    backups_prune,
    backups_to_keep,
)
from compliance.backups.tools import BackupError, database_params, database_url, pg_tools

__all__ = [
    "BackupError",
    "Manifest",
    "RestoreReport",
    "backup_create",
    "backup_manifest",
    "backup_pipeline",
    "backup_storage",
    "backups_list",
    "backups_prune",
    "backups_to_keep",
    "database_params",
    "database_url",
    "file_fields",
    "pg_tools",
    "restore_check",
    "restore_check_pipeline",
]


# --- the scheduled jobs (integrations.schedules names these by dotted path) ------------------------


def backup_pipeline(ctx: Any) -> None:
    """``backup_daily``: a backup, then retention. ``ctx`` is the pipeline's RunContext
    (compliance sits below integrations, so it is typed by use); a failure alerts."""
    with ctx.step("backup") as step:
        manifest = backup_create(log=step.log)
        step.rows_out = sum(manifest.tables.values())
    with ctx.step("retention") as step:
        for backup_id in backups_prune(log=step.log):
            step.rows_out += 1
            del backup_id


def restore_check_pipeline(ctx: Any) -> None:
    """``restore_check_weekly``: the restore check on the latest backup; a failure alerts."""
    with ctx.step("restore_check") as step:
        report = restore_check(log=step.log)
        for line in report.checks:
            step.log(line)
        step.rows_out = 1
