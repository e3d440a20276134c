"""Raw files and backups in Azure Blob Storage through django-storages, against Azurite."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient
from django.core.files.base import ContentFile
from django.core.management import call_command

from compliance.backups import backup_create, backups_list, backups_prune, restore_check
from kpis.engine import snapshot_compute
from tests.abaco.test_settings import settings_import
from tests.azurite import azurite_blob
from tests.factories import batch_create
from tests.kpis import books as p


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    yield from azurite_blob(tmp_path_factory.mktemp("azurite"))


def azure(connection: str, container: str) -> dict:
    return {
        "BACKEND": "storages.backends.azure_storage.AzureStorage",
        "OPTIONS": {
            "connection_string": connection,
            "azure_container": container,
            "overwrite_files": False,
        },
    }


@pytest.fixture
def blob_storage(settings, azurite):
    service = BlobServiceClient.from_connection_string(azurite)
    for container in ("raw", "backups"):
        if not service.get_container_client(container).exists():
            service.create_container(container)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": azure(azurite, "raw"),
        "backups": azure(azurite, "backups"),
    }
    yield service
    for container in ("raw", "backups"):
        service.delete_container(container)


def test_azure_storage_settings_put_raw_files_and_backups_in_blob_containers():
    result = settings_import(
        AZURE_STORAGE_ACCOUNT_NAME="abacoraw",
        AZURE_STORAGE_ACCOUNT_KEY="a2V5",
        AZURE_STORAGE_CONTAINER="raw-files",
    )
    assert result.returncode == 0, result.stderr
    check = settings_import(
        AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=x;AccountKey=a2V5",
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.django_db(transaction=True)  # pg_dump sees only committed rows
def test_a_raw_file_and_a_backup_land_in_blob_storage_and_restore_from_it(blob_storage):
    p.golden_book()
    snapshot_compute(as_of=p.GOLDEN_AS_OF, job="compute_kpis")
    batch = batch_create(source="lender-a", original_name="tape.csv")
    batch.file.save("tape.csv", ContentFile(b"loan_id,principal\nL1,11000\n"))

    raw = [blob.name for blob in blob_storage.get_container_client("raw").list_blobs()]
    assert raw == [batch.file.name]
    manifest = backup_create()
    stored = {blob.name for blob in blob_storage.get_container_client("backups").list_blobs()}
    assert stored == {
        f"{manifest.id}/database.dump",
        f"{manifest.id}/manifest.json",
        f"{manifest.id}/files/{batch.file.name}",
    }
    report = restore_check()
    assert "1 raw file(s) match their SHA-256" in report.checks
    assert any(line.endswith("all the same") for line in report.checks)


@pytest.mark.django_db(transaction=True)
def test_retention_deletes_old_backups_from_blob_storage(settings, blob_storage):
    from datetime import UTC, datetime

    settings.BACKUP_KEEP_DAILY, settings.BACKUP_KEEP_WEEKLY, settings.BACKUP_KEEP_MONTHLY = 1, 0, 0
    old = backup_create(now=datetime(2026, 3, 1, 2, tzinfo=UTC))
    new = backup_create(now=datetime(2026, 3, 2, 2, tzinfo=UTC))
    assert backups_prune() == [old.id]
    assert backups_list() == [new.id]
    left = {
        blob.name.split("/")[0]
        for blob in blob_storage.get_container_client("backups").list_blobs()
    }
    assert left == {new.id}
    call_command("backup", "--prune-only", "--dry-run")
