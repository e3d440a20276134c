"""Backups and the restore check (compliance.backups): a real pg_dump of the test database and a
real pg_restore into a scratch database on the same server, with the project's own commands run
on the restored copy in a process of their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from compliance.backups import (
    BackupError,
    backup_create,
    backup_manifest,
    backups_list,
    backups_prune,
    backups_to_keep,
    pg_tools,
    restore_check,
)
from integrations.models import PipelineRun
from integrations.pipelines import pipeline_run
from kpis.engine import snapshot_compute
from kpis.models import KpiValue
from tests.factories import batch_create
from tests.kpis import books as p

pytestmark = pytest.mark.django_db(transaction=True)  # pg_dump sees only committed rows


@pytest.fixture(autouse=True)
def stores(settings, tmp_path):
    """Raw files and backups in folders of this test (the settings' local-disk default)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "backups"},
        },
    }
    return tmp_path


def book_with_a_snapshot_and_a_raw_file() -> str:
    p.golden_book()
    snapshot_compute(as_of=p.GOLDEN_AS_OF, job="compute_kpis")
    batch = batch_create(source="lender-a", original_name="tape.csv")
    batch.file.save("tape.csv", ContentFile(b"loan_id,principal\nL1,11000\n"))
    return batch.file.name


def test_a_backup_restores_whole_and_its_kpi_snapshot_recomputes_to_the_same_values():
    raw_name = book_with_a_snapshot_and_a_raw_file()
    out = StringIO()
    call_command("backup", stdout=out)
    [backup_id] = backups_list()
    manifest = backup_manifest(backup_id)
    assert manifest.tables["public.loans_loan"] == 7
    assert manifest.tables["public.kpis_kpivalue"] == KpiValue.objects.count() > 0
    assert [entry["name"] for entry in manifest.files] == [raw_name]
    assert len(manifest.dump["sha256"]) == 64
    assert f"backup {backup_id}" in out.getvalue()

    out = StringIO()
    call_command("restore_check", stdout=out)
    text = out.getvalue()
    assert "1 raw file(s) match their SHA-256" in text
    assert "tables" in text and "counts match" in text
    assert f"KPI snapshot {p.GOLDEN_AS_OF}" in text and "all the same" in text
    assert f"restore check of {backup_id} passed" in text
    # The scratch database is dropped, and the checked database is untouched.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'abaco_restore_check_%%'"
        )
        assert cursor.fetchone()[0] == 0


def test_a_dump_changed_after_the_backup_fails_the_restore_check(stores):
    book_with_a_snapshot_and_a_raw_file()
    manifest = backup_create()
    dump = stores / "backups" / manifest.id / "database.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(CommandError, match=r"the dump of backup .* fails its checksum"):
        call_command("restore_check", stdout=StringIO())


def test_a_restored_copy_missing_rows_fails_the_restore_check(stores):
    book_with_a_snapshot_and_a_raw_file()
    manifest = backup_create()
    path = stores / "backups" / manifest.id / "manifest.json"
    recorded = json.loads(path.read_text())
    recorded["tables"]["public.loans_loan"] = 8  # what the dump should have held
    path.write_text(json.dumps(recorded))
    with pytest.raises(BackupError, match=r"public.loans_loan: 8 backed up, 7 restored"):
        restore_check()


def test_a_referenced_raw_file_missing_fails_the_backup_but_keeps_the_dump():
    raw_name = book_with_a_snapshot_and_a_raw_file()
    storages["default"].delete(raw_name)
    with pytest.raises(BackupError, match=f"1 raw file.* missing from storage: {raw_name}"):
        backup_create()
    [backup_id] = backups_list()
    assert backup_manifest(backup_id).missing == [raw_name]


def test_retention_keeps_the_newest_of_each_day_week_and_month():
    ids = [
        "20260105T020000Z",  # Monday, week 2
        "20260131T020000Z",  # Saturday, week 5: January's last
        "20260201T020000Z",  # Sunday, week 5
        "20260223T020000Z",  # Monday, week 9
        "20260228T020000Z",  # Saturday, week 9: February's last
        "20260301T020000Z",  # Sunday, week 9
        "20260302T020000Z",  # Monday, week 10
        "20260302T140000Z",  # a second backup that day (by hand): the newer one counts
    ]
    assert backups_to_keep(ids, daily=2, weekly=2, monthly=2) == {
        "20260302T140000Z",  # today, this week, this month
        "20260301T020000Z",  # yesterday, and week 9's newest
        "20260228T020000Z",  # February's newest
    }


def test_backup_prunes_what_retention_no_longer_keeps(settings, stores):
    settings.BACKUP_KEEP_DAILY, settings.BACKUP_KEEP_WEEKLY, settings.BACKUP_KEEP_MONTHLY = 1, 0, 0
    book_with_a_snapshot_and_a_raw_file()
    first = backup_create(now=datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    second = backup_create(now=datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    assert backups_prune(dry_run=True) == [first.id]
    assert backups_list() == [first.id, second.id]
    assert backups_prune() == [first.id]
    assert backups_list() == [second.id]
    assert not (stores / "backups" / first.id).exists()


def test_the_dump_tools_are_the_servers_own_major_version():
    server_major = connection.pg_version // 10000
    binary = pg_tools("pg_dump", server_major=server_major)
    assert binary.name == "pg_dump"
    with pytest.raises(BackupError, match=r"no pg_dump of PostgreSQL 9 .* found"):
        pg_tools("pg_dump", server_major=9)


def test_the_scheduled_backup_and_restore_check_run_as_pipelines():
    book_with_a_snapshot_and_a_raw_file()
    backup = pipeline_run(name="backup_daily", trigger=PipelineRun.Trigger.SCHEDULE)
    check = pipeline_run(name="restore_check_weekly", trigger=PipelineRun.Trigger.SCHEDULE)
    assert (backup.status, check.status) == ("succeeded", "succeeded")
    assert backup.rows_out > 0
    assert "counts match" in check.log


def test_a_database_url_for_a_socket_folder_reaches_libpq_unencoded():
    import environ

    from compliance.backups import database_url

    url = database_url(
        {"PGHOST": "/srv/abaco/.data/postgres", "PGPORT": "5433", "PGUSER": "postgres"},
        dbname="abaco_restore_check_x",
    )
    config = environ.Env.db_url_config(url)
    assert (config["HOST"], config["OPTIONS"]["host"], config["PORT"], config["NAME"]) == (
        "",
        "/srv/abaco/.data/postgres",
        5433,
        "abaco_restore_check_x",
    )
    tcp = environ.Env.db_url_config(
        database_url(
            {"PGHOST": "db.example.com", "PGUSER": "a b", "PGPASSWORD": "p@ss"}, dbname="x"
        )
    )
    assert (tcp["HOST"], tcp["USER"], tcp["PASSWORD"], tcp["PORT"]) == (
        "db.example.com",
        "a b",
        "p@ss",
        5432,
    )
