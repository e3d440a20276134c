"""Dashboard page latency (issue 5: manager dashboards), on the book the other benchmarks loaded
and snapshotted.

gunicorn (infra/gunicorn.conf.py, production settings: DEBUG off, collected static files) serves
the benchmark database on loopback; a manager's session cookie rides on every request; each page
is loaded by 20 concurrent clients (wrk, or a thread pool of httpx clients when wrk is missing)
for a fixed time, and its p50/p95 latency is printed against the targets (dashboards p95 < 150 ms,
first drill-down page p95 < 300 ms). Then each page's SQL query count, measured in-process on this
book and on the 5,000-loan demo book (database ``abaco_bench_small``, loaded once), to show that it
does not grow with the book.

The yardstick is the framework's floor: ``/healthz`` (a view that returns a constant) served by
the same gunicorn, with the same session cookie, under the same load. It goes through the whole
middleware stack, and with the cookie it loads the session and the user (the audit log middleware
asks who the user is: two queries), which every dashboard page pays too. The floor is measured
before the first page and after every page; each page's p95 is printed as a ratio to the median of
those floor p95s, with the two floors measured next to it (the load of a shared machine drifts
within minutes, and a single floor measurement can spike: in one run the floor's p95 went from
170 ms to 1.6 s while the pages ran, in another from 31 ms to 370 ms for one page).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import httpx
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from abaco.roles import Role
from kpis.models import LoanState, SnapshotRun

ROOT = Path(settings.BASE_DIR)
PORT = int(os.environ.get("BENCH_PORT", "8150"))  # the team's servers use 8100-8199
CLIENTS = 20
SECONDS = float(os.environ.get("BENCH_PAGE_SECONDS", "10"))
WARM_UP_SECONDS = 2
SMALL_DB = "abaco_bench_small"
DASHBOARD_P95_MS, DRILL_DOWN_P95_MS = 150, 300
# The framework's floor (see the module's docstring), half as long as a page: enough requests for
# its p95, and it runs nine times.
FLOOR, FLOOR_SECONDS = "/healthz", SECONDS / 2

# wrk reports p50/p95/p99 through its Lua hook (its --latency table has no p95).
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %f %f %f %d %d\\n", latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _pages() -> list[tuple[str, str, int | None]]:
    """(name, path, p95 target in ms) of every page measured; the loan page has no target."""
    run = SnapshotRun.objects.order_by("-as_of", "basis").first()
    worst = (
        LoanState.objects.filter(run=run).order_by("-dpd", "-id").values_list("loan_id", flat=True)
    )
    return [
        ("overview", "/dashboard/", DASHBOARD_P95_MS),
        ("risk", "/dashboard/risk/", DASHBOARD_P95_MS),
        ("concentration", "/dashboard/concentration/", DASHBOARD_P95_MS),
        ("collections", "/dashboard/collections/", DASHBOARD_P95_MS),
        ("overview, entity ABF", "/dashboard/?dimension=company&member=ABF", DASHBOARD_P95_MS),
        ("drill-down, 1+ DPD, page 1", "/dashboard/loans/", DRILL_DOWN_P95_MS),
        ("drill-down, current, page 1", "/dashboard/loans/?bucket=current", DRILL_DOWN_P95_MS),
        ("loan page (worst loan)", f"/dashboard/loans/{worst.first()}/", None),
    ]


def _manager() -> User:
    user, _ = User.objects.get_or_create(username="bench.manager")
    user.groups.add(Group.objects.get(name=Role.MANAGER.value))
    return user


def _session_cookie() -> str:
    client = Client(HTTP_HOST="localhost")
    client.force_login(_manager())
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _server_env() -> dict[str, str]:
    """Production settings for gunicorn, on the database this process uses."""
    db = connection.settings_dict
    url = os.environ.get("BENCH_DATABASE_URL") or (
        f"postgres://{db['USER']}@:{db['PORT']}/{db['NAME']}?host={db['HOST']}"
    )
    return {
        **os.environ,
        "DEBUG": "false",
        # The session cookie is made in this process: the server must sign with the same key.
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": url,
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "PORT": str(PORT),
        # CPU-bound pages on a box that also runs PostgreSQL and the load generator: one worker
        # per core and one to cover I/O waits beats infra's 2 x cores + 1 (see README).
        "WEB_CONCURRENCY": os.environ.get("BENCH_WORKERS", str((os.cpu_count() or 2) + 1)),
    }


@contextmanager
def _gunicorn():
    env = _server_env()
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    log = (ROOT / "benchmarks" / "out").joinpath("gunicorn.log")
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                bin_dir / "gunicorn",
                "-c",
                "infra/gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{PORT}",
                # Workers recycled by max_requests then fork from a loaded app instead of stalling a
                # core for a second importing Django mid-measurement.
                "--preload",
                "abaco.wsgi",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            # BENCH_START_SECONDS: on a crowded machine the first /healthz has taken 15 s.
            deadline = time.monotonic() + float(os.environ.get("BENCH_START_SECONDS", "30"))
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{PORT}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start; see {log}")
                time.sleep(0.2)
            print(
                f"gunicorn: {env['WEB_CONCURRENCY']} sync workers (BENCH_WORKERS), preloaded,"
                f" on 127.0.0.1:{PORT}"
            )
            yield f"http://127.0.0.1:{PORT}"
        finally:
            server.terminate()
            server.wait(timeout=120)


def _cookie(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}


def _wrk(
    url: str, headers: dict[str, str], script: Path, *, seconds: float
) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CLIENTS}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            *[arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")],
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p50, p95, p99, requests, errors = re.search(r"^BENCH (.*)$", out, re.M).group(1).split()
    return float(p50), float(p95), float(p99), int(requests), int(errors)


def _threads(
    url: str, headers: dict[str, str], script: Path, *, seconds: float
) -> tuple[float, float, float, int, int]:
    """wrk's figures from a pool of keep-alive httpx clients (when wrk is not installed; the
    Lua script is wrk's alone)."""
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(headers=headers, timeout=10) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status = http.get(url).status_code
                latencies.append((time.perf_counter() - started) * 1000)
                errors[0] += status != 200

    pool = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[94], cuts[98], len(latencies), errors[0]


def latency(pages: list[tuple[str, str, int | None]]) -> None:
    cookie = _session_cookie()
    driver = "wrk" if shutil.which("wrk") else "httpx threads (wrk not installed)"
    print(
        f"page latency: {CLIENTS} concurrent clients, {SECONDS:g} s per page, {driver}; the floor"
        f" is {FLOOR} for {FLOOR_SECONDS:g} s before and after each page"
    )
    with _gunicorn() as base, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "report.lua"
        script.write_text(WRK_SCRIPT)

        def load(path: str, seconds: float) -> tuple[float, float, float, int, int]:
            measure = _wrk if shutil.which("wrk") else _threads
            measure(base + path, _cookie(cookie), script, seconds=WARM_UP_SECONDS)  # warm workers
            return measure(base + path, _cookie(cookie), script, seconds=seconds)

        floor = load(FLOOR, FLOOR_SECONDS)
        _line(f"floor: {FLOOR}", floor, FLOOR_SECONDS)
        floors = [floor[1]]
        measured = []
        for name, path, target in pages:
            response = httpx.get(base + path, cookies={settings.SESSION_COOKIE_NAME: cookie})
            if response.status_code != 200:
                print(f"  {name}: HTTP {response.status_code}, not measured")
                continue
            measured.append((name, load(path, SECONDS), target))
            floors.append(load(FLOOR, FLOOR_SECONDS)[1])
    # The yardstick is the median of the floor's p95s over the run: one floor measurement can
    # spike (a worker recycled by max_requests at the floor's high request rate), and a page's
    # ratio to its two neighbours alone swung from 0.4 to 4.6 in one run.
    yardstick = statistics.median(floors)
    for i, (name, figures, target) in enumerate(measured):
        verdict = "" if target is None else ("  ok" if figures[1] < target else "  MISSES")
        _line(
            name,
            figures,
            SECONDS,
            f"  ratio {figures[1] / yardstick:.1f} (floor p95 {floors[i]:.1f}/{floors[i + 1]:.1f} ms"
            " before/after)" + (f"  (target p95 < {target} ms){verdict}" if target else ""),
        )
    print(
        f"  yardstick: the floor's median p95 {yardstick:.1f} ms"
        f" (ranged {min(floors):.1f}-{max(floors):.1f} ms over the run)"
    )


def _line(
    name: str, figures: tuple[float, float, float, int, int], seconds: float, tail: str = ""
) -> None:
    p50, p95, p99, requests, errors = figures
    print(
        f"  {name:30} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms"
        f"  {requests / seconds:5.0f} req/s" + (f"  {errors} errors" if errors else "") + tail
    )


def query_counts(pages: list[tuple[str, str, int | None]]) -> dict[str, int]:
    """SQL queries per page, in-process (a warm request first: content types, session)."""
    client = Client(HTTP_HOST="localhost")  # this process runs with the development settings
    client.force_login(_manager())
    counts = {}
    for name, path, _ in pages:
        client.get(path)
        with CaptureQueriesContext(connection) as queries:
            status = client.get(path).status_code
        counts[name] = len(queries) if status == 200 else -status
    return counts


def cache_memory(pages: list[tuple[str, str, int | None]]) -> None:
    """What the page cache keeps (issue 21): each page's entry, as the database cache stores it,
    computed afresh in-process for the manager's clearance; then a snapshot's worth, every
    dashboard for every slice of the latest run (the portfolio's sizes times the slices)."""
    from django.core.cache import caches

    from kpis.models import KpiValue
    from kpis.pagecache import CACHE_ALIAS, KEY_PREFIX, SERVED_ALIAS

    table = getattr(caches[CACHE_ALIAS], "_table", None)
    if table is None:
        print("page cache memory: measured on the database cache only (CACHE_URL is not one)")
        return
    ours = f"%:{KEY_PREFIX}:%"
    kept = f"SELECT coalesce(sum(octet_length(value)), 0) FROM {connection.ops.quote_name(table)}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {connection.ops.quote_name(table)} WHERE cache_key LIKE %s", [ours]
        )
    client = Client(HTTP_HOST="localhost")
    client.force_login(_manager())
    # The second level: the whole pages a process keeps (LocMemCache's pickled bytes).
    served = getattr(caches[SERVED_ALIAS], "_cache", {})
    served.clear()
    sizes, whole = {}, {}
    for name, path, _ in pages:
        with connection.cursor() as cursor:
            cursor.execute(kept + " WHERE cache_key LIKE %s", [ours])
            before, before_served = cursor.fetchone()[0], sum(map(len, served.values()))
            client.get(path)
            cursor.execute(kept + " WHERE cache_key LIKE %s", [ours])
            sizes[name] = cursor.fetchone()[0] - before
            whole[name] = sum(map(len, served.values())) - before_served
    print(
        "page cache memory (the database cache's stored bytes, one clearance; and the whole page"
        " a web process keeps in its memory per user and day):"
    )
    for name, size in sizes.items():
        print(f"  {name:30} {size / 1024:7.1f} KB shared  {whole[name] / 1024:7.1f} KB per process")
    run = SnapshotRun.objects.order_by("-as_of", "basis").first()
    slices = KpiValue.objects.filter(run=run).values("dimension", "member").distinct().count()
    dashboards = sum(sizes.get(n, 0) for n in ("overview", "risk", "concentration", "collections"))
    print(
        f"  a snapshot's dashboards: 4 pages x {slices} slices (portfolio and each entity,"
        f" product, currency) ~ {dashboards * slices / 1024 / 1024:.1f} MB per clearance"
    )


@contextmanager
def _database(name: str):
    """This process's default connection pointed at another database of the same server."""
    original = connection.settings_dict["NAME"]
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original


def run() -> None:
    if not SnapshotRun.objects.exists():
        print("pages: no snapshots in the benchmark database; run the other benchmarks first")
        return
    big = _pages()
    print(f"book: {SnapshotRun.objects.order_by('-as_of').first().loans:,} loans with a balance")
    latency(big)
    cache_memory(big)
    big_counts = query_counts(big)
    with _database(SMALL_DB):
        quiet = {"stdout": StringIO(), "stderr": StringIO()}
        call_command("migrate", verbosity=0)
        call_command("createcachetable")
        call_command("demo_data", "--if-empty", **quiet)
        call_command("compute_kpis", "--backfill", "--if-empty", **quiet)
        small_counts = query_counts(_pages())
    print("queries per page: demo book (5,000 loans) / this book")
    for (name, *_), small, large in zip(
        big, small_counts.values(), big_counts.values(), strict=True
    ):
        print(f"  {name:30} {small:3} / {large:3}" + ("" if small == large else "  DIFFERS"))
