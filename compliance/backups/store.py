"""Where backups live (the ``backups`` storage), their manifest, listing and retention."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage, storages

logger = logging.getLogger("compliance.backups")


MANIFEST = "manifest.json"
DUMP = "database.dump"
ID_FORMAT = "%Y%m%dT%H%M%SZ"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z$")


@dataclass
class Manifest:
    id: str
    created_at: str
    database: str
    server_version: str
    pg_dump: str
    dump: dict[str, Any]
    tables: dict[str, int]
    files: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dump_seconds: float = 0.0
    seconds: float = 0.0

    @classmethod
    def load(cls, text: str) -> Manifest:
        return cls(**json.loads(text))

    def dumps(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def backup_storage() -> Storage:
    return storages["backups"]


def _backup_folders(store: Storage) -> set[str]:
    """The backup ids in the store, complete or not. An object store (Azure) lists every blob
    under a prefix and no folders; a folder on disk lists its subfolders."""
    try:
        folders, files = store.listdir("")
    except FileNotFoundError:
        return set()
    names = set(folders) | {name.split("/", 1)[0] for name in files if "/" in name}
    return {name for name in names if ID_PATTERN.match(name)}


def backups_list() -> list[str]:
    """Ids of the complete backups (those with a manifest), oldest first."""
    store = backup_storage()
    return sorted(name for name in _backup_folders(store) if store.exists(f"{name}/{MANIFEST}"))


def backup_manifest(backup_id: str) -> Manifest:
    with backup_storage().open(f"{backup_id}/{MANIFEST}", "rb") as handle:
        return Manifest.load(handle.read().decode())


def _day(backup_id: str) -> date:
    return datetime.strptime(backup_id, ID_FORMAT).date()


def backups_to_keep(ids: list[str], *, daily: int, weekly: int, monthly: int) -> set[str]:
    """The newest backup of each of the last ``daily`` days, ``weekly`` ISO weeks and
    ``monthly`` months that have one (grandfather-father-son)."""
    keep: set[str] = set()
    for count, period in (
        (daily, lambda d: d.isoformat()),
        (weekly, lambda d: d.isocalendar()[:2]),
        (monthly, lambda d: (d.year, d.month)),
    ):
        seen: list[object] = []
        for backup_id in sorted(ids, reverse=True):
            key = period(_day(backup_id))
            if key in seen:
                continue
            if len(seen) == count:
                break
            seen.append(key)
            keep.add(backup_id)
    return keep


def _delete_tree(store: Storage, prefix: str) -> None:
    folders, files = store.listdir(prefix)
    for name in files:
        # Object stores answer with full names, a folder on disk with names inside the prefix.
        store.delete(name if name.startswith(f"{prefix}/") else f"{prefix}/{name}")
    for name in folders:
        _delete_tree(store, f"{prefix}/{name}")
    # A folder on disk: remove the emptied directory too (object stores have no folders).
    with contextlib.suppress(OSError, NotImplementedError):
        Path(store.path(prefix)).rmdir()


def backups_prune(
    *, dry_run: bool = False, log: Callable[[str], object] = logger.info
) -> list[str]:
    """Delete the complete backups retention no longer keeps, and incomplete folders older
    than the newest complete backup (a backup that died midway). Returns the ids deleted."""
    store = backup_storage()
    complete = backups_list()
    keep = backups_to_keep(
        complete,
        daily=settings.BACKUP_KEEP_DAILY,
        weekly=settings.BACKUP_KEEP_WEEKLY,
        monthly=settings.BACKUP_KEEP_MONTHLY,
    )
    newest = complete[-1] if complete else ""
    doomed = sorted(
        name
        for name in _backup_folders(store)
        if name not in keep and (name in complete or name < newest)
    )
    for backup_id in doomed:
        log(f"{'would delete' if dry_run else 'deleting'} backup {backup_id}")
        if not dry_run:
            _delete_tree(store, backup_id)
    return doomed
