"""Shared pytest configuration: the cast lives in tests/base.py, rows come from tests/factories.py."""

from __future__ import annotations

import os

import pytest
from django.db.backends.signals import connection_created
from django.test import Client


def _login_with_second_factor(original):
    """The test client's ``force_login`` skips the password; for staff it skips the second factor
    the same way, with a confirmed authenticator device, so tests of pages need not sign in twice.
    Real sign-ins (tests/abaco/test_sign_in.py, the browser tests) go through both factors."""

    def _login(self, user, backend=None):
        original(self, user, backend)
        if not (user.is_staff or user.is_superuser):
            return
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
        if device is None:
            device = TOTPDevice.objects.create(user=user, name="test client", confirmed=True)
        session = self.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()

    return _login


Client._login = _login_with_second_factor(Client._login)


def _journal_flush_allowed(sender, connection, **kwargs):
    """The flush between TransactionTestCases truncates every table, the append-only journal too
    (its TRUNCATE trigger lets this setting through; compliance.models.JournalEntry)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET abaco.journal_flush = 'on'")


connection_created.connect(_journal_flush_allowed, dispatch_uid="tests.journal_flush")


def _redis_answers() -> bool:
    import redis

    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
    try:
        return bool(redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _redis_required() -> bool:
    """CI (``.ci/run`` sets ``ABACO_REQUIRE_REDIS=1``) must run the Redis tests, never drop them."""
    return os.environ.get("ABACO_REQUIRE_REDIS", "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``redis`` need a Redis server: without one they are left out (deselected,
    named in the summary), since the product does not need Redis unless scaled out. Under
    ``ABACO_REQUIRE_REDIS`` (CI) they stay in and fail instead, so they cannot silently drop out
    of a run whose "no skip" check would not see a deselection."""
    marked = [item for item in items if item.get_closest_marker("redis")]
    if not marked or _redis_answers():
        return
    if _redis_required():
        config._abaco_redis_missing = True
        return
    config.hook.pytest_deselected(items=marked)
    items[:] = [item for item in items if not item.get_closest_marker("redis")]
    config._abaco_no_redis = len(marked)


def pytest_runtest_setup(item):
    if item.get_closest_marker("redis") and getattr(item.config, "_abaco_redis_missing", False):
        pytest.fail(
            "ABACO_REQUIRE_REDIS is set but no Redis answers on REDIS_TEST_URL "
            "(default redis://127.0.0.1:6379/15): CI must run the Redis tests",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter, config):
    left_out = getattr(config, "_abaco_no_redis", 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} Redis test(s) left out: no Redis answers on REDIS_TEST_URL "
            "(default redis://127.0.0.1:6379/15)"
        )
