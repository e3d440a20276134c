"""Alerts for people on call: e-mail to ``ALERT_EMAILS`` and, when set, a Slack incoming webhook.

Subjects go out as written; e-mail adds ``EMAIL_SUBJECT_PREFIX`` ("[abaco] ").

Sending an alert never raises: a broken mail server must not hide the failure being reported.
"""

from __future__ import annotations

import logging

import httpx
from django.conf import settings
from django.core.mail import mail_admins

from integrations.http import ApiSession, ProviderError

logger = logging.getLogger(__name__)


def alert_send(
    *, subject: str, body: str, transport: httpx.BaseTransport | None = None
) -> list[str]:
    """Send one alert on every configured channel; returns the channels that took it."""
    sent: list[str] = []
    if settings.ADMINS:
        try:
            mail_admins(subject, body, fail_silently=False)
            sent.append("email")
        except Exception:
            logger.exception("alert e-mail failed", extra={"subject": subject})
    if settings.SLACK_WEBHOOK_URL:
        # Slack incoming webhooks: POST {"text": ...} to the hook URL, which is itself the secret.
        try:
            hook = settings.SLACK_WEBHOOK_URL
            with ApiSession(
                provider="slack",
                base_url="",
                secrets=[hook, httpx.URL(hook).path],
                transport=transport,
                max_attempts=3,
            ) as session:
                session.request("POST", hook, json={"text": f"*{subject}*\n{body}"})
            sent.append("slack")
        except ProviderError:
            logger.exception("alert to Slack failed", extra={"subject": subject})
    if not sent:
        logger.error("alert not sent: no channel configured", extra={"subject": subject})
    return sent
