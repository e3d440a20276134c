"""Writing a backup: the dump, the raw files the database references, the manifest last."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from django.apps import apps
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import models
from psycopg import sql

from compliance.backups.store import DUMP, ID_FORMAT, MANIFEST, Manifest, backup_storage
from compliance.backups.tools import (
    BackupError,
    connect,
    database_params,
    pg_tools,
    row_counts,
    run_tool,
    sha256_of,
)

logger = logging.getLogger("compliance.backups")


def file_fields() -> list[tuple[str, str]]:
    """(table, column) of every FileField of every installed model: the raw files the database
    references (uploads, fetched exports, rejects), found without naming the apps."""
    found: list[tuple[str, str]] = []
    for model in apps.get_models():
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, models.FileField) and model_field.column:
                found.append((model._meta.db_table, model_field.column))
    return sorted(found)


def _referenced_files(cursor: psycopg.Cursor[Any]) -> list[str]:
    names: set[str] = set()
    for table, column in file_fields():
        cursor.execute(
            sql.SQL("SELECT DISTINCT {c} FROM {t} WHERE {c} <> ''").format(
                c=sql.Identifier(column), t=sql.Identifier(table)
            )
        )
        names.update(row[0] for row in cursor.fetchall())
    return sorted(names)


def backup_create(
    *, now: datetime | None = None, log: Callable[[str], object] = logger.info
) -> Manifest:
    """Dump the database and copy the raw files it references into a new backup; the manifest
    is written last. A referenced raw file that is missing is named in the manifest and fails
    the backup (after the dump is kept: the database copy is still worth having)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    backup_id = now.astimezone(UTC).strftime(ID_FORMAT)
    store = backup_storage()
    if store.exists(f"{backup_id}/{MANIFEST}"):
        raise BackupError(f"backup {backup_id} already exists")
    params = database_params()
    with connect(params) as conn, tempfile.TemporaryDirectory(prefix="abaco-backup-") as tmp:
        conn.autocommit = False
        with conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version_num')")
            snapshot, version_num = cursor.fetchone()  # type: ignore[misc]
            server_major = int(version_num) // 10000
            tables = row_counts(cursor)
            referenced = _referenced_files(cursor)
            pg_dump = pg_tools("pg_dump", server_major=server_major)
            dump_path = Path(tmp) / DUMP
            log(f"dumping {params['PGDATABASE']} with {pg_dump} ({len(tables)} tables)")
            dump_started = time.perf_counter()
            # The transaction stays open until pg_dump has taken its snapshot (and longer: cheap).
            run_tool(
                [
                    str(pg_dump),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    "--no-unlogged-table-data",
                    f"--file={dump_path}",
                ],
                env=params,
            )
            dump_seconds = time.perf_counter() - dump_started
        conn.rollback()
        with dump_path.open("rb") as handle:
            dump_sha, dump_size = sha256_of(handle)
        manifest = Manifest(
            id=backup_id,
            created_at=now.isoformat(),
            database=params["PGDATABASE"],
            server_version=str(version_num),
            pg_dump=str(pg_dump),
            dump={"name": DUMP, "sha256": dump_sha, "size": dump_size},
            tables=tables,
            dump_seconds=round(dump_seconds, 3),
        )
        with dump_path.open("rb") as handle:
            store.save(f"{backup_id}/{DUMP}", File(handle))
    raw = storages["default"]
    for name in referenced:
        if not raw.exists(name):
            manifest.missing.append(name)
            continue
        with raw.open(name, "rb") as handle:
            sha, size = sha256_of(handle)
            handle.seek(0)
            store.save(f"{backup_id}/files/{name}", File(handle))
        manifest.files.append({"name": name, "sha256": sha, "size": size})
    manifest.seconds = round(time.perf_counter() - started, 3)
    store.save(f"{backup_id}/{MANIFEST}", ContentFile(manifest.dumps().encode()))
    log(
        f"backup {backup_id}: {dump_size:,} bytes of dump in {dump_seconds:.1f} s, "
        f"{len(manifest.files)} raw file(s), {sum(tables.values()):,} rows"
    )
    if manifest.missing:
        raise BackupError(
            f"backup {backup_id} is kept, but {len(manifest.missing)} raw file(s) the database "
            f"references are missing from storage: {', '.join(manifest.missing[:10])}"
        )
    return manifest
