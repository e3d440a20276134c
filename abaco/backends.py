"""The password backend, with a user's permissions read in one plain SQL query (issue 21).

Django's ``ModelBackend`` reads a user's permissions on the first check of a request with two
ORM queries (the user's own, then the groups'), each compiled by the ORM and planned by
PostgreSQL as a four-table join. Every page checks permissions (the role, the PII clearance, the
navigation), and on a cached dashboard page those two queries cost about a quarter of the
request. Here both sets come back from one prepared-by-hand statement and fill the same caches
``ModelBackend`` keeps on the user object, so everything else (``has_perm``, the admin, DRF)
behaves as before. Permissions are still read from the database on every request, so a revoked
role takes effect on the next page.

A superuser's permissions are every permission there is: those are left to ``ModelBackend``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection, connections, router


@cache
def _permissions_sql() -> str:
    """Each permission of a user as ('own' or 'group', 'app_label.codename')."""
    user_model: Any = get_user_model()

    def table(model: Any) -> str:
        return connection.ops.quote_name(model._meta.db_table)

    permission, content_type = table(Permission), table(ContentType)
    own, member = table(user_model.user_permissions.through), table(user_model.groups.through)
    granted = table(Group.permissions.through)
    name = "ct.app_label || '.' || p.codename"
    return f"""
        SELECT 'own', {name}
        FROM {own} x
        JOIN {permission} p ON p.id = x.permission_id
        JOIN {content_type} ct ON ct.id = p.content_type_id
        WHERE x.user_id = %(user)s
        UNION ALL
        SELECT 'group', {name}
        FROM {member} m
        JOIN {granted} x ON x.group_id = m.group_id
        JOIN {permission} p ON p.id = x.permission_id
        JOIN {content_type} ct ON ct.id = p.content_type_id
        WHERE m.user_id = %(user)s
    """


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
                cursor.execute(_permissions_sql(), {"user": user_obj.pk})
                for source, perm in cursor.fetchall():
                    (own if source == "own" else groups).add(perm)
            user_obj._user_perm_cache, user_obj._group_perm_cache = own, groups
        return super().get_all_permissions(user_obj, obj)
