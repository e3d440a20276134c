"""Tokens: created by the command and the admin, stored hashed, sent as Bearer, expiring,
revoked and rotated; browser sessions work too, with CSRF on writes."""

from __future__ import annotations

import io
from datetime import timedelta

import time_machine
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from api.models import ApiToken
from api.tokens import api_token_rotate, token_digest
from tests.api.base import ApiTestCase

BATCHES = "/api/v1/batches/"


class CommandTests(ApiTestCase):
    def test_create_prints_the_token_alone_on_its_last_line_and_stores_only_its_hash(self):
        out = io.StringIO()
        call_command(
            "api_token",
            "create",
            "cleo.client",
            "--scopes",
            "read:book,read:kpis",
            "--expires-days",
            "30",
            stdout=out,
        )
        token = out.getvalue().rstrip("\n").splitlines()[-1]
        self.assertRegex(token, r"^abaco_[A-Za-z0-9_-]{43}$")
        row = ApiToken.objects.get()
        self.assertEqual(row.digest, token_digest(token))
        self.assertNotIn(token, str(ApiToken.objects.values().get()))
        self.assertEqual(row.scopes, ["read:book", "read:kpis"])
        self.assertAlmostEqual(
            row.expires_at, timezone.now() + timedelta(days=30), delta=timedelta(minutes=1)
        )
        response = self.client.get(BATCHES, headers=self.bearer(token))
        self.assertEqual(response.status_code, 200)

    def test_create_refuses_an_unknown_scope_or_user(self):
        with self.assertRaisesMessage(CommandError, "unknown scope(s): write:loans"):
            call_command("api_token", "create", "cleo.client", "--scopes", "write:loans")
        with self.assertRaisesMessage(CommandError, "no user 'nobody'"):
            call_command("api_token", "create", "nobody", "--scopes", "read:book")
        self.assertFalse(ApiToken.objects.exists())

    def test_revoke_by_prefix_stops_the_token(self):
        token = self.token(self.client_user)
        call_command("api_token", "revoke", token[:10], stdout=io.StringIO())
        self.assertEqual(self.client.get(BATCHES, headers=self.bearer(token)).status_code, 401)


class BearerTests(ApiTestCase):
    def test_no_credentials_answer_401_with_a_bearer_challenge_as_problem_json(self):
        response = Client().get(BATCHES)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="api"')
        self.assertIn("credentials", self.problem(response)["detail"])

    def test_an_unknown_token_answers_401(self):
        response = self.client.get(BATCHES, headers=self.bearer("abaco_" + "x" * 43))
        self.assertEqual(response.status_code, 401)
        self.assertEqual(self.problem(response)["detail"], "Unknown, expired or revoked token.")

    def test_a_token_stops_working_when_it_expires(self):
        token = self.token(self.client_user, expires_days=1)
        self.assertEqual(self.client.get(BATCHES, headers=self.bearer(token)).status_code, 200)
        with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
            self.assertEqual(self.client.get(BATCHES, headers=self.bearer(token)).status_code, 401)

    def test_rotating_revokes_the_old_token_and_keeps_scopes_and_user(self):
        old = self.token(self.client_user, ["read:book"])
        new_row, new = api_token_rotate(token=ApiToken.objects.get())
        self.assertEqual((new_row.user, new_row.scopes), (self.client_user, ["read:book"]))
        self.assertEqual(self.client.get(BATCHES, headers=self.bearer(old)).status_code, 401)
        self.assertEqual(self.client.get(BATCHES, headers=self.bearer(new)).status_code, 200)

    def test_a_scope_never_grants_what_the_role_lacks(self):
        # The outsider has no role: every scope still gets 403.
        response = self.api_get(BATCHES, user=self.outsider)
        self.assertEqual(response.status_code, 403)
        self.problem(response)

    def test_a_role_never_works_without_the_scope(self):
        response = self.api_get(BATCHES, scopes=["read:kpis"])
        self.assertEqual(response.status_code, 403)


class SessionTests(ApiTestCase):
    def test_a_signed_in_browser_reads_with_its_roles_reach(self):
        browser = Client()
        browser.force_login(self.manager)
        self.assertEqual(browser.get(BATCHES).status_code, 200)

    def test_a_browser_write_without_the_csrf_token_is_refused(self):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(self.steward)
        response = browser.post("/api/v1/uploads/", {})
        self.assertEqual(response.status_code, 403)
        self.assertIn("CSRF", self.problem(response)["detail"])


class AdminTests(ApiTestCase):
    def test_an_admin_creates_a_token_and_sees_it_once(self):
        self.client.force_login(self.admin)
        response = self.client.post(
            "/admin/api/apitoken/add/",
            {
                "user": self.client_user.pk,
                "name": "bi tool",
                "scopes": ["read:kpis"],
                "expires_days": 7,
            },
            follow=True,
        )
        row = ApiToken.objects.get()
        shown = [str(m) for m in response.context["messages"]]
        token = next(m.rsplit(" ", 1)[1] for m in shown if "shown this once" in m)
        self.assertEqual(row.digest, token_digest(token))
        self.assertEqual(
            (row.name, row.scopes, row.created_by), ("bi tool", ["read:kpis"], self.admin)
        )
        listing = self.client.get("/admin/api/apitoken/")
        self.assertContains(listing, row.prefix)
        self.assertNotContains(listing, token)

    def test_an_admin_revokes_tokens_from_the_list(self):
        token = self.token(self.client_user)
        self.client.force_login(self.admin)
        self.client.post(
            "/admin/api/apitoken/",
            {"action": "revoke", "_selected_action": [ApiToken.objects.get().pk]},
        )
        self.assertIsNotNone(ApiToken.objects.get().revoked_at)
        self.assertEqual(Client().get(BATCHES, headers=self.bearer(token)).status_code, 401)
