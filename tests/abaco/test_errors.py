"""Issue 18, item 5: refusals in the site's layout, one log line each, nothing that splits a line."""

from __future__ import annotations

import io
import json
import logging

from django.conf import settings
from django.test import override_settings

from tests.base import CastTestCase


class ErrorPageTests(CastTestCase):
    def test_403_and_404_use_the_site_layout_with_a_way_back(self):
        self.client.force_login(self.manager)
        for url, status in (("/audit/", 403), ("/no-such-page/", 404)):
            response = self.client.get(url)
            with self.subTest(url=url):
                self.assertEqual(response.status_code, status)
                self.assertContains(response, 'class="topbar"', status_code=status)
                self.assertContains(response, "Back to your start page", status_code=status)

    @override_settings(DEBUG=False)
    def test_nul_bytes_answer_400_on_the_pages_of_the_issue(self):
        self.client.force_login(self.admin)
        for url in (
            "/audit/?object=%00",
            "/audit/export.csv?object=%00",
            "/admin/loans/customer/?name__startswith=%00",
            "/dashboard/loans/?member=%00",
        ):
            response = self.client.get(url)
            with self.subTest(url=url):
                self.assertContains(response, "control character", status_code=400)


class LogLineTests(CastTestCase):
    def capture(self):
        """The console handler's formatter and filters, writing to a buffer."""
        from logging.config import dictConfig

        stream = io.StringIO()
        config = {**settings.LOGGING, "disable_existing_loggers": False}
        config["handlers"] = {
            "console": {**settings.LOGGING["handlers"]["console"], "stream": stream}
        }
        dictConfig(config)
        self.addCleanup(dictConfig, settings.LOGGING)
        return stream

    def test_403_and_404_log_one_line_without_a_traceback(self):
        stream = self.capture()
        self.client.force_login(self.manager)
        self.client.get("/audit/")
        self.client.get("/nowhere/")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        refusals = [line for line in lines if line["logger"] == "django.request"]
        self.assertEqual(
            [r["message"] for r in refusals],
            ["Forbidden (Permission denied): /audit/", "Not Found: /nowhere/"],
        )
        self.assertFalse(any("exc_info" in r for r in refusals))

    def test_a_path_with_a_newline_stays_on_one_json_line(self):
        stream = self.capture()
        logging.getLogger("django.request").warning("Not Found: %s", "/a\nforged\x00line")
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertIn("/a\\\\x0aforged\\\\x00line", lines[0])


def test_gunicorns_access_line_stays_one_json_line_whatever_the_path():
    """The access log of infra/gunicorn.conf.py, with the atoms wrapper its logger uses: a path
    with a decoded %0A, a quote and a backslash is one line that parses back to that path."""
    import os
    import runpy
    from unittest import mock

    from abaco.logs import JsonAccessLogger

    # The config sets variables for its workers: kept out of this process's environment.
    with mock.patch.dict(os.environ):
        config = runpy.run_path(str(settings.BASE_DIR / "infra" / "gunicorn.conf.py"))
    assert config["logger_class"] == "abaco.logs.JsonAccessLogger"
    path = '/a"b\\c\nforged\x00line'
    atoms = {"t": "[07/Dec/2026:12:00:00 +0000]", "m": "GET", "U": path, "s": 404, "B": "0"}
    atoms |= {"D": 812, "{x-request-id}o": "r-1"}
    line = config["access_log_format"] % JsonAccessLogger.atoms_wrapper_class(atoms)
    assert len(line.splitlines()) == 1
    record = json.loads(line)
    assert (record["path"], record["status"], record["request_id"]) == (path, 404, "r-1")
