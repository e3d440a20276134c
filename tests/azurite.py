"""Azurite, Microsoft's Azure Storage emulator (npm package ``azurite``), for the tests that
use Blob Storage: started on a free port with its data in a temporary folder, stopped after.
Without it those tests are skipped with the reason (.ci/run installs it, and fails on a skip)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Azurite's documented development account (the same in every installation; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def azurite_blob(folder: Path) -> Iterator[str]:
    """Run azurite-blob until the generator is closed; yields its connection string."""
    binary = shutil.which("azurite-blob")
    if binary is None:
        pytest.skip("Azurite is not installed (npm install -g azurite; .ci/run installs it)")
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--silent",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Azurite did not start: {process.stderr.read().decode()[-1000:]}"
                    ) from None
                time.sleep(0.2)
        yield connection_string(port)
    finally:
        process.terminate()
        process.wait(timeout=10)
