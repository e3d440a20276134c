"""Issue 18, item 3: lockout after repeated failures, the staff second factor (enrolment,
recovery codes, the admin's login through it), password rules, idle timeout."""

from __future__ import annotations

import time

import time_machine
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from abaco.roles import Role
from tests.base import PASSWORD, CastTestCase, user_create


def totp_now(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return f"{totp.token():0{device.digits}d}"


class SignInTests(CastTestCase):
    def sign_in(self, client: Client, user, password: str = PASSWORD, next_url: str = ""):
        data = {"username": user.username, "password": password}
        if next_url:
            data["next"] = next_url
        return client.post("/login/", data, REMOTE_ADDR="203.0.113.7")

    def test_a_manager_signs_in_with_a_password_alone(self):
        client = Client()
        response = self.sign_in(client, self.manager)
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertEqual(client.get("/dashboard/").status_code, 200)

    def test_an_api_client_account_uses_its_token_and_never_signs_in_to_the_pages(self):
        client_account = user_create(username="ana.api", role=Role.API_CLIENT)
        client = Client()
        response = self.sign_in(client, client_account)
        self.assertEqual(response.status_code, 200)  # the form again, with why
        self.assertContains(response, "This is an API client account")
        self.assertNotIn("_auth_user_id", client.session)
        self.assertEqual(client.get("/dashboard/").status_code, 302)  # to the sign-in page
        # Not the lockout's business: the password was right, and nothing counts as a failure.
        self.assertFalse(AccessFailureLog.objects.filter(username="ana.api").exists())
        # Another role beside it makes the account a person's: it signs in as before.
        client_account.groups.add(Group.objects.get(name=Role.MANAGER.value))
        self.assertRedirects(
            self.sign_in(Client(), client_account), "/", fetch_redirect_response=False
        )

    def test_staff_without_the_second_factor_reach_nothing_but_its_pages(self):
        client = Client()
        response = self.sign_in(client, self.steward, next_url="/admin/")
        self.assertRedirects(
            response, "/login/verify/?next=%2Fadmin%2F", fetch_redirect_response=False
        )
        for url in ("/admin/", "/admin/loans/customer/", "/dashboard/", "/pipelines/"):
            response = client.get(url)
            self.assertEqual(response.status_code, 302, url)
            self.assertTrue(response["Location"].startswith("/login/verify/"), url)

    def test_first_sign_in_enrols_the_app_and_hands_out_recovery_codes_once(self):
        client = Client()
        self.sign_in(client, self.steward, next_url="/admin/")
        response = client.get("/login/verify/?next=/admin/")
        self.assertRedirects(
            response, "/login/enrol/?next=%2Fadmin%2F", fetch_redirect_response=False
        )
        page = client.get("/login/enrol/?next=/admin/")
        self.assertContains(page, "otpauth://totp/")
        device = TOTPDevice.objects.get(user=self.steward, confirmed=False)
        wrong = client.post("/login/enrol/", {"token": "000000", "next": "/admin/"})
        self.assertContains(wrong, "does not match")
        # A wrong code pauses the device a moment (django-otp's throttling): a later right one.
        with time_machine.travel(time.time() + 5):
            done = client.post("/login/enrol/", {"token": totp_now(device), "next": "/admin/"})
        codes = list(
            StaticToken.objects.filter(device__user=self.steward).values_list("token", flat=True)
        )
        self.assertEqual(len(codes), 10)
        for code in codes:
            self.assertContains(done, code)
        self.assertEqual(client.get("/admin/").status_code, 200)

        # The next sign-in: a recovery code works once, then no more.
        for attempt in range(2):
            client = Client()
            self.sign_in(client, self.steward)
            response = client.post("/login/verify/", {"token": codes[0]})
            if attempt == 0:
                self.assertEqual(response.status_code, 302)
                self.assertEqual(client.get("/admin/").status_code, 200)
            else:
                self.assertContains(response, "not valid")
                self.assertEqual(client.get("/admin/").status_code, 302)

    def test_the_admin_login_page_is_the_sites_sign_in_with_its_second_factor(self):
        client = Client()
        response = client.get("/admin/")
        self.assertEqual(response.status_code, 302)
        login = client.get(response["Location"])
        self.assertRedirects(login, "/login/?next=/admin/", fetch_redirect_response=False)
        TOTPDevice.objects.create(user=self.admin, name="phone", confirmed=True)
        response = self.sign_in(client, self.admin, next_url="/admin/")
        self.assertTrue(response["Location"].startswith("/login/verify/"))
        device = TOTPDevice.objects.get(user=self.admin)
        response = client.post("/login/verify/", {"token": totp_now(device), "next": "/admin/"})
        self.assertRedirects(response, "/admin/", fetch_redirect_response=False)
        self.assertEqual(client.get("/admin/").status_code, 200)

    def test_a_role_without_the_admin_is_refused_there_not_sent_round_in_circles(self):
        for user in (self.manager, self.auditor):
            client = Client()
            client.force_login(user)
            response = client.get("/admin/", follow=True)
            self.assertEqual(response.status_code, 403)
            self.assertLess(len(response.redirect_chain), 3, response.redirect_chain)
            self.assertContains(response, "Your role does not use the admin.", status_code=403)

    def test_wrong_passwords_lock_the_user_then_the_right_one_does_not_get_in(self):
        client = Client()
        for _ in range(4):
            self.assertEqual(
                self.sign_in(client, self.manager, "wrong-password-1").status_code, 200
            )
        # The fifth failure locks the name: from then on even the right password is refused.
        self.assertEqual(self.sign_in(client, self.manager, "wrong-password-1").status_code, 429)
        response = self.sign_in(client, self.manager)
        self.assertEqual(response.status_code, 429)
        self.assertContains(response, "Signing in is paused", status_code=429)
        self.assertEqual(client.get("/dashboard/").status_code, 302)
        # Recorded for auditors: the attempts and each failure, with the address.
        attempt = AccessAttempt.objects.get(username=self.manager.username)
        self.assertEqual(attempt.ip_address, "203.0.113.7")
        self.assertGreaterEqual(AccessFailureLog.objects.filter(username="mia.manager").count(), 5)

    def test_one_address_trying_many_users_is_locked_too(self):
        client = Client()
        for name in ("a1", "a2", "a3", "a4", "a5"):
            client.post("/login/", {"username": name, "password": "x"}, REMOTE_ADDR="198.51.100.9")
        response = client.post(
            "/login/",
            {"username": self.manager.username, "password": PASSWORD},
            REMOTE_ADDR="198.51.100.9",
        )
        self.assertEqual(response.status_code, 429)
        # Another address still signs the manager in.
        self.assertEqual(self.sign_in(Client(), self.manager).status_code, 302)

    @override_settings(AXES_COOLOFF_TIME=__import__("datetime").timedelta(minutes=15))
    def test_the_lockout_cools_off(self):
        client = Client()
        for _ in range(5):
            self.sign_in(client, self.manager, "wrong-password-1")
        with time_machine.travel(time.time() + 16 * 60):
            self.assertEqual(self.sign_in(Client(), self.manager).status_code, 302)

    def test_passwords_of_repeated_characters_or_under_twelve_are_refused(self):
        for weak in ("aaaaaaaaaaaa", "abababababab", "Sh0rt-pass!", "xyzw1111abcd"):
            with self.subTest(password=weak), self.assertRaises(ValidationError):
                validate_password(weak)
        validate_password("correct-horse-battery-staple")

    @override_settings(SESSION_IDLE_TIMEOUT=600)
    def test_an_idle_session_is_signed_out_before_its_absolute_lifetime(self):
        client = Client()
        self.sign_in(client, self.manager)
        self.assertEqual(client.get("/dashboard/").status_code, 200)
        with time_machine.travel(time.time() + 5 * 60):
            self.assertEqual(client.get("/dashboard/").status_code, 200)
        with time_machine.travel(time.time() + 16 * 60):
            response = client.get("/dashboard/")
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/login/"))
