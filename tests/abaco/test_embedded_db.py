"""Processes of one checkout start at once (web and task cluster, parallel test workers): the
first one creates the database, and the others must take it as it is rather than fail."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from abaco.embedded_db import _ensure_database


@pytest.mark.django_db
def test_processes_creating_the_database_at_once_all_find_it():
    config = {**connection.settings_dict, "NAME": f"{connection.settings_dict['NAME']}_race"}
    server = {
        "dbname": "postgres",
        "user": config["USER"],
        "host": config["HOST"],
        "port": config["PORT"],
    }
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def create() -> None:
        start.wait()
        try:
            _ensure_database(config)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        with psycopg.connect(**server) as conn:
            found = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s", [config["NAME"]]
            ).fetchone()
        assert found == (1,)
    finally:
        with psycopg.connect(**server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(config["NAME"]))
            )
