"""Issue 18, item 4: CSP, Permissions-Policy, no caching of book data, and the client address
taken from forwarded headers only when a trusted proxy sent them."""

from __future__ import annotations

import re
from pathlib import Path

from auditlog.models import LogEntry
from django.conf import settings
from django.test import override_settings

from abaco.middleware import client_address
from tests.base import CastTestCase

TEMPLATES = Path(settings.BASE_DIR) / "templates"


class HeaderTests(CastTestCase):
    def test_pages_and_exports_carry_the_csp_the_permissions_policy_and_no_store(self):
        self.client.force_login(self.manager)
        for url in ("/dashboard/", "/dashboard/loans/", "/dashboard/?export=csv"):
            response = self.client.get(url)
            with self.subTest(url=url):
                csp = response["Content-Security-Policy"]
                self.assertIn("script-src 'self'", csp)
                self.assertIn("style-src 'self'", csp)
                self.assertNotIn("unsafe-inline", csp)
                self.assertIn("camera=()", response["Permissions-Policy"])
                self.assertIn("no-store", response["Cache-Control"])
                self.assertIn("private", response["Cache-Control"])

    def test_no_template_has_an_inline_script_style_or_style_attribute(self):
        inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
        for path in TEMPLATES.rglob("*.html"):
            text = path.read_text()
            with self.subTest(template=str(path.relative_to(TEMPLATES))):
                self.assertNotRegex(text, r"<style[\s>]")
                self.assertNotRegex(text, r"\sstyle=")
                self.assertEqual(inline_script.findall(text), [])


@override_settings(TRUSTED_PROXIES=["10.0.0.5"])
class ClientAddressTests(CastTestCase):
    def setUp(self):
        from abaco.middleware import _trusted_networks

        _trusted_networks.cache_clear()
        self.addCleanup(_trusted_networks.cache_clear)

    def test_behind_the_trusted_proxy_the_client_is_the_address_it_saw(self):
        self.assertEqual(client_address("10.0.0.5", "203.0.113.9"), "203.0.113.9")
        # A client that sends its own X-Forwarded-For: the proxy appends the real address.
        self.assertEqual(client_address("10.0.0.5", "1.2.3.4, 203.0.113.9"), "203.0.113.9")

    def test_from_outside_the_forwarded_header_is_ignored(self):
        self.assertEqual(client_address("203.0.113.9", "1.2.3.4"), "203.0.113.9")

    def test_the_audit_log_records_the_unforgeable_address(self):
        self.client.force_login(self.steward)
        loan_customer = __import__("tests.factories", fromlist=["x"]).customer_create()
        for peer, forwarded, expected in (
            ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # forged from outside: ignored
            ("10.0.0.5", "1.2.3.4, 198.51.100.7", "198.51.100.7"),  # via the proxy
        ):
            self.client.post(
                f"/admin/loans/customer/{loan_customer.pk}/change/",
                {"customer_type": "SME", "currency": "USD", "geography_city": peer},
                REMOTE_ADDR=peer,
                HTTP_X_FORWARDED_FOR=forwarded,
            )
            entry = LogEntry.objects.get_for_object(loan_customer).latest("timestamp")
            self.assertEqual(entry.remote_addr, expected)
