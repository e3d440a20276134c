"""OpenTelemetry traces and logs to Application Insights, only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

azure-monitor-opentelemetry (the optional ``azure`` extra: about 45 packages, 68 MB) is imported
here and only here, when the setting is present: without it the product pays nothing. Under
gunicorn it is configured in each worker after the fork (infra/gunicorn.conf.py), since the
exporter's background threads do not survive a fork; every other process (the task cluster,
commands) configures it when Django starts (abaco.apps).
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

AFTER_FORK = "ABACO_TELEMETRY_AFTER_FORK"  # set by gunicorn.conf.py: configure in workers only

_configured = False


def telemetry_configure(*, in_worker: bool = False) -> bool:
    """Send traces and logs to Application Insights; returns whether it is on."""
    global _configured
    connection_string = settings.APPLICATIONINSIGHTS_CONNECTION_STRING
    if not connection_string or _configured:
        return _configured
    if os.environ.get(AFTER_FORK) and not in_worker:
        return False  # the gunicorn master: its workers configure themselves
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError as exc:
        raise ImproperlyConfigured(
            "APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is not "
            "installed: pip install -e '.[azure]'"
        ) from exc
    configure_azure_monitor(
        connection_string=connection_string,
        # The root logger: our JSON log lines go to Application Insights as traces too (the
        # alerts in infra/azure/modules/alerts.bicep query them).
        logger_name="",
    )
    logging.getLogger(__name__).info("telemetry to Application Insights configured")
    _configured = True
    return True
