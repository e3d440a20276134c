"""Serve the product on one machine for development: the web server and a task cluster together.

`make run` ends here. The cluster is a child process so Ctrl-C stops both, and the autoreloader's
restarts of the web server do not start a second cluster.
"""

import os
import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the development web server and the django-q2 task cluster until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--no-cluster", action="store_true", help="Serve web pages only.")

    def handle(self, *args, host, port, no_cluster, **options):
        cluster = None
        # RUN_MAIN is set in the autoreloader's child: the parent already started the cluster.
        if not no_cluster and os.environ.get("RUN_MAIN") != "true":
            cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"])
            self.stdout.write(self.style.SUCCESS(f"Task cluster started (pid {cluster.pid})."))
            # A TERM (from a supervisor, not a terminal) must stop the cluster too.
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            call_command("runserver", f"{host}:{port}")
        finally:
            if cluster is not None:
                cluster.terminate()
                cluster.wait(timeout=30)
