"""The dashboards in a real browser: the system Chromium (Debian package ``chromium``) driven by
Playwright against a live server on PostgreSQL with the fixture book (tests/kpis/books.py).

Each page must draw every chart canvas (Chart.js attached a chart to it and painted pixels), raise
no JavaScript error, and show other numbers when the entity filter changes. Screenshots at laptop
and phone widths go to tests/screenshots/ (git-ignored) for a person to look at.

Playwright never downloads a browser here (``playwright install`` is not part of the setup): the
module is skipped when no Chromium executable is on the machine, so a clean clone still passes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.urls import reverse

from abaco.roles import Role
from tests.base import PASSWORD, user_create
from tests.kpis.books import ABF, dashboard_book

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"]
    return next((found for c in candidates if c and (found := shutil.which(c))), None)


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium executable (apt-get install chromium, or set CHROMIUM_PATH)",
    ),
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
VIEWPORTS = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}

# Every canvas on the page, whether Chart.js drew on it and how many of its pixels are painted.
CANVASES_JS = """() => Array.from(document.querySelectorAll("canvas")).map((canvas) => {
  const chart = window.Chart && Chart.getChart(canvas);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
  return {id: canvas.id, chart: !!chart, points: chart ? chart.data.datasets.reduce((n, d) => n + d.data.length, 0) : 0, painted};
})"""


class DashboardBrowserTests(StaticLiveServerTestCase):
    # A free port of the OS's choice (Django's default, said here so nobody pins one again): two
    # suites at once, parallel workers or two checkouts, never meet on one port.
    port = 0

    @classmethod
    def setUpClass(cls) -> None:
        # Playwright's sync API runs an event loop in this thread; the ORM calls of the test's own
        # setUp and flush are synchronous and safe, but Django cannot tell them apart.
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
        self.book = dashboard_book()
        self.book.compute()
        self.manager = user_create(username="mia.manager", role=Role.MANAGER)
        self.errors: list[str] = []
        self.context = self.browser.new_context(viewport=VIEWPORTS["laptop"])
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        self.page.goto(self.live_server_url + reverse("login"))
        self.page.fill("#id_username", self.manager.username)
        self.page.fill("#id_password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.live_server_url}{reverse('kpis:overview')}")

    def tearDown(self) -> None:
        self.context.close()

    def open(self, name: str, url: str) -> None:
        """Open a page, screenshot it at both widths (phone last), back at laptop width."""
        response = self.page.goto(self.live_server_url + url)
        self.assertEqual(response.status, 200, url)
        self.page.wait_for_load_state("load")
        for width, viewport in VIEWPORTS.items():
            self.page.set_viewport_size(viewport)
            self.page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)
        self.page.set_viewport_size(VIEWPORTS["laptop"])
        self.assertEqual(self.errors, [], url)

    def assert_charts_drawn(self, *ids: str) -> None:
        canvases = {c["id"]: c for c in self.page.evaluate(CANVASES_JS)}
        self.assertEqual(sorted(canvases), sorted(ids))
        for canvas in canvases.values():
            self.assertTrue(canvas["chart"], canvas)
            self.assertGreater(canvas["points"], 0, canvas)
            self.assertGreater(canvas["painted"], 500, canvas)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def test_every_dashboard_draws_its_charts(self):
        self.open("overview", reverse("kpis:overview"))
        self.assert_charts_drawn(
            "chart-outstanding", "chart-disbursements", "chart-par", "chart-collection"
        )
        self.assertIn("12,500", self.text("#kpi-outstanding_principal .value"))

        self.open("risk", reverse("kpis:risk"))
        self.assert_charts_drawn(
            "chart-buckets", "chart-vintage-written-off", "chart-vintage-ever-30"
        )
        self.assertIn("4,000", self.text("#buckets"))

        self.open("concentration", reverse("kpis:concentration"))
        self.assert_charts_drawn()
        self.assertIn("48.00%", self.text("#top-borrowers"))

        self.open("collections", reverse("kpis:collections"))
        self.assert_charts_drawn(
            "chart-scheduled-collected", "chart-collection-rate", "chart-collection-split"
        )
        self.assertIn("83.33%", self.text("#collection-months"))

        self.open("loans", reverse("kpis:loans") + "?min_dpd=1")
        self.assertEqual(self.page.locator("#loans tbody tr").count(), 3)
        self.page.click("#loans tbody tr:first-child a")
        self.page.wait_for_url("**/dashboard/loans/*/")
        self.open("loan", self.page.url.removeprefix(self.live_server_url))
        self.assertIn("Loan L2", self.text("h1"))

    def test_choosing_an_entity_changes_the_numbers(self):
        self.open("overview", reverse("kpis:overview"))
        self.page.click(f'.slices a:text-is("{ABF}")')
        self.page.wait_for_url("**member=ABF*")
        self.assertIn("4,500", self.text("#kpi-outstanding_principal .value"))
        self.assert_charts_drawn(
            "chart-outstanding", "chart-disbursements", "chart-par", "chart-collection"
        )

        self.open("collections", reverse("kpis:collections"))
        self.assertIn("2,500", self.text("#falling-due tbody tr:first-child"))
        self.page.click(f'.slices a:text-is("{ABF}")')
        self.page.wait_for_url("**member=ABF*")
        # Only =L5's 500 of ABF falls due; L3's 2,000 is ABT's.
        self.assertNotIn("2,500", self.text("#falling-due tbody tr:first-child"))
        self.assertIn("500", self.text("#falling-due tbody tr:first-child"))
        self.open("collections-abf", self.page.url.removeprefix(self.live_server_url))
        self.assert_charts_drawn(
            "chart-scheduled-collected", "chart-collection-rate", "chart-collection-split"
        )
