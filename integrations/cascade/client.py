"""Cascade (the loan platform): download the loan-tape export.

Cascade publishes no public API reference for its tape export; what we rely on is the shape the
lender's Cascade workspace serves (see docs/integrations.md, "Cascade"), kept to two calls:

- ``GET {CASCADE_BASE_URL}/api/v1/portfolios/{CASCADE_PORTFOLIO_ID}/tape/export`` answers either
  the tape as one ZIP (``application/zip``) or a JSON manifest
  ``{"files": [{"name": "loans.csv", "url": "..."}]}`` of separate CSV files;
- each manifest ``url`` (absolute, or relative to the base URL) answers one CSV.

Authentication is ``Authorization: Bearer <CASCADE_TOKEN>`` or, for workspaces without API
tokens, the ``session`` cookie of a service user (``CASCADE_SESSION_COOKIE``). Downloads stream to
disk, hashing as they go: a tape is hundreds of megabytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from integrations.http import ApiSession, PayloadError

CHUNK = 1 << 20
TAPE_NAMES = {"customers.csv", "loans.csv", "schedules.csv", "transactions.csv"}


@dataclass(frozen=True)
class Download:
    path: Path  # a ZIP, or a folder of CSVs
    files: list[str]
    size: int
    sha256: str  # of the ZIP, or of the CSVs' hashes in name order


class CascadeClient:
    def __init__(self, *, transport=None, sleep=None):
        headers = {"Accept": "application/zip, application/json"}
        cookies = None
        if settings.CASCADE_TOKEN:
            headers["Authorization"] = f"Bearer {settings.CASCADE_TOKEN}"
        else:
            cookies = {"session": settings.CASCADE_SESSION_COOKIE}
        extra = {"sleep": sleep} if sleep is not None else {}
        self.session = ApiSession(
            provider="cascade",
            base_url=settings.CASCADE_BASE_URL,
            headers=headers,
            cookies=cookies,
            secrets=[settings.CASCADE_TOKEN, settings.CASCADE_SESSION_COOKIE],
            rate=settings.CASCADE_RATE_PER_SECOND,
            transport=transport,
            **extra,
        )

    def __enter__(self) -> CascadeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    @property
    def export_url(self) -> str:
        return f"/api/v1/portfolios/{settings.CASCADE_PORTFOLIO_ID}/tape/export"

    def _save(self, url: str, target: Path) -> tuple[int, str, str]:
        """Stream one download to ``target``; returns its size, SHA-256 and content type."""
        digest, size = hashlib.sha256(), 0
        response = self.session.request("GET", url, stream=True)
        try:
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            with target.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        finally:
            response.close()
        return size, digest.hexdigest(), kind

    def export_download(self, folder: Path) -> Download:
        """Download the current tape export into ``folder``."""
        first = folder / "cascade-tape.zip"
        size, sha256, kind = self._save(self.export_url, first)
        with first.open("rb") as stream:
            magic = stream.read(4)
        if magic.startswith(b"PK"):
            return Download(first, ["cascade-tape.zip"], size, sha256)
        if kind != "application/json":
            raise PayloadError(
                "cascade",
                f"GET {self.export_url}: expected a ZIP or a JSON manifest, got {kind or 'no content type'}",
            )
        try:
            manifest = json.loads(first.read_bytes())
        except ValueError as exc:
            raise PayloadError(
                "cascade", f"GET {self.export_url}: the manifest is not JSON"
            ) from exc
        entries = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(entries, list) or not entries:
            raise PayloadError("cascade", f"GET {self.export_url}: the manifest lists no files")
        first.unlink()
        tape = folder / "tape"
        tape.mkdir()
        names, hashes, total = [], [], 0
        for entry in entries:
            name = PurePosixPath(str(entry.get("name", ""))).name if isinstance(entry, dict) else ""
            url = entry.get("url") if isinstance(entry, dict) else None
            if name not in TAPE_NAMES or not isinstance(url, str):
                raise PayloadError(
                    "cascade",
                    f"manifest entry {entry!r} is not one of {sorted(TAPE_NAMES)} with a url",
                )
            file_size, file_sha, _ = self._save(url, tape / name)
            names.append(name)
            hashes.append(f"{name}:{file_sha}")
            total += file_size
        combined = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
        return Download(tape, sorted(names), total, combined)
