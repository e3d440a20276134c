"""Health probes: /healthz says the process is up; /readyz says it can do its work."""

from __future__ import annotations

import multiprocessing
import signal
import socket

from django.db import connections
from django.test import SimpleTestCase, TestCase
from django_q.brokers import get_broker
from django_q.cluster import Sentinel
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat


class LivenessTests(TestCase):
    def test_healthz_answers_ok_without_touching_the_database(self):
        with self.assertNumQueries(0):
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_the_app_service_health_path_answers_ok_without_touching_the_database(self):
        with self.assertNumQueries(0):
            response = self.client.get("/?page=health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_health_answers_are_never_cached(self):
        response = self.client.get("/healthz")
        self.assertIn("no-cache", response["Cache-Control"])


def cluster_heartbeat(*, status: str | None = None) -> None:
    """Publish a cluster's stat exactly as a running django-q2 Sentinel does on each beat.

    The Sentinel is built without starting (no worker processes); it would reset the process's
    SIGINT and SIGTERM handlers, so they are put back.
    """
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop, start = multiprocessing.Event(), multiprocessing.Event()
        start.set()  # the cluster finished starting and has not been asked to stop: Idle
        sentinel = Sentinel(
            stop, start, cluster_id="test-cluster", broker=get_broker(), start=False
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    try:
        stat = Stat(sentinel)
    finally:
        sentinel.task_queue.close()
        sentinel.result_queue.close()
    if status is not None:
        stat.status = status
    # Stat.save() with a longer expiry than its 3-second beat, so a slow test run cannot race it.
    stat.broker.set_stat(stat.key, SignedPackage.dumps(stat, True), 60)


class ReadinessTests(TestCase):
    def test_readyz_is_unavailable_and_names_the_task_cluster_when_none_runs(self):
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(
            response.json(),
            {
                "status": "unavailable",
                "reasons": {"task_cluster": "no task cluster is running"},
                "data_through": None,
                "data_age_days": None,
                "data_stale": False,
            },
        )

    def test_readyz_is_ok_while_a_task_cluster_reports_in(self):
        cluster_heartbeat()
        self.assertEqual([s.status for s in Stat.get_all()], [Conf.IDLE])
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {"status": "ok", "data_through": None, "data_age_days": None, "data_stale": False},
        )

    def test_readyz_does_not_count_a_cluster_that_reported_stopping(self):
        cluster_heartbeat(status=Conf.STOPPING)
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["reasons"], {"task_cluster": "no task cluster is running"})


class DatabaseDownTests(SimpleTestCase):
    """Outside a test transaction, so the connection can really be closed and pointed elsewhere."""

    databases = {"default"}

    def test_readyz_is_unavailable_with_a_database_reason_when_the_database_is_unreachable(self):
        db = connections["default"]
        port = db.settings_dict["PORT"]
        # A bound port that does not listen: connecting to it is refused at once.
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            db.close()
            db.settings_dict["PORT"] = str(unused.getsockname()[1])
            try:
                response = self.client.get("/readyz")
            finally:
                db.close()
                db.settings_dict["PORT"] = port
        self.assertEqual(response.status_code, 503)
        self.assertEqual(
            response.json(),
            {
                "status": "unavailable",
                "reasons": {
                    "database": "database unreachable: OperationalError",
                    "task_cluster": "skipped: database down",
                },
            },
        )
        # The real database is back for whatever runs next.
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
            self.assertEqual(cursor.fetchone(), (1,))


class FaviconTests(TestCase):
    def test_favicon_ico_leads_to_the_site_icon_without_a_login(self):
        # The admin's pages name no icon, so browsers ask for /favicon.ico (a 404 in every log).
        with self.assertNumQueries(0):
            response = self.client.get("/favicon.ico")
        self.assertEqual(response.status_code, 301)
        self.assertTrue(response["Location"].endswith("favicon.svg"), response["Location"])
