"""Backup and restore check on a loaded book (docs/runbooks/restore.md quotes its figures).

Reads the book's database only (the dump), restores into a scratch database of its own on the
same server and drops it. Run it on the benchmark book:

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/abaco_bench1m \\
        BACKUP_ROOT=/tmp/abaco-bench-backups .venv/bin/python benchmarks/backup_restore.py

Yardstick: the database's size on disk, so each phase prints MB/s beside its seconds (a
machine twice as busy halves both; the ratio of restore to dump is the figure to compare).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    import django

    django.setup()
    from django.db import connection

    from compliance.backups import BackupError, backup_create, restore_check

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_database_size(current_database()), (SELECT count(*) FROM loans_loan)"
        )
        size, loans = cursor.fetchone()
    connection.close()
    mb = size / 1e6
    print(f"book: {loans:,} loans, database {mb:,.0f} MB on disk; {os.cpu_count()} cores")
    started = time.perf_counter()
    try:
        manifest = backup_create(log=lambda line: print(f"  {line}"))
    except BackupError as exc:  # e.g. raw files of a bench book that were never kept
        print(f"  backup kept with a problem: {exc}")
        from compliance.backups import backup_manifest, backups_list

        manifest = backup_manifest(backups_list()[-1])
    backup_s = time.perf_counter() - started
    print(
        f"backup: {backup_s:.1f} s in all, pg_dump {manifest.dump_seconds:.1f} s "
        f"({mb / manifest.dump_seconds:,.1f} MB/s of database), dump {manifest.dump['size'] / 1e6:,.0f} MB, "
        f"{sum(manifest.tables.values()):,} rows"
    )
    started = time.perf_counter()
    report = restore_check(backup_id=manifest.id, log=lambda line: print(f"  {line}"))
    check_s = time.perf_counter() - started
    for line in report.checks:
        print(f"  ✓ {line}")
    print(
        f"restore check: {check_s:.1f} s in all; pg_restore {report.restore_seconds:.1f} s "
        f"({mb / report.restore_seconds:,.1f} MB/s of database; restore/dump ratio "
        f"{report.restore_seconds / manifest.dump_seconds:.1f}), copy and checksum "
        f"{report.download_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
