"""REST API v1 (issue 20) on the book the other benchmarks loaded and snapshotted.

Through gunicorn as ``pages.py`` runs it (its harness: production settings, preloaded workers,
20 clients by wrk or a pool of httpx clients), with an API client's bearer token:

- p50/p95 of the first 100-loan page of ``/api/v1/loans/`` and of a KPI series
  (``/api/v1/kpis/series/?code=par_30``, every snapshot date), target p95 < 60 ms, each beside the
  floor (``/healthz`` with the same header under the same load, before and after each);
- a full walk of every loan by cursor, one client, 1,000 loans a page: loans/s (target 20,000);
- a 100-loan tape (demo generator, ids of its own) POSTed to ``/api/v1/uploads/`` and followed
  to ``loaded`` with a task cluster running: seconds from the POST to loaded.

The throttle is lifted for the run (``API_THROTTLE_RATE``): it is a per-client limit, not part of
what a request costs beyond its one upsert, which every measured request pays.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from django.contrib.auth.models import Group, User

from abaco.roles import Role
from api.models import Scope
from api.tokens import api_token_create
from benchmarks import pages
from kpis.models import SnapshotRun
from loans.demo import tape_generate
from loans.models import Loan

P95_TARGET_MS = 60
WALK_TARGET = 20_000  # loans/s
WALK_PAGE = 1000


def _token(username: str, role: Role, scopes: list[str]) -> str:
    user, _ = User.objects.get_or_create(username=username)
    user.groups.add(Group.objects.get(name=role.value))
    return api_token_create(user=user, scopes=scopes, name="benchmark", expires_days=1)[1]


def latency(base: str, headers: dict[str, str]) -> None:
    script = Path(tempfile.mkdtemp()) / "report.lua"
    script.write_text(pages.WRK_SCRIPT)
    measure = pages._wrk if pages.shutil.which("wrk") else pages._threads

    def load(path: str, seconds: float):
        # Every worker warm; on a crowded machine the warm-up may see a single reply.
        with contextlib.suppress(statistics.StatisticsError):
            measure(base + path, headers, script, seconds=pages.WARM_UP_SECONDS)
        return measure(base + path, headers, script, seconds=seconds)

    targets = [
        ("loans, first page of 100", "/api/v1/loans/?page_size=100"),
        ("KPI series, par_30", "/api/v1/kpis/series/?code=par_30"),
        ("loans, 100 at DPD 30+", "/api/v1/loans/?page_size=100&dpd_min=30"),
    ]
    floors = [load(pages.FLOOR, pages.FLOOR_SECONDS)[1]]
    measured = []
    for name, path in targets:
        response = httpx.get(base + path, headers=headers)
        if response.status_code != 200:
            print(f"  {name}: HTTP {response.status_code}, not measured")
            continue
        measured.append((name, load(path, pages.SECONDS)))
        floors.append(load(pages.FLOOR, pages.FLOOR_SECONDS)[1])
    yardstick = statistics.median(floors)
    for i, (name, figures) in enumerate(measured):
        verdict = "ok" if figures[1] < P95_TARGET_MS else "MISSES"
        pages._line(
            name,
            figures,
            pages.SECONDS,
            f"  ratio {figures[1] / yardstick:.1f} (floor p95 {floors[i]:.1f}/{floors[i + 1]:.1f}"
            f" ms before/after)  (target p95 < {P95_TARGET_MS} ms) {verdict}",
        )
    print(
        f"  yardstick: /healthz with the bearer header, median p95 {yardstick:.1f} ms"
        f" (ranged {min(floors):.1f}-{max(floors):.1f} ms)"
    )


def walk(base: str, headers: dict[str, str]) -> None:
    """Every loan by cursor; BENCH_WALK_SECONDS stops it early (the rate is still the figure)."""
    limit = float(os.environ.get("BENCH_WALK_SECONDS", "0")) or float("inf")
    url = f"{base}/api/v1/loans/?page_size={WALK_PAGE}"
    loans = pages_read = 0
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=60) as http:
        while url and time.perf_counter() - started < limit:
            body = http.get(url).raise_for_status().json()
            loans += len(body["results"])
            pages_read += 1
            url = body["next"]
    seconds = time.perf_counter() - started
    rate = loans / seconds
    verdict = "ok" if rate >= WALK_TARGET else "MISSES"
    print(
        f"  cursor walk: {loans:,} loans in {pages_read:,} pages of {WALK_PAGE} in {seconds:.1f} s:"
        f" {rate:,.0f} loans/s (target >= {WALK_TARGET:,}) {verdict}"
        f"  ({Loan.objects.count():,} loans in the book)"
    )


def _tape_zip(out: Path) -> bytes:
    """A 100-loan demo tape whose customer and loan ids are its own (no update of the book)."""
    tape_generate(out_dir=out, loans=100, customers=40, seed=int(time.time()))
    buffer = io.BytesIO()
    stamp = f"API{int(time.time())}-"
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(out.glob("*.csv")):
            rows = list(csv.reader(path.open(encoding="utf-8")))
            header = rows[0]
            keys = [i for i, name in enumerate(header) if name in ("loan_id", "customer_id")]
            for row in rows[1:]:
                for i in keys:
                    row[i] = stamp + row[i]
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            archive.writestr(path.name, text.getvalue())
    return buffer.getvalue()


def upload(base: str, headers: dict[str, str]) -> None:
    env = pages._server_env()
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=pages.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = _tape_zip(Path(tmp))
        started = time.perf_counter()
        response = httpx.post(
            f"{base}/api/v1/uploads/",
            headers=headers,
            files={"file": ("tape.zip", body, "application/zip")},
            timeout=300,
        )
        accepted = time.perf_counter() - started
        if response.status_code != 202:
            print(f"  upload: HTTP {response.status_code}: {response.text[:300]}")
            return
        location = base + response.headers["Location"]
        status = "queued"
        while status not in ("loaded", "failed") and time.perf_counter() - started < 600:
            time.sleep(0.1)
            status = httpx.get(location, headers=headers).json()["status"]
        total = time.perf_counter() - started
        print(
            f"  100-loan tape through the API: 202 after {accepted:.2f} s (dry run included),"
            f" {status} after {total:.2f} s"
        )
    finally:
        cluster.terminate()
        cluster.wait(timeout=30)


def run() -> None:
    if not SnapshotRun.objects.exists():
        print("api: no snapshots in the benchmark database; run the other benchmarks first")
        return
    os.environ["API_THROTTLE_RATE"] = "100000000/min"
    reader = {
        "Authorization": f"Bearer {_token('bench.api', Role.API_CLIENT, ['read:book', 'read:kpis'])}"
    }
    uploader = {
        "Authorization": "Bearer "
        + _token("bench.uploader", Role.UPLOADER, [Scope.WRITE_UPLOADS, Scope.READ_BOOK])
    }
    print(
        f"API v1: {pages.CLIENTS} clients, {pages.SECONDS:g} s per endpoint;"
        f" {Loan.objects.count():,} loans, {SnapshotRun.objects.count()} snapshots"
    )
    with pages._gunicorn() as base:
        latency(base, reader)
        walk(base, reader)
        upload(base, uploader)
