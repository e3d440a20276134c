"""The restore check: the latest backup restored into a scratch database and proved whole."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from psycopg import sql

from compliance.backups.store import DUMP, Manifest, backup_manifest, backup_storage, backups_list
from compliance.backups.tools import (
    CHUNK,
    BackupError,
    connect,
    database_params,
    database_url,
    pg_tools,
    row_counts,
    run_tool,
    sha256_of,
)

logger = logging.getLogger("compliance.backups")


@dataclass
class RestoreReport:
    backup_id: str
    scratch: str
    download_seconds: float = 0.0
    restore_seconds: float = 0.0
    checks: list[str] = field(default_factory=list)

    def ok(self, message: str) -> None:
        self.checks.append(message)


def _scratch_name(backup_id: str) -> str:
    return f"abaco_restore_check_{backup_id.lower()}_{os.getpid()}"


def _manage(args: list[str], *, database_url: str) -> str:
    """Run ``manage.py`` on the scratch database in a process of its own: the project's code
    reads the restored copy exactly as it reads production, with nothing of this process'
    connections or caches."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # The command needs no more than the settings' production checks ask for.
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": ",".join(settings.ALLOWED_HOSTS) or "localhost",
        "DATABASE_REPLICA_URL": "",
        "KPI_JOBS": "1",
    }
    env.pop("DATABASE_URL_FILE", None)
    done = subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    if done.returncode != 0:
        raise BackupError(
            f"manage.py {' '.join(args)} on the restored copy failed: "
            f"{(done.stderr.strip() or done.stdout.strip())[-2000:]}"
        )
    return done.stdout.strip()


def restore_check(
    *, backup_id: str | None = None, log: Callable[[str], object] = logger.info, keep: bool = False
) -> RestoreReport:
    """Restore a backup (the latest by default) into a scratch database on the same server and
    prove it: the dump's and every raw file's checksum, every table's row count, the audit chain
    (``verify_audit_chain``), and one stored KPI snapshot recomputed to the same
    values. The scratch database is dropped at the end unless ``keep``."""
    ids = backups_list()
    if not ids:
        raise BackupError("no complete backup to check (run manage.py backup first)")
    backup_id = backup_id or ids[-1]
    if backup_id not in ids:
        raise BackupError(f"no complete backup {backup_id}; have {', '.join(ids[-5:])}")
    manifest = backup_manifest(backup_id)
    store = backup_storage()
    params = database_params()
    report = RestoreReport(backup_id=backup_id, scratch=_scratch_name(backup_id))

    for entry in manifest.files:
        with store.open(f"{backup_id}/files/{entry['name']}", "rb") as handle:
            sha, size = sha256_of(handle)
        if (sha, size) != (entry["sha256"], entry["size"]):
            raise BackupError(f"raw file {entry['name']} of backup {backup_id} fails its checksum")
    report.ok(f"{len(manifest.files)} raw file(s) match their SHA-256")

    with tempfile.TemporaryDirectory(prefix="abaco-restore-") as tmp:
        started = time.perf_counter()
        dump_path = Path(tmp) / DUMP
        with store.open(f"{backup_id}/{DUMP}", "rb") as source, dump_path.open("wb") as target:
            shutil.copyfileobj(source, target, CHUNK)
        with dump_path.open("rb") as handle:
            sha, size = sha256_of(handle)
        report.download_seconds = round(time.perf_counter() - started, 3)
        if (sha, size) != (manifest.dump["sha256"], manifest.dump["size"]):
            raise BackupError(f"the dump of backup {backup_id} fails its checksum")
        report.ok(f"dump matches its SHA-256 ({size:,} bytes)")

        with connect(params, dbname="postgres") as admin:
            version_num = admin.execute("SELECT current_setting('server_version_num')").fetchone()
            server_major = int(version_num[0]) // 10000  # type: ignore[index]
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(report.scratch))
            )
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(report.scratch)))
        try:
            pg_restore = pg_tools("pg_restore", server_major=server_major)
            log(f"restoring {backup_id} into {report.scratch} with {pg_restore}")
            started = time.perf_counter()
            run_tool(
                [
                    str(pg_restore),
                    "--no-owner",
                    "--no-acl",
                    "--exit-on-error",
                    f"--jobs={max(1, settings.KPI_JOBS)}",
                    f"--dbname={report.scratch}",
                    str(dump_path),
                ],
                env={**params, "PGDATABASE": report.scratch},
            )
            report.restore_seconds = round(time.perf_counter() - started, 3)
            report.ok(f"restored in {report.restore_seconds:.1f} s")
            _restored_check(report, manifest, params, log=log)
        finally:
            if not keep:
                with connect(params, dbname="postgres") as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(report.scratch)
                        )
                    )
    return report


def _restored_check(
    report: RestoreReport,
    manifest: Manifest,
    params: dict[str, str],
    *,
    log: Callable[[str], object],
) -> None:
    with connect(params, dbname=report.scratch) as conn, conn.cursor() as cursor:
        restored = row_counts(cursor)
    wrong = [
        f"{table}: {manifest.tables[table]:,} backed up, {restored.get(table, 0):,} restored"
        for table in manifest.tables
        if restored.get(table) != manifest.tables[table]
    ]
    if wrong:
        raise BackupError("row counts differ after restore: " + "; ".join(wrong[:10]))
    report.ok(f"{len(manifest.tables)} tables, {sum(restored.values()):,} rows: counts match")

    url = database_url(params, dbname=report.scratch)
    # The audit journal's hash chain, on the restored copy.
    out = _manage(["verify_audit_chain"], database_url=url)
    report.ok(f"audit chain verified: {out.splitlines()[-1] if out else 'ok'}")

    out = _manage(["snapshot_check"], database_url=url)
    report.ok(out.splitlines()[-1] if out else "KPI snapshot recomputed to the same values")
    log(f"restore check of {report.backup_id} passed")
