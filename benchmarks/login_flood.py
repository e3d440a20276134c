"""Dashboard latency during a login flood (issue 18): the page benchmark's gunicorn and its
manager session load the overview with 20 clients, first alone, then while 12 threads post wrong
passwords to /login/ as fast as they can (the issue's flood: p95 went from 95 ms to 1.6 s before
the lockout existed). django-axes locks the flooding address after AXES_FAILURE_LIMIT failures,
so the rest of the flood is refused before any password is hashed. Prints both p95s and their
ratio, beside the framework's floor (/healthz) under the same load, and how the flood was
answered. Its lockout records are removed at the end.

Run on any book with snapshots: ``python benchmarks/login_flood.py`` with ``DATABASE_URL`` (the
demo book is enough; say so beside the figures).
"""

from __future__ import annotations

import collections
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx

FLOODERS = 12


def _flood(base: str, stop: threading.Event, answers: collections.Counter) -> None:
    with httpx.Client(timeout=10) as http:
        page = http.get(base + "/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        # Production settings mark the CSRF cookie Secure: over loopback HTTP it is sent by hand.
        cookie = f"csrftoken={page.cookies['csrftoken']}"
        n = 0
        while not stop.is_set():
            n += 1
            response = http.post(
                base + "/login/",
                data={
                    "username": f"flood{n % 50}",
                    "password": "wrong-password-1",
                    "csrfmiddlewaretoken": token,
                },
                headers={"Referer": base + "/login/", "Cookie": cookie},
            )
            answers[response.status_code] += 1


def _control(base: str, stop: threading.Event, answers: collections.Counter) -> None:
    """The same number of clients asking for the cheapest page: what any 12 more clients cost
    in the queue of a few sync workers, password or not."""
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            answers[http.get(base + "/healthz").status_code] += 1


def _under(
    load, base: str, target
) -> tuple[tuple[float, float, float, int, int], collections.Counter]:
    stop, answers = threading.Event(), collections.Counter()
    threads = [threading.Thread(target=target, args=(base, stop, answers)) for _ in range(FLOODERS)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    figures = load("/dashboard/")
    stop.set()
    for thread in threads:
        thread.join()
    return figures, answers


def run() -> None:
    from axes.models import AccessAttempt, AccessFailureLog

    from benchmarks import pages

    cookie = pages._session_cookie()
    seconds = pages.SECONDS
    with pages._gunicorn() as base, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "report.lua"
        script.write_text(pages.WRK_SCRIPT)
        measure = pages._wrk if shutil.which("wrk") else pages._threads

        def load(path: str) -> tuple[float, float, float, int, int]:
            measure(base + path, cookie, script, seconds=pages.WARM_UP_SECONDS)
            return measure(base + path, cookie, script, seconds=seconds)

        floor = load(pages.FLOOR)
        quiet = load("/dashboard/")
        control, _ = _under(load, base, _control)
        flooded, answers = _under(load, base, _flood)
    print(
        f"login flood: {FLOODERS} threads posting wrong passwords; overview, 20 clients, {seconds:g} s"
    )
    pages._line("floor: /healthz", floor, seconds)
    pages._line("overview, quiet", quiet, seconds)
    pages._line(
        f"overview, {FLOODERS} clients on /healthz",
        control,
        seconds,
        f"  ratio to quiet {control[1] / quiet[1]:.2f}",
    )
    pages._line(
        "overview, during the flood",
        flooded,
        seconds,
        f"  ratio to quiet {flooded[1] / quiet[1]:.2f}, to the /healthz control "
        f"{flooded[1] / control[1]:.2f}",
    )
    print(
        f"  flood answered: {sum(answers.values()):,} posts, "
        + ", ".join(f"{n:,} x {status}" for status, n in sorted(answers.items()))
    )
    AccessAttempt.objects.all().delete()
    AccessFailureLog.objects.all().delete()


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
    import django

    django.setup()
    run()
