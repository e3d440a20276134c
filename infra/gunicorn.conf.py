"""gunicorn settings for App Service (Linux, Python). Values can be overridden from the environment."""

import os
import shutil
import tempfile

# /metrics sums every worker's request metrics (abaco/metrics.py): prometheus-client's
# multiprocess mode keeps them in files of this folder. It must be set before the app (and so
# prometheus_client) is loaded, and emptied at start so a restarted server counts afresh.
# Application Insights' exporter threads do not survive a fork: workers configure it (post_fork).
os.environ["ABACO_TELEMETRY_AFTER_FORK"] = "1"
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"abaco-metrics-{os.getpid()}")
)

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Two cores per instance: (2 x cores) + 1 sync workers serve server-rendered pages well.
workers = int(os.environ.get("WEB_CONCURRENCY", "5"))
worker_class = "sync"
# Load Django once in the master: workers fork ready (and recycled ones too), instead of each
# paying settings, URLconf and template loading on its first requests (20-50 ms of p95 at load).
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so a slow leak never takes an instance down.
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
# JSON access lines, matching the application's logs; never the query string (it may carry tokens).
# Every value escaped as JSON string contents (abaco.logs.JsonAccessLogger): a decoded %0A or %22
# in a path cannot split or break a line.
logger_class = "abaco.logs.JsonAccessLogger"
access_log_format = '{"time": "%(t)s", "level": "INFO", "logger": "gunicorn.access", "method": "%(m)s", "path": "%(U)s", "status": %(s)s, "bytes": "%(B)s", "duration_us": %(D)s, "request_id": "%({x-request-id}o)s"}'
# Forwarded headers (X-Forwarded-Proto) are believed only from the proxies in TRUSTED_PROXIES,
# the list the app reads for the client address (abaco.middleware.ClientAddressMiddleware).
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "127.0.0.1,::1")


def when_ready(server):
    """Compile the site's templates once in the master (preload_app): every worker, recycled ones
    included, forks with them compiled instead of compiling on its first requests."""
    from pathlib import Path

    from django.conf import settings
    from django.template import loader

    root = Path(settings.BASE_DIR) / "templates"
    for path in root.rglob("*.html"):
        loader.get_template(str(path.relative_to(root)))


def on_starting(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    """A recycled worker's live gauges leave the sums (its counters and histograms stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):
    from abaco.telemetry import telemetry_configure

    telemetry_configure(in_worker=True)
