"""/metrics: Prometheus text for a token or listed addresses only; request figures by view,
summed across gunicorn workers; pipeline, load and snapshot figures read from the database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from compliance.backups import database_params
from compliance.backups import database_url as backup_database_url
from integrations.models import PipelineRun
from integrations.pipelines import pipeline_run
from kpis.engine import snapshot_compute
from loans.selectors import book_data_through
from tests.factories import batch_create
from tests.kpis import books as p

TOKEN = "metrics-token-for-tests"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []


@pytest.mark.django_db
def test_metrics_are_refused_without_the_token_or_a_listed_address(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []
    assert client.get("/metrics").status_code == 403
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics").status_code == 403
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client comes from 127.0.0.1
    settings.METRICS_ALLOWED_IPS = ["127.0.0.0/8"]
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_requests_are_counted_by_view_and_status(client, token):
    def count(view: str, status: str) -> float:
        text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
        key = (
            "abaco_http_responses_total",
            frozenset({"view": view, "method": "GET", "status": status}.items()),
        )
        return samples(text).get(key, 0.0)

    before_ok, before_missing = count("healthz", "200"), count("<unresolved>", "404")
    client.get("/healthz")
    client.get("/healthz")
    client.get("/no/such/page/12345")
    assert count("healthz", "200") == before_ok + 2
    assert count("<unresolved>", "404") == before_missing + 1
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert (
        'abaco_http_request_duration_seconds_bucket{le="5.0",method="GET",view="healthz"}' in text
    )
    assert 'view="metrics"' not in text  # the scraper's own requests are not counted


@pytest.mark.django_db
def test_pipeline_runs_rows_loaded_data_age_and_snapshot_time_come_from_the_database(client, token):
    p.golden_book()
    snapshot_compute(as_of=p.GOLDEN_AS_OF, job="compute_kpis")
    pipeline_run(name="kpi_daily", trigger=PipelineRun.Trigger.COMMAND)
    PipelineRun.objects.create(
        job="cascade_ingest",
        for_date=p.GOLDEN_AS_OF,
        trigger="schedule",
        status="failed",
        duration_ms=4200,
    )

    batch_create(source="lender-a", rows_inserted=120, rows_updated=30, finished_at=timezone.now())
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    got = samples(text)
    assert (
        got[
            (
                "abaco_pipeline_runs_total",
                frozenset({"job": "kpi_daily", "status": "succeeded"}.items()),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "abaco_pipeline_runs_total",
                frozenset({"job": "cascade_ingest", "status": "failed"}.items()),
            )
        ]
        == 1
    )
    assert (
        got[("abaco_pipeline_last_run_failed", frozenset({"job": "cascade_ingest"}.items()))] == 1
    )
    assert got[("abaco_pipeline_last_run_failed", frozenset({"job": "kpi_daily"}.items()))] == 0
    assert (
        got[("abaco_pipeline_duration_seconds_total", frozenset({"job": "cascade_ingest"}.items()))]
        == 4.2
    )
    assert (
        got[("abaco_rows_loaded_total", frozenset({"source": "lender-a", "kind": "tape"}.items()))]
        == 150
    )
    # The age of the book's data-through date (the end of that day, operators' zone).
    through = book_data_through()
    end = datetime.combine(
        through + timedelta(days=1), datetime.min.time(), tzinfo=timezone.get_current_timezone()
    )
    expected = (timezone.now() - end).total_seconds()
    assert abs(got[("abaco_data_through_age_seconds", frozenset())] - expected) < 60
    assert got[("abaco_snapshot_compute_seconds", frozenset())] >= 0
    assert got[("abaco_snapshot_loans", frozenset())] > 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database as a DATABASE_URL for the processes a test starts."""
    params = database_params()
    return backup_database_url(params, dbname=params["PGDATABASE"])


@pytest.mark.django_db(transaction=True)  # gunicorn's workers read committed rows
def test_metrics_add_up_every_gunicorn_workers_requests(tmp_path):
    port = free_port()
    folder = tmp_path / "prometheus"
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "DATABASE_URL": database_url(),
        "DEBUG": "false",
        "SECRET_KEY": "metrics-test-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "METRICS_TOKEN": TOKEN,
    }
    root = Path(django_settings.BASE_DIR)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "abaco.wsgi",
            "--config",
            "infra/gunicorn.conf.py",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                # A long timeout: a probe given up on would still be counted, later.
                httpx.get(f"{base}/healthz", timeout=60)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(server.stderr.read().decode()[-2000:]) from None
                time.sleep(0.3)
        key = (
            "abaco_http_responses_total",
            frozenset({"view": "healthz", "method": "GET", "status": "200"}.items()),
        )

        def scrape() -> float:
            answer = httpx.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            )
            assert answer.status_code == 200
            return samples(answer.text)[key]

        before = scrape()  # the start-up probes that were answered
        # Forty requests at once, each on a connection of its own: both workers serve some.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda _: httpx.get(f"{base}/healthz", timeout=60).status_code, range(40))
            )
        assert statuses == [200] * 40
        workers = {f.stem.rsplit("_", 1)[-1] for f in folder.glob("counter_*.db")}
        assert len(workers) == 2, f"requests reached workers {workers}"
        # Whichever worker answers the scrape, it reports every worker's requests.
        assert [scrape() for _ in range(4)] == [before + 40] * 4
    finally:
        server.terminate()
        server.wait(timeout=30)
