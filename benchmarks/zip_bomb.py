"""Refusing a ZIP bomb (issue 18): a 4 GiB member packed into about 4 MB, handed to the tape
import as an upload would be. Prints the seconds to the refusal (target < 2 s) beside the
yardstick of listing the ZIP's directory, and checks that nothing was written: no batch, no new
file under MEDIA_ROOT, no staging table.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import connection

MEMBER_BYTES = 4 << 30
CHUNK = b"0" * (1 << 20)


def _bomb(path: Path) -> None:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("loans.csv", "w", force_zip64=True) as member,
    ):
        member.write(b"loan_id,customer_id\n")
        for _ in range(MEMBER_BYTES // len(CHUNK)):
            member.write(CHUNK)


def _staging_tables() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'import_staging'")
        return cursor.fetchone()[0]


def run() -> None:
    from loans.lineage import TapeRejected
    from loans.models import Batch
    from loans.services import tape_import

    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.zip"
        started = time.monotonic()
        _bomb(bomb)
        print(
            f"zip bomb: {bomb.stat().st_size:,} bytes packing {MEMBER_BYTES:,} "
            f"(built in {time.monotonic() - started:.1f} s)"
        )
        media = sorted(Path(settings.MEDIA_ROOT).rglob("*"))
        batches, staging = Batch.objects.count(), _staging_tables()
        started = time.monotonic()
        with zipfile.ZipFile(bomb) as archive:
            archive.infolist()
        directory = time.monotonic() - started
        started = time.monotonic()
        try:
            tape_import(path=bomb, source="cascade")
        except TapeRejected as refused:
            seconds = time.monotonic() - started
            print(
                f"  refused in {seconds * 1000:.1f} ms (target < 2,000 ms); reading the ZIP's "
                f"directory alone: {directory * 1000:.1f} ms (ratio {seconds / directory:.1f})"
            )
            print(f"  {refused.problems[0]}")
        else:
            raise SystemExit("the ZIP bomb was loaded")
        written = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p not in media]
        print(
            f"  written: {len(written)} new files under MEDIA_ROOT, "
            f"{Batch.objects.count() - batches} batches, "
            f"{_staging_tables() - staging} staging tables"
        )


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
    import django

    django.setup()
    run()
