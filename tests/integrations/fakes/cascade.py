"""A fake Cascade workspace serving the tape export the way ``integrations.cascade.client`` reads it.

It checks the bearer token or session cookie (401 otherwise, as the workspace does), serves the
tape as one ZIP or as a JSON manifest of CSV files, and can be told to fail: a number of 5xx
answers, 429 with ``Retry-After``, a timeout, or a body that is neither ZIP nor manifest.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import httpx

PORTFOLIO = "pf-abaco"
EXPORT = f"/api/v1/portfolios/{PORTFOLIO}/tape/export"


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(files.items()):
            archive.writestr(name, text)
    return buffer.getvalue()


@dataclass
class FakeCascade:
    files: dict[str, str]  # tape file name -> CSV text
    token: str = "cascade-token-s3cr3t"
    cookie: str = ""
    manifest: bool = False  # serve separate CSVs behind a JSON manifest instead of a ZIP
    fail_with: list[int] = field(default_factory=list)  # statuses to answer first, in order
    retry_after: str | None = None
    timeouts: int = 0  # requests that time out before any answer
    garbage: bytes | None = None  # a body that is neither ZIP nor manifest
    requests: list[httpx.Request] = field(default_factory=list)

    def _authorized(self, request: httpx.Request) -> bool:
        if self.token and request.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        return bool(self.cookie) and f"session={self.cookie}" in request.headers.get("Cookie", "")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.timeouts:
            self.timeouts -= 1
            raise httpx.ReadTimeout("timed out", request=request)
        if self.fail_with:
            status = self.fail_with.pop(0)
            headers = (
                {"Retry-After": self.retry_after} if self.retry_after and status == 429 else {}
            )
            return httpx.Response(status, headers=headers, text=f"upstream says {status}")
        if not self._authorized(request):
            return httpx.Response(
                401, json={"detail": "Authentication credentials were not provided."}
            )
        path = request.url.path
        if path == EXPORT:
            if self.garbage is not None:
                return httpx.Response(
                    200, headers={"Content-Type": "text/html"}, content=self.garbage
                )
            if self.manifest:
                listing = [
                    {"name": name, "url": f"{EXPORT}/files/{name}"} for name in sorted(self.files)
                ]
                return httpx.Response(200, json={"files": listing})
            return httpx.Response(
                200, headers={"Content-Type": "application/zip"}, content=zip_bytes(self.files)
            )
        if path.startswith(f"{EXPORT}/files/"):
            name = path.rsplit("/", 1)[1]
            if name in self.files:
                return httpx.Response(
                    200, headers={"Content-Type": "text/csv"}, text=self.files[name]
                )
        return httpx.Response(404, json={"detail": "Not found."})
