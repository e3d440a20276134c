"""OpenTelemetry to Application Insights: off, and not even imported, without its setting."""

from __future__ import annotations

import importlib.util

from tests.abaco.test_settings import settings_import


def run(code: str, **env: str):
    import os
    import subprocess
    import sys

    from tests.abaco.test_settings import ROOT

    environment = {
        **os.environ,
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "abaco.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )


def test_without_a_connection_string_the_exporter_is_never_imported():
    result = run(
        "import django, sys; django.setup(); "
        "print(any(name.startswith(('azure.monitor', 'opentelemetry')) for name in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_connection_string_without_the_package_stops_start_up_with_the_fix():
    # The dev environment leaves the optional extra out (the production image has it).
    assert importlib.util.find_spec("azure.monitor") is None
    result = run(
        "import django; django.setup()",
        APPLICATIONINSIGHTS_CONNECTION_STRING="InstrumentationKey=00000000-0000-0000-0000-000000000000",
    )
    assert result.returncode != 0
    assert (
        "azure-monitor-opentelemetry is not installed: pip install -e '.[azure]'" in result.stderr
    )
    assert settings_import().returncode == 0  # settings alone do not need it
