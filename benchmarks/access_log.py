"""The access log's cost (issue 19): per page, and the streaming audit export at a million entries.

1. Per page. The pages of ``benchmarks/pages.py`` (dashboards, drill-down, loan page) on the
   snapshot book of the database this runs on, as a manager, in this process through Django's
   test client (the whole middleware stack, real PostgreSQL, no network), one request at a time:
   each round loads every page once with the access log (``AccessLogMiddleware`` writing its
   journal entry) and once without, interleaved, so both see the same load of a shared machine.
   Prints p50/p95 of each and the difference. The budget is 2 ms on the median; concurrent
   gunicorn runs (``pages.py``) cannot resolve 2 ms on a contended 2-core machine, this can.
2. The export. A scratch database (``BENCH_AUDIT_DB``, default ``abaco_bench_audit``, created from
   ``template0`` and migrated) gets ``BENCH_JOURNAL_ROWS`` (1,000,000) access entries from one
   ``INSERT ... SELECT generate_series``; ``manage.py audit_export --kind journal --format jsonl``
   and ``--kind access --format csv`` write them to /dev/null in a child process, timed, with its
   peak RSS (flat memory means the same peak at 10,000 and at 1,000,000 entries: both are shown).

Run: ``DATABASE_URL=postgres://.../<snapshot book> python benchmarks/access_log.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from benchmarks.pages import _manager, _pages  # noqa: E402

ROOT = Path(settings.BASE_DIR)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
ROWS = int(os.environ.get("BENCH_JOURNAL_ROWS", "1000000"))
SCRATCH = os.environ.get("BENCH_AUDIT_DB", "abaco_bench_audit")
MIDDLEWARE = "compliance.access.AccessLogMiddleware"


def _client(*, logged: bool) -> Client:
    middleware = [m for m in settings.MIDDLEWARE if logged or m != MIDDLEWARE]
    with override_settings(MIDDLEWARE=middleware):
        client = Client(HTTP_HOST="localhost")
        client.force_login(_manager())
        client.get("/healthz")  # builds the handler's middleware chain under this setting
    return client


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def page_cost() -> None:
    on, off = _client(logged=True), _client(logged=False)
    pages = _pages()
    times: dict[str, dict[bool, list[float]]] = {
        name: {True: [], False: []} for name, _, _ in pages
    }
    for round_ in range(ROUNDS + 2):
        for name, path, _ in pages:
            order = (True, False) if round_ % 2 else (False, True)
            for logged in order:
                client = on if logged else off
                started = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (path, response.status_code)
                if round_ >= 2:  # two warm-up rounds
                    times[name][logged].append(elapsed)
    print(f"\nAccess log per page: {ROUNDS} interleaved rounds, one request at a time, in-process")
    print(f"{'page':<32} {'p50 off':>8} {'p50 on':>8} {'Δp50':>7} {'p95 off':>8} {'p95 on':>8}")
    deltas = []
    for name, by in times.items():
        (p50_off, p95_off), (p50_on, p95_on) = _ms(by[False]), _ms(by[True])
        # The paired difference: each round's on minus its off, so drift cancels.
        delta = statistics.median(a - b for a, b in zip(by[True], by[False], strict=True))
        deltas.append(delta)
        print(f"{name:<32} {p50_off:8.1f} {p50_on:8.1f} {delta:+7.2f} {p95_off:8.1f} {p95_on:8.1f}")
    print(
        f"median paired difference over the pages: {statistics.median(deltas):+.2f} ms (budget 2)"
    )
    record_cost()


def record_cost() -> None:
    """The write alone beside its yardstick: ``access_record`` against one ``SELECT 1`` round
    trip on the same connection, interleaved (on a loaded machine a round trip is most of it)."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import RequestFactory

    from compliance.access import access_record

    user = User.objects.get(username="bench.manager")
    factory = RequestFactory()
    writes, trips = [], []
    with connection.cursor() as cursor:
        for _ in range(ROUNDS * 5):
            request = factory.get("/dashboard/", {"as_of": "2025-11-30"})
            request.user = user
            started = time.perf_counter()
            access_record(request=request, action="view dashboard")
            writes.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            trips.append((time.perf_counter() - started) * 1000)
    (w50, w95), (t50, t95) = _ms(writes), _ms(trips)
    print(
        f"access_record alone: p50 {w50:.2f} ms, p95 {w95:.2f} ms; a SELECT 1 round trip: "
        f"p50 {t50:.2f} ms, p95 {t95:.2f} ms; ratio of medians {w50 / t50:.1f}"
    )


def _psql(sql: str, db: str = "postgres") -> None:
    subprocess.run([*_psql_args(db), "-c", sql], check=True, capture_output=True)


def _psql_args(db: str) -> list[str]:
    d = settings.DATABASES["default"]
    return [
        "psql",
        "-h",
        d["HOST"] or "127.0.0.1",
        "-p",
        str(d["PORT"] or 5432),
        "-U",
        d["USER"],
        "-q",
        db,
    ]


def _export(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py audit_export ARGS -o /dev/null`` under /usr/bin/time (peak RSS on stderr)."""
    command = [sys.executable, "manage.py", "audit_export", *args, "-o", "/dev/null"]
    return subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *command],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def export_rate() -> None:
    d = settings.DATABASES["default"]
    url = f"postgres://{d['USER']}@{d['HOST'] or '127.0.0.1'}:{d['PORT'] or 5432}/{SCRATCH}"
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}
    keep = os.environ.get("BENCH_AUDIT_KEEP") == "1"  # reuse the scratch database of a last run
    if not keep:
        _psql(f"DROP DATABASE IF EXISTS {SCRATCH}")
        _psql(f"CREATE DATABASE {SCRATCH} TEMPLATE template0")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
        )
    # The command's start-up (Django, settings, apps): the same command on an empty range.
    started = time.perf_counter()
    _export(env, "--kind", "journal", "--since", "2999-01-01")
    startup = time.perf_counter() - started
    for rows in (ROWS, 10_000):
        have = subprocess.run(
            [*_psql_args(SCRATCH), "-Atc", "SELECT count(*) FROM compliance_journalentry"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if keep and have == str(rows):
            print(f"\n{rows:,} journal entries kept from the last run")
            _measure(env, rows, startup)
            continue
        _psql(
            "ALTER TABLE compliance_journalentry DISABLE TRIGGER ALL; TRUNCATE compliance_journalentry; "
            "ALTER TABLE compliance_journalentry ENABLE TRIGGER ALL",
            SCRATCH,
        )
        started = time.perf_counter()
        _psql(
            f"""INSERT INTO compliance_journalentry
                (at, kind, action, actor_id, actor, object, path, rows, body, prev_hash, hash)
            SELECT now() - (i || ' seconds')::interval, 'access', 'view', 7, 'mia.manager',
                   'loans.loan:' || i, '/dashboard/loans/' || i || '/', NULL,
                   json_build_object('at', now(), 'kind', 'access', 'action', 'view',
                     'actor', 'mia.manager', 'actor_id', 7, 'object', 'loans.loan:' || i,
                     'path', '/dashboard/loans/' || i || '/', 'roles', json_build_array('Manager'),
                     'ip', '10.0.0.1', 'request_id', md5(i::text), 'filters',
                     json_build_object('as_of', '2025-11-30'))::text,
                   md5((i - 1)::text) || md5((i - 1)::text), md5(i::text) || md5(i::text)
            FROM generate_series(1, {rows}) AS i""",
            SCRATCH,
        )
        print(f"\n{rows:,} journal entries inserted in {time.perf_counter() - started:.1f} s")
        _measure(env, rows, startup)
    if not keep:
        _psql(f"DROP DATABASE IF EXISTS {SCRATCH}")


def _measure(env: dict[str, str], rows: int, startup: float) -> None:
    """Both exports of ``rows`` entries: wall time, CPU time and peak RSS of the process."""
    for kind, fmt in (("journal", "jsonl"), ("access", "csv")):
        started = time.perf_counter()
        done = _export(env, "--kind", kind, "--format", fmt)
        seconds = time.perf_counter() - started
        peak_kb, user, system = done.stderr.strip().splitlines()[-1].split()
        cpu = float(user) + float(system)
        print(
            f"audit_export --kind {kind} --format {fmt}: {seconds:.1f} s wall (start-up "
            f"{startup:.1f} s), {cpu:.1f} s CPU; {rows / max(seconds - startup, 0.001):,.0f} "
            f"entries/s of wall time after start-up, {rows / max(cpu, 0.001):,.0f} entries per "
            f"CPU second; peak RSS {int(peak_kb) / 1024:.0f} MB"
        )


if __name__ == "__main__":
    if os.environ.get("BENCH_SKIP_PAGES") != "1":
        page_cost()
    if os.environ.get("BENCH_SKIP_EXPORT") != "1":
        export_rate()
