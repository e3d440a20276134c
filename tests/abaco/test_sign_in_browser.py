"""Issue 18: the staff second factor and the lockout, in the system Chromium, under the CSP (a
violation is a console error here and fails the test). Screenshots in tests/screenshots/."""

from __future__ import annotations

import base64
import os
import time

import pytest
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django_otp.oath import TOTP

from abaco.roles import Role
from tests.base import PASSWORD, user_create
from tests.kpis.test_browser import CHROMIUM, SCREENSHOTS, VIEWPORTS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium executable"),
]


def totp(secret: str, at: float | None = None) -> str:
    token = TOTP(base64.b32decode(secret), step=30, t0=0, digits=6, drift=0)
    token.time = at or time.time()
    return f"{token.token():06d}"


class SignInBrowserTests(StaticLiveServerTestCase):
    port = 0

    @classmethod
    def setUpClass(cls) -> None:
        cls._async_unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        super().setUpClass()
        cls.playwright = sync_api.sync_playwright().start()
        cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        SCREENSHOTS.mkdir(exist_ok=True)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.browser.close()
        cls.playwright.stop()
        super().tearDownClass()
        if cls._async_unsafe is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = cls._async_unsafe

    def setUp(self) -> None:
        self.errors: list[str] = []
        self.context = self.browser.new_context(viewport=VIEWPORTS["laptop"])
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def tearDown(self) -> None:
        self.context.close()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"sign-in-{name}.png"), full_page=True)

    def sign_in(self, username: str, password: str, start: str = "/admin/") -> None:
        self.page.goto(self.live_server_url + start)
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.click("main button[type=submit]")
        self.page.wait_for_load_state("load")

    def test_a_steward_enrols_gets_recovery_codes_and_reaches_the_admin(self):
        steward = user_create(username="sam.steward", role=Role.STEWARD)
        self.sign_in(steward.username, PASSWORD)
        self.assertIn("/login/enrol/", self.page.url)
        self.shot("enrol")
        # Until the second factor is proved, the admin is out of reach.
        self.page.goto(self.live_server_url + "/admin/loans/customer/")
        self.assertIn("/login/", self.page.url)
        self.page.goto(self.live_server_url + "/login/enrol/?next=/admin/loans/customer/")
        secret = self.page.inner_text("#totp-secret")
        self.assertIn("otpauth://totp/", self.page.get_attribute("#totp-uri", "href"))
        self.page.fill("#id_token", totp(secret))
        self.page.click("main button[type=submit]")
        self.page.wait_for_load_state("load")
        self.shot("enrol-submitted")
        self.page.wait_for_selector(".recovery-codes", timeout=5000)
        codes = self.page.locator(".recovery-codes code").all_inner_texts()
        self.assertEqual(len(codes), 10)
        self.shot("recovery-codes")
        self.page.click("text=Continue")
        self.page.wait_for_url("**/admin/loans/customer/")
        self.shot("admin-after-second-factor")

        # Next time: password, then a recovery code, through the admin's own login link.
        self.context.clear_cookies()
        self.sign_in(steward.username, PASSWORD)
        self.assertIn("/login/verify/", self.page.url)
        self.shot("verify")
        self.page.fill("#id_token", "000000")
        self.page.click("main button[type=submit]")
        self.assertIn("not valid", self.page.inner_text(".error"))
        self.page.wait_for_timeout(2500)  # a wrong code pauses the devices a moment (throttling)
        self.page.fill("#id_token", codes[0])
        self.page.click("main button[type=submit]")
        self.page.wait_for_url("**/admin/")
        self.assertEqual(self.errors, [])  # no CSP violation, no script error on the way

    def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(self):
        manager = user_create(username="mia.manager", role=Role.MANAGER)
        for _ in range(4):
            self.sign_in(manager.username, "wrong-password-1", start="/login/")
            self.assertIn("did not match", self.page.inner_text(".error"))
        self.sign_in(manager.username, "wrong-password-1", start="/login/")
        self.assertIn("Signing in is paused", self.page.inner_text("h1"))
        self.sign_in(manager.username, PASSWORD, start="/login/")
        self.assertIn("Signing in is paused", self.page.inner_text("h1"))
        self.shot("locked-out")
        # The lockout page's 429 is the one console error; nothing else (no CSP violation).
        self.assertEqual([e for e in self.errors if "429" not in e], [])
