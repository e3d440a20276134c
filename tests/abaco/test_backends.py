"""The password backend reads a user's permissions in one query (abaco.backends), with the same
answers as Django's ModelBackend, read afresh on every request."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from abaco.backends import PermissionsBackend
from abaco.roles import Role
from tests.base import CastTestCase


def _fresh(user: User) -> User:
    """The user as a new request loads it: no permission read yet."""
    return User.objects.get(pk=user.pk)


class PermissionsBackendTests(CastTestCase):
    def test_every_role_gets_what_model_backend_gives(self):
        granted = Permission.objects.get(codename="view_pii")
        self.manager.user_permissions.add(granted)  # a permission of the user's own
        inactive = User.objects.create_user(username="ian.inactive", is_active=False)
        inactive.groups.add(Group.objects.get(name=Role.MANAGER.value))
        cast = [self.uploader, self.steward, self.manager, self.auditor, self.admin, self.outsider]
        for user in [*cast, inactive]:
            with self.subTest(user=user.username):
                ours = PermissionsBackend().get_all_permissions(_fresh(user))
                self.assertEqual(ours, ModelBackend().get_all_permissions(_fresh(user)))
        manager = _fresh(self.manager)
        self.assertTrue(manager.has_perm("loans.view_pii"))  # its own
        self.assertTrue(manager.has_perm("kpis.view_dashboard"))  # its group's
        self.assertFalse(manager.has_perm("compliance.view_audit"))
        self.assertEqual(PermissionsBackend().get_all_permissions(_fresh(inactive)), set())
        # The superuser holds every permission there is.
        self.assertEqual(len(_fresh(self.admin).get_all_permissions()), Permission.objects.count())

    def test_one_query_on_the_first_check_and_none_after(self):
        manager = _fresh(self.manager)
        with CaptureQueriesContext(connection) as queries:
            self.assertTrue(manager.has_perm("kpis.view_dashboard"))
            self.assertFalse(manager.has_perm("loans.view_pii"))
            self.assertTrue(manager.has_perm("kpis.export_data"))
        self.assertEqual(len(queries), 1)
        # The admin and DRF ask for the two halves apart: both are filled by that query.
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(manager.get_user_permissions(), set())
            self.assertIn("kpis.view_dashboard", manager.get_group_permissions())
        self.assertEqual(len(queries), 0)

    def test_a_revoked_role_takes_effect_on_the_next_request(self):
        self.client.force_login(self.manager)
        overview = reverse("kpis:overview")
        self.assertEqual(self.client.get(overview).status_code, 200)
        self.manager.groups.clear()
        self.assertEqual(self.client.get(overview).status_code, 403)
        self.manager.groups.add(Group.objects.get(name=Role.AUDITOR.value))
        self.assertEqual(self.client.get(overview).status_code, 403)
        self.assertEqual(self.client.get(reverse("compliance:journal")).status_code, 200)
