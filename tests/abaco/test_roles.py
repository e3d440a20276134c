"""Roles of docs/design.md: each lands where it works and cannot open another role's pages."""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from abaco import roles
from abaco.roles import ROLES, Role, roles_sync
from tests.base import CastTestCase


def group_perms(role: Role) -> set[str]:
    perms = Group.objects.get(name=role.value).permissions.select_related("content_type")
    return {f"{p.content_type.app_label}.{p.codename}" for p in perms}


class RoleGroupTests(CastTestCase):
    def test_every_role_is_a_group_with_exactly_the_permissions_roles_py_lists(self):
        for role, perms in ROLES.items():
            if perms == ["*"]:
                continue
            with self.subTest(role=role.value):
                self.assertEqual(group_perms(role), set(perms))

    def test_a_permission_no_model_defines_is_a_typo_and_stops_the_sync(self):
        typo = {**ROLES, Role.MANAGER: [*ROLES[Role.MANAGER], "kpis.view_dashbaord"]}
        with self._roles(typo), self.assertRaisesRegex(LookupError, "dashbaord"):
            from django.apps import apps

            roles_sync(apps)

    def test_a_permission_whose_model_is_not_migrated_yet_waits_for_its_migrate(self):
        # `migrate kpis` on a fresh database: the integrations app's tables come later.
        Permission.objects.filter(content_type__app_label="integrations").delete()
        loader = MigrationLoader(connection)
        leaves = [loader.graph.leaf_nodes(app)[0] for app in ("kpis", "auth", "contenttypes")]
        kpis_only = loader.project_state(leaves).apps
        self.assertNotIn("integrations", {c.label for c in kpis_only.get_app_configs()})

        roles_sync(kpis_only)

        self.assertNotIn("integrations.view_pipelines", group_perms(Role.UPLOADER))
        self.assertIn("loans.add_batch", group_perms(Role.UPLOADER))

    @staticmethod
    def _roles(table):
        from unittest import mock

        return mock.patch.object(roles, "ROLES", table)

    def test_a_manager_reads_dashboards_but_cannot_upload(self):
        perms = group_perms(Role.MANAGER)
        self.assertIn("kpis.view_dashboard", perms)
        self.assertNotIn("loans.add_batch", perms)
        self.assertTrue(self.manager.has_perm("kpis.view_dashboard"))
        self.assertFalse(self.manager.has_perm("loans.add_batch"))

    def test_an_auditor_reads_the_audit_history_and_can_change_nothing(self):
        perms = group_perms(Role.AUDITOR)
        self.assertIn("compliance.view_audit", perms)
        writes = sorted(
            p for p in perms if p.split(".")[1].startswith(("add_", "change_", "delete_"))
        )
        self.assertEqual(writes, [])

    def test_the_admin_group_holds_every_permission(self):
        every = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in Permission.objects.select_related("content_type")
        }
        self.assertEqual(group_perms(Role.ADMIN), every)

    def test_only_the_steward_among_staff_roles_sees_personal_data(self):
        self.assertTrue(self.steward.has_perm("loans.view_pii"))
        self.assertFalse(self.uploader.has_perm("loans.view_pii"))
        self.assertFalse(self.manager.has_perm("loans.view_pii"))
        self.assertFalse(self.auditor.has_perm("loans.view_pii"))


class HomeTests(CastTestCase):
    def test_home_sends_each_role_to_where_it_works(self):
        expected = {
            "manager": "/dashboard/",
            "admin": "/dashboard/",
            "auditor": "/audit/",
            "uploader": "/admin/",
            "steward": "/admin/",
        }
        for who, url in expected.items():
            with self.subTest(who=who):
                self.client.force_login(getattr(self, who))
                self.assertRedirects(self.client.get("/"), url, fetch_redirect_response=False)

    def test_home_refuses_a_signed_in_user_without_a_role(self):
        self.client.force_login(self.outsider)
        self.assertEqual(self.client.get("/").status_code, 403)

    def test_home_sends_an_anonymous_visitor_to_login(self):
        self.assertRedirects(self.client.get("/"), "/login/?next=/", fetch_redirect_response=False)


class PageAccessTests(CastTestCase):
    def assert_status(self, url: str, expected: dict[str, int]) -> None:
        for who, status in expected.items():
            with self.subTest(url=url, who=who):
                self.client.force_login(getattr(self, who))
                self.assertEqual(self.client.get(url).status_code, status)

    def assert_sends_anonymous_to_login(self, url: str) -> None:
        self.client.logout()
        self.assertRedirects(
            self.client.get(url), f"/login/?next={url}", fetch_redirect_response=False
        )

    def test_the_dashboard_opens_for_managers_admins_and_the_staff_who_load_data(self):
        self.assert_status(
            "/dashboard/",
            {
                "manager": 200,
                "admin": 200,
                "uploader": 200,
                "steward": 200,
                "auditor": 403,
                "outsider": 403,
            },
        )

    def test_uploaders_and_stewards_read_the_dashboards_but_cannot_export_them(self):
        for who in ("uploader", "steward"):
            with self.subTest(who=who):
                self.client.force_login(getattr(self, who))
                self.assertEqual(self.client.get("/dashboard/risk/").status_code, 200)
                exported = self.client.get("/dashboard/", {"format": "csv"})
                self.assertEqual(exported.status_code, 403)
                self.assertFalse(getattr(self, who).has_perm("kpis.export_data"))

    def test_the_dashboard_sends_anonymous_visitors_to_login(self):
        self.assert_sends_anonymous_to_login("/dashboard/")

    def test_the_dashboard_shows_the_portfolio_to_a_manager(self):
        self.client.force_login(self.manager)
        response = self.client.get("/dashboard/")
        self.assertContains(response, "<h1>Portfolio</h1>", html=True)
        self.assertContains(response, "No loans yet")

    def test_the_audit_history_opens_for_auditors_and_admins_only(self):
        self.assert_status(
            "/audit/",
            {
                "auditor": 200,
                "admin": 200,
                "manager": 403,
                "uploader": 403,
                "steward": 403,
                "outsider": 403,
            },
        )

    def test_the_audit_export_opens_for_auditors_and_admins_only(self):
        self.assert_status(
            "/audit/export.csv",
            {
                "auditor": 200,
                "admin": 200,
                "manager": 403,
                "uploader": 403,
                "steward": 403,
                "outsider": 403,
            },
        )

    def test_the_audit_pages_send_anonymous_visitors_to_login(self):
        self.assert_sends_anonymous_to_login("/audit/")
        self.assert_sends_anonymous_to_login("/audit/export.csv")

    def test_the_admin_opens_for_staff_roles(self):
        self.assert_status("/admin/", {"uploader": 200, "steward": 200, "admin": 200})

    def test_the_admin_sends_non_staff_users_to_its_login(self):
        for who in ("manager", "auditor", "outsider"):
            with self.subTest(who=who):
                self.client.force_login(getattr(self, who))
                self.assertRedirects(
                    self.client.get("/admin/"),
                    "/admin/login/?next=/admin/",
                    fetch_redirect_response=False,
                )


class LoginTests(CastTestCase):
    def test_the_login_page_renders_its_form(self):
        response = self.client.get("/login/")
        self.assertContains(response, "<h1>Sign in</h1>", html=True)
        self.assertContains(response, 'name="password"')

    def test_signing_in_with_the_right_password_starts_a_session_and_goes_home(self):
        response = self.client.post(
            "/login/", {"username": "mia.manager", "password": self.password}
        )
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertEqual(self.client.session[SESSION_KEY], str(self.manager.pk))

    def test_signing_in_with_a_wrong_password_shows_an_error_and_no_session(self):
        response = self.client.post(
            "/login/", {"username": "mia.manager", "password": "wrong-password-1"}
        )
        self.assertContains(response, "did not match")
        self.assertNotIn(SESSION_KEY, self.client.session)

    def test_signing_in_returns_to_the_page_asked_for(self):
        response = self.client.post(
            "/login/", {"username": "aldo.auditor", "password": self.password, "next": "/audit/"}
        )
        self.assertRedirects(response, "/audit/", fetch_redirect_response=False)

    def test_signing_out_by_post_ends_the_session(self):
        self.client.force_login(self.manager)
        response = self.client.post("/logout/")
        self.assertRedirects(response, "/login/", fetch_redirect_response=False)
        self.assertNotIn(SESSION_KEY, self.client.session)
        self.assertRedirects(
            self.client.get("/dashboard/"),
            "/login/?next=/dashboard/",
            fetch_redirect_response=False,
        )

    def test_signing_out_by_get_is_refused(self):
        self.client.force_login(self.manager)
        self.assertEqual(self.client.get("/logout/").status_code, 405)
        self.assertIn(SESSION_KEY, self.client.session)
