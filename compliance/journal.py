"""The tamper-evident journal: canonical JSON, a SHA-256 chain, and its verification.

Chaining: each row's hash is SHA-256 over the previous row's hash, a newline and the row's
canonical JSON. Rows are chained one by one, not sealed in blocks: a writer takes a transaction
advisory lock, reads the last hash and inserts, in one SQL function call (one round trip). That wait is short only
because an entry is written *after* its caller's transaction commits (``transaction.on_commit``),
never inside a long import or request transaction; so no writer ever waits on another's work, and
the journal holds only what really committed. Blocks would save the lock but leave the newest rows
unsealed (unprotected) until the sealer runs, and gaps of rolled-back ids make them hard to close.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from compliance.models import JournalEntry

# pg_advisory_xact_lock key of the chain's tail (any fixed bigint; "journal" in ASCII), written
# into the SQL function of migration 0004.
CHAIN_LOCK = 0x6A6F75726E616C
# Entries committed without waiting for the WAL flush: reads and sign-ins, one per page view. A
# crash of the database server can lose the last moments of them (a tail of the chain, never a
# row in its middle: the chain stays whole); changes, imports, reviews and runs wait for the disk.
ASYNC_KINDS = ("access", "sign_in")
# The columns copied out of the body for filtering; verification checks they still match it.
COLUMNS = ("kind", "action", "actor_id", "actor", "object", "path", "rows")


def canonical(data: Mapping[str, Any]) -> str:
    """One spelling for one content: sorted keys, no spaces, UTF-8 kept, non-JSON as strings.

    This is how an entry travels to the database; the row stores PostgreSQL's jsonb text of it
    (plus the actor's ``roles``, read in the same call), which is what its hash covers.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _append_now(body: dict[str, Any], at: datetime) -> None:
    """One round trip: ``compliance_journal_append`` (migration 0004) adds the actor's roles,
    takes the chain's lock, reads the last hash and inserts with ``SHA-256(prev_hash + "\n" +
    body)``, as ``chain_hash`` computes it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT compliance_journal_append(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                at,
                body["kind"],
                body["action"],
                body["actor_id"],
                body["actor"] or "",
                body["object"] or "",
                body["path"] or "",
                body["rows"],
                canonical(body),
                body["kind"] not in ASYNC_KINDS,
            ],
        )


def journal_append(
    *,
    kind: str,
    action: str,
    actor_id: int | None = None,
    actor: str = "",
    by: Any = None,
    object: str = "",
    path: str = "",
    rows: int | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Add one entry once the caller's transaction commits (at once outside a transaction).

    ``by`` (a user, or None for the system) gives ``actor_id`` and ``actor``. ``detail`` (roles,
    ip, request_id, filters, changes ...) goes into the hashed body only.
    """
    if by is not None:
        actor_id, actor = by.pk, by.get_username()
    at = at or timezone.now()
    body = {
        "at": at.astimezone(UTC).isoformat(),
        "kind": kind,
        "action": action,
        "actor_id": actor_id,
        "actor": actor,
        "object": object[:200],
        "path": path[:500],
        "rows": rows,
        **{key: value for key, value in detail.items() if value not in (None, "", {}, [])},
    }
    transaction.on_commit(lambda: _append_now(body, at), robust=False)


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    reason: str

    def __str__(self) -> str:
        return f"journal entry {self.entry_id}: {self.reason}"


def chain_verify(*, progress: Any = None) -> tuple[int, ChainBreak | None]:
    """Walk the chain in id order: (entries checked, the first break or None)."""
    prev = ""
    checked = 0
    rows: Iterator[tuple[Any, ...]] = (
        JournalEntry.objects.order_by("id")
        .values_list("id", "at", "prev_hash", "hash", "body", *COLUMNS)
        .iterator(chunk_size=5000)
    )
    for entry_id, at, prev_hash, hash_, body, *columns in rows:
        if prev_hash != prev:
            return checked, ChainBreak(
                entry_id, "its previous hash is not the hash of the entry before"
            )
        if chain_hash(prev, body) != hash_:
            return checked, ChainBreak(entry_id, "its content does not match its hash")
        try:
            data = json.loads(body)
        except ValueError:
            return checked, ChainBreak(entry_id, "its content is not JSON")
        expected = [
            data.get(name) if name in ("actor_id", "rows") else data.get(name) or ""
            for name in COLUMNS
        ]
        if columns != expected or at.astimezone(UTC).isoformat() != data.get("at"):
            return checked, ChainBreak(entry_id, "its columns differ from its hashed content")
        prev = hash_
        checked += 1
        if progress is not None and checked % 100_000 == 0:
            progress(checked)
    return checked, None


def day_last_hashes(*, since: datetime | None = None) -> Iterator[tuple[str, int, str]]:
    """(local date, last entry id, its hash) per day: what the daily export writes out."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT ON (day) day, id, hash FROM (
              SELECT (at AT TIME ZONE %s)::date AS day, id, hash
              FROM {JournalEntry._meta.db_table} WHERE %s::timestamptz IS NULL OR at >= %s
            ) d ORDER BY day, id DESC
            """,
            [timezone.get_current_timezone_name(), since, since],
        )
        for day, entry_id, hash_ in cursor.fetchall():
            yield day.isoformat(), entry_id, hash_
