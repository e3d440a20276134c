"""The password backend, with a user's permissions read in one plain SQL query (issue 21).

Django's ``ModelBackend`` reads a user's permissions on the first check of a request with two
ORM queries (the user's own, then the groups'), each compiled by the ORM and planned by
PostgreSQL as a four-table join. Every page checks permissions (the role, the PII clearance, the
navigation), and on a cached dashboard page those two queries cost about a quarter of the
request. Here both sets come back from one statement and fill the same caches
``ModelBackend`` keeps on the user object, so everything else (``has_perm``, the admin, DRF)
behaves as before. Permissions are still read from the database on every request, so a revoked
role takes effect on the next page. The statement is the SQL function ``abaco_user_permissions``
(migration 0002): a function's plan is kept for the connection's life, and planning the
four-table join each time took twice as long as running it.

A superuser's permissions are every permission there is: those are left to ``ModelBackend``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db import connections, router


class PermissionsBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if (
            obj is None
            and user_obj.is_active
            and not user_obj.is_anonymous
            and not user_obj.is_superuser
            and not hasattr(user_obj, "_perm_cache")
        ):
            own: set[str] = set()
            groups: set[str] = set()
            with connections[router.db_for_read(Permission)].cursor() as cursor:
                # The statement lives in abaco/migrations/0002 (the module's docstring says why).
                cursor.execute("SELECT source, perm FROM abaco_user_permissions(%s)", [user_obj.pk])
                for source, perm in cursor.fetchall():
                    (own if source == "own" else groups).add(perm)
            user_obj._user_perm_cache, user_obj._group_perm_cache = own, groups
        return super().get_all_permissions(user_obj, obj)
