"""Finding tape files in a folder or ZIP, and reading what the loader needs to know about them."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from loans.imports.specs import TAPE_SPECS
from loans.lineage import Problem, TapeRejected

CHUNK = 1 << 20
BOM = codecs.BOM_UTF8
# A character UTF-8 writes in two or three bytes: in a file that is not UTF-8 as a whole, a
# sign that two encodings were mixed (a UTF-8 export appended to a Latin-1 one).
UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}")
# Bytes 0x80-0x9f: C1 control characters in Latin-1; letters and signs (€ “ ” …) in Windows-1252.
C1 = re.compile(rb"[\x80-\x9f]")
NOT_WIN1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # no character in Windows-1252


@dataclass(frozen=True)
class ByteFacts:
    """What one read of a file's bytes found, each with the first row (1 = header) it is on."""

    utf8_bad_row: int | None = None  # the first byte that is not UTF-8
    long_line_row: int | None = None  # the first line past IMPORT_MAX_LINE_BYTES


@dataclass(frozen=True)
class SingleByteFacts:
    """What matters to read a file in a single-byte encoding, from another read of its bytes:
    only a file that is not UTF-8, or whose column map names Latin-1 or Windows-1252, needs it
    (``single_byte_facts``)."""

    utf8_sequences: bool = False  # a well-formed UTF-8 character outside ASCII
    c1_row: int | None = None
    not_win1252_row: int | None = None


@dataclass(frozen=True)
class TapeFile:
    """One CSV of a tape: where its bytes are, and what a single read of them told us."""

    name: str  # as the user knows it: "loans.csv" or "tape.zip:loans.csv"
    kind: str
    opener: object  # () -> BinaryIO
    sha256: str
    size: int
    encoding: str  # "UTF8", "LATIN1" or "WIN1252", as COPY names them
    has_bom: bool
    binary: bool
    facts: ByteFacts = ByteFacts()

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        stream = self.opener()
        try:
            yield stream
        finally:
            stream.close()

    def header(self, delimiter: str) -> list[str]:
        """The first line's column names (stripped); empty when the file is empty."""
        with self.open() as stream:
            raw = stream.readline(1 << 16)
        if raw.startswith(BOM):
            raw = raw[len(BOM) :]
        text = raw.decode(PYTHON_CODECS[self.encoding], errors="replace")
        row = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
        return [name.strip() for name in row]


PYTHON_CODECS = {"UTF8": "utf-8", "LATIN1": "latin-1", "WIN1252": "cp1252"}


def _inspect(name: str, kind: str, opener) -> TapeFile:
    """Hash the bytes and learn whether they are UTF-8 and how long their lines are, in one
    streaming pass. Lines are not counted in it: a problem's row is found from its byte offset
    afterwards (``_rows_at``), so a well-formed file, the common case, is read once."""
    digest = hashlib.sha256()
    size = 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    binary = False
    first = b""
    line = 0  # bytes of the current line read so far
    max_line = settings.IMPORT_MAX_LINE_BYTES
    found: dict[str, int] = {}  # what was found: the byte offset it is at

    with opener() as stream:
        while chunk := stream.read(CHUNK):
            if not first:
                first = chunk[:3]
            digest.update(chunk)
            binary = binary or b"\x00" in chunk
            # Lines no longer than a read are checked where they cross reads (the setting is at
            # least one read): memchr-fast, where splitting every line would cost a copy. The
            # long line is the one the read starts on.
            newline = chunk.find(b"\n")
            if line + (len(chunk) if newline < 0 else newline) > max_line:
                found.setdefault("long_line_row", size)
            line = line + len(chunk) if newline < 0 else len(chunk) - chunk.rfind(b"\n") - 1
            # ASCII is UTF-8: decoding it only to find that out took twice as long as hashing
            # (0.6 s for 366 MB), and holds the GIL the other files' hashing could use.
            if utf8 and not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    utf8 = False
                    found["utf8_bad_row"] = size + max(error.start, 0)
            size += len(chunk)
    if utf8:  # a file that ends inside a character is not UTF-8 either
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
            found["utf8_bad_row"] = size
    rows = _rows_at(opener, found.values())
    return TapeFile(
        name=name,
        kind=kind,
        opener=opener,
        sha256=digest.hexdigest(),
        size=size,
        encoding="UTF8" if utf8 else "LATIN1",
        has_bom=first == BOM,
        binary=binary,
        facts=ByteFacts(**{key: rows[offset] for key, offset in found.items()}),
    )


def single_byte_facts(tape_file: TapeFile) -> SingleByteFacts:
    """Another read of a file's bytes, for what reading it in Latin-1 or Windows-1252 needs to
    know (each pattern's first match, by row)."""
    found: dict[str, int] = {}
    sequences = False
    offset = 0
    tail = b""  # the last bytes of the read before: a UTF-8 character may straddle two reads
    with tape_file.open() as stream:
        while chunk := stream.read(CHUNK):
            sequences = sequences or UTF8_SEQUENCE.search(tail + chunk) is not None
            for key, pattern in (("c1_row", C1), ("not_win1252_row", NOT_WIN1252)):
                if key not in found and (match := pattern.search(chunk)):
                    found[key] = offset + match.start()
            if sequences and len(found) == 2:
                break
            offset += len(chunk)
            tail = chunk[-2:]
    rows = _rows_at(tape_file.opener, found.values())
    return SingleByteFacts(
        utf8_sequences=sequences, **{key: rows[offset] for key, offset in found.items()}
    )


def _rows_at(opener, offsets: Iterable[int]) -> dict[int, int]:
    """The row (1 = the header) each byte offset is on: the newlines before it, counted in one
    more read of the file up to the last offset (none when nothing was found)."""
    wanted = sorted(set(offsets))
    rows: dict[int, int] = {}
    if not wanted:
        return rows
    newlines = 0
    start = 0
    with opener() as stream:
        while wanted and (chunk := stream.read(CHUNK)):
            end = start + len(chunk)
            while wanted and wanted[0] < end:
                at = wanted.pop(0)
                rows[at] = 1 + newlines + chunk.count(b"\n", 0, at - start)
            newlines += chunk.count(b"\n")
            start = end
    for offset in wanted:  # at the end of the file
        rows[offset] = 1 + newlines
    return rows


def encoding_refusal(tape_file: TapeFile, wanted: str) -> tuple[str, Problem | None]:
    """The encoding a file is read in, decided from all its bytes, or why it cannot be read.

    ``wanted`` is the column map's: "auto" (UTF-8; else Latin-1, or Windows-1252 when bytes
    0x80-0x9f are its letters), or one named. A file that is neither valid UTF-8 nor the
    single-byte encoding, or mixes UTF-8 with one, is refused at its first bad row: loaded, it
    would be mojibake and control characters.
    """
    facts, name = tape_file.facts, tape_file.name
    utf8 = facts.utf8_bad_row is None

    def refused(row: int | None, reason: str) -> tuple[str, Problem]:
        return tape_file.encoding, Problem(name, row, "", "", reason)

    if wanted == "UTF8" or (wanted == "auto" and utf8):
        if not utf8:
            return refused(facts.utf8_bad_row, "not valid UTF-8 (the column map says UTF-8)")
        return "UTF8", None
    single = single_byte_facts(tape_file)  # only now: a single-byte encoding it is
    if wanted == "auto" and single.utf8_sequences:
        return refused(
            facts.utf8_bad_row,
            "mixes UTF-8 with a single-byte encoding: save it in one encoding and upload again",
        )
    if wanted == "LATIN1" or (wanted == "auto" and single.c1_row is None):
        if single.c1_row is not None:
            return refused(
                single.c1_row,
                "has bytes 0x80-0x9f, control characters in Latin-1 (is it Windows-1252?)",
            )
        return "LATIN1", None
    if single.not_win1252_row is not None:
        return refused(single.not_win1252_row, "is neither UTF-8 nor Windows-1252")
    return "WIN1252", None


def tape_files_check(
    found: list[TapeFile], *, encoding: str, delimiter: str
) -> tuple[list[TapeFile], list[Problem]]:
    """Each file's encoding, and the refusals that come before anything is stored: encoding,
    longest line and most columns (IMPORT_MAX_LINE_BYTES, IMPORT_MAX_COLUMNS)."""
    checked, problems = [], []
    for tape_file in found:
        chosen, problem = encoding_refusal(tape_file, encoding)
        tape_file = dataclasses.replace(tape_file, encoding=chosen)
        checked.append(tape_file)
        if problem is not None:
            problems.append(problem)
            continue
        if (row := tape_file.facts.long_line_row) is not None:
            problems.append(
                Problem(
                    tape_file.name,
                    row,
                    "",
                    "",
                    f"a line is longer than {settings.IMPORT_MAX_LINE_BYTES:,} bytes "
                    "(IMPORT_MAX_LINE_BYTES): is the delimiter or a quote wrong?",
                )
            )
            continue
        columns = len(tape_file.header(delimiter))
        if columns > settings.IMPORT_MAX_COLUMNS:
            problems.append(
                Problem(
                    tape_file.name,
                    1,
                    "",
                    "",
                    f"{columns:,} columns, more than {settings.IMPORT_MAX_COLUMNS} "
                    "(IMPORT_MAX_COLUMNS)",
                )
            )
    return checked, problems


def zip_refusal(path: Path, archive: zipfile.ZipFile) -> list[Problem]:
    """A ZIP whose members would unpack past ZIP_MAX_BYTES in all, or any past ZIP_MAX_RATIO
    times its compressed size, is refused from its directory, before one byte is unpacked.
    (zipfile stops a member at its declared size, so the directory cannot understate it.)"""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    total = sum(i.file_size for i in infos)
    problems = []
    if total > settings.ZIP_MAX_BYTES:
        problems.append(
            Problem(
                path.name,
                None,
                "",
                "",
                f"unpacks to {total:,} bytes, more than {settings.ZIP_MAX_BYTES:,} (ZIP_MAX_BYTES)",
            )
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > CHUNK and ratio > settings.ZIP_MAX_RATIO:
            problems.append(
                Problem(
                    f"{path.name}:{info.filename}",
                    None,
                    "",
                    "",
                    f"compressed {ratio:,.0f} to 1, more than {settings.ZIP_MAX_RATIO} "
                    "(ZIP_MAX_RATIO): a ZIP bomb is not unpacked",
                )
            )
    return problems


def kind_of(filename: str, aliases: dict[str, str] | None = None) -> str | None:
    """customers.csv → "customers"; a source's own file names through ``aliases``."""
    stem = Path(filename).stem.lower()
    if aliases and stem in aliases:
        return aliases[stem]
    return stem if stem in TAPE_SPECS else None


def tape_files_find(
    path: Path, *, aliases: dict[str, str] | None = None, name: str | None = None
) -> tuple[list[TapeFile], list[str]]:
    """The tape files under ``path`` (a folder, a ZIP or one CSV) in load order, and names skipped.

    ``name`` is the file's name as the person uploaded it, when ``path`` is a stored copy: storage
    may have renamed it (``loans_x7Kq2.csv`` for a second ``loans.csv`` on the same day), and the
    kind is read from the name the person gave, never the stored one."""
    name = name or path.name
    found: dict[str, tuple] = {}
    skipped: list[str] = []
    if path.is_dir():
        members = sorted(p for p in path.iterdir() if p.is_file())
        for member in members:
            kind = kind_of(member.name, aliases)
            if kind is None:
                skipped.append(member.name)
                continue
            found[kind] = (member.name, kind, lambda p=member: p.open("rb"))
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if problems := zip_refusal(path, archive):
                raise TapeRejected(problems)
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
        for member in sorted(names):
            kind = kind_of(member, aliases)
            if kind is None or Path(member).name.startswith("."):
                skipped.append(member)
                continue

            def opener(p=path, m=member):
                return _ZipMember(p, m)

            found[kind] = (f"{name}:{member}", kind, opener)
    else:
        kind = kind_of(name, aliases)
        if kind is None:
            skipped.append(name)
        else:
            found[kind] = (name, kind, lambda p=path: p.open("rb"))
    # Hash the files side by side: hashlib releases the GIL, and a re-sent tape of 600 MB is
    # recognized in well under a second instead of one file after another.
    wanted = [found[kind] for kind in TAPE_SPECS if kind in found]
    with ThreadPoolExecutor(max_workers=4) as pool:
        ordered = list(pool.map(lambda args: _inspect(*args), wanted))
    return ordered, skipped


class _ZipMember(io.RawIOBase):
    """A ZIP member that closes its archive with it."""

    def __init__(self, path: Path, member: str):
        self._archive = zipfile.ZipFile(path)
        self._stream = self._archive.open(member)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size)

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        self._archive.close()
        super().close()
