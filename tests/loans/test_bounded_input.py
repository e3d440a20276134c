"""Issue 18, item 5: every input has a limit, checked before anything past it is kept, and every
refusal names the file (and row); encodings are decided from all of a file's bytes."""

from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from loans.lineage import TapeRejected
from loans.models import Batch, ColumnMap, Customer, Upload
from loans.services import tape_import
from tests.base import CastTestCase

HEADER = b"customer_id,customer_type,currency,geography_city,geography_country\n"


def customers(tmp_path: Path, body: bytes) -> Path:
    folder = tmp_path / "tape"
    folder.mkdir(exist_ok=True)
    (folder / "customers.csv").write_bytes(HEADER + body)
    return folder


def refusal(path: Path, source: str = "cascade") -> str:
    with pytest.raises(TapeRejected) as refused:
        tape_import(path=path, source=source)
    return str(refused.value)


@pytest.mark.django_db
@override_settings(ZIP_MAX_BYTES=4 << 20, ZIP_MAX_RATIO=50)
def test_a_zip_bomb_is_refused_from_its_directory_before_anything_is_unpacked(tmp_path, settings):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("customers.csv", HEADER + b"0" * (8 << 20))
    media_before = sorted(Path(settings.MEDIA_ROOT).rglob("*"))
    started = time.monotonic()
    message = refusal(bomb)
    assert time.monotonic() - started < 2
    assert "bomb.zip: unpacks to 8,388,676 bytes, more than 4,194,304 (ZIP_MAX_BYTES)" in message
    assert "bomb.zip:customers.csv: compressed" in message
    assert "(ZIP_MAX_RATIO)" in message
    assert not Batch.objects.exists()
    assert sorted(Path(settings.MEDIA_ROOT).rglob("*")) == media_before  # nothing kept


@pytest.mark.django_db
@override_settings(IMPORT_MAX_COLUMNS=20)
def test_too_many_columns_are_refused_naming_the_file_and_row(tmp_path):
    wide = b",".join(b"c%d" % i for i in range(10_000)) + b"\n1,2\n"
    folder = tmp_path / "tape"
    folder.mkdir()
    (folder / "customers.csv").write_bytes(wide)
    message = refusal(folder)
    assert "customers.csv, row 1: 10,000 columns, more than 20 (IMPORT_MAX_COLUMNS)" in message
    assert not Batch.objects.exists()


@pytest.mark.django_db
def test_a_line_longer_than_the_limit_is_refused_naming_its_row(tmp_path):
    body = b"C1,SME,USD,San Jose,CRI\nC2,SME,USD," + b"x" * (3 << 20) + b",CRI\n"
    message = refusal(customers(tmp_path, body))
    assert "customers.csv, row 3: a line is longer than 1,048,576 bytes" in message
    assert not Batch.objects.exists()


@pytest.mark.django_db
def test_a_file_mixing_utf8_and_latin1_is_refused_at_its_first_bad_row(tmp_path):
    body = "C1,SME,USD,Usulután,SLV\n".encode() + "C2,SME,USD,Cuscatlán,SLV\n".encode("latin-1")
    message = refusal(customers(tmp_path, body))
    assert "customers.csv, row 3: mixes UTF-8 with a single-byte encoding" in message
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_latin1_bytes_that_are_control_characters_are_read_as_windows_1252(tmp_path):
    # 0x93/0x94 are curly quotes in Windows-1252, control characters in Latin-1.
    body = "C1,SME,USD,\u201cSan Jos\xe9\u201d,CRI\n".encode("cp1252")
    tape_import(path=customers(tmp_path, body), source="cascade")
    assert Customer.objects.get().geography_city == "\u201cSan Jos\xe9\u201d"


@pytest.mark.django_db
def test_a_column_map_that_says_latin1_refuses_windows_1252_bytes_and_one_that_says_1252_loads(
    tmp_path,
):
    ColumnMap.objects.create(source="lender-cr", encoding=ColumnMap.Encoding.LATIN1)
    ColumnMap.objects.create(source="lender-gt", encoding=ColumnMap.Encoding.WIN1252)
    folder = customers(tmp_path, "C1,SME,USD,\u20acsquina,CRI\n".encode("cp1252"))
    assert "customers.csv, row 2: has bytes 0x80-0x9f" in refusal(folder, "lender-cr")
    tape_import(path=folder, source="lender-gt")
    assert Customer.objects.get().geography_city == "\u20acsquina"


@pytest.mark.django_db
def test_a_file_neither_utf8_nor_windows_1252_is_refused(tmp_path):
    message = refusal(customers(tmp_path, b"C1,SME,USD,San Jos\x81,CRI\n"))
    assert "customers.csv, row 2: is neither UTF-8 nor Windows-1252" in message


# 100,000 rows of 36 bytes: 3.6 MB, so what follows lies four reads (CHUNK) into the file.
MANY = b"".join(b"C%07d,SME,USD,San Salvador,SLV\n" % i for i in range(100_000))


@pytest.mark.django_db
def test_rows_are_named_right_reads_into_the_file(tmp_path):
    # Rows are found from byte offsets after the read that hashed the file: the header is row
    # 1, MANY rows 2-100,001, so the first row after them is 100,002.
    mixed = MANY + "X1,SME,USD,Usulután,SLV\n".encode() + b"X2,SME,USD,Cuscatl\xe1n,SLV\n"
    assert "customers.csv, row 100003: mixes UTF-8" in refusal(customers(tmp_path, mixed))
    long = MANY + b"X1,SME,USD," + b"x" * (2 << 20) + b",SLV\n"
    assert "customers.csv, row 100002: a line is longer" in refusal(customers(tmp_path, long))
    ending = MANY + b"X1,SME,USD,San Jos\xc3"  # ends inside a character
    ColumnMap.objects.create(source="lender-utf8", encoding=ColumnMap.Encoding.UTF8)
    message = refusal(customers(tmp_path, ending), "lender-utf8")
    assert "customers.csv, row 100002: not valid UTF-8" in message


@pytest.mark.django_db
def test_a_valid_utf8_file_under_a_latin1_map_is_checked_for_latin1_all_the_same(tmp_path):
    # "Á" is C3 81 in UTF-8: valid UTF-8, but 0x81 is a control character in Latin-1. The
    # single-byte facts are read only when a single-byte encoding is asked for, as here.
    ColumnMap.objects.create(source="lender-cr", encoding=ColumnMap.Encoding.LATIN1)
    body = MANY + "X1,SME,USD,ÁVILA,SLV\n".encode()
    message = refusal(customers(tmp_path, body), "lender-cr")
    assert "customers.csv, row 100002: has bytes 0x80-0x9f" in message


@pytest.mark.parametrize("delimiter", ['"', "\n", "\r", "a", "7"])
def test_a_column_map_refuses_a_delimiter_that_would_break_every_import(delimiter):
    with pytest.raises(ValidationError) as refused:
        ColumnMap(source="x", delimiter=delimiter).clean()
    assert "delimiter" in refused.value.message_dict


class UploadSizeTests(CastTestCase):
    @override_settings(UPLOAD_MAX_BYTES=10_000)
    def test_an_upload_past_the_limit_is_refused_by_name_and_nothing_is_kept(self):
        media = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, media)
        self.client.force_login(self.steward)
        big = SimpleUploadedFile("customers.csv", HEADER + b"C1,SME,USD,x,CRI\n" * 5_000)
        with override_settings(MEDIA_ROOT=media):
            response = self.client.post(
                "/admin/loans/upload/add/",
                {"kind": "tape", "source": "cascade", "file": big},
            )
        self.assertContains(response, "customers.csv is 85,068 bytes, more than the 10,000")
        self.assertFalse(Upload.objects.exists())
        self.assertEqual(list(media.rglob("*.csv")), [])
