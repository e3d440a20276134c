"""Shared pytest configuration: the cast lives in tests/base.py, rows come from tests/factories.py."""

import os


def _redis_answers() -> bool:
    import redis

    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
    try:
        return bool(redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``redis`` need a Redis server: without one they are left out (deselected,
    named in the summary), since the product does not need Redis unless scaled out."""
    marked = [item for item in items if item.get_closest_marker("redis")]
    if not marked or _redis_answers():
        return
    config.hook.pytest_deselected(items=marked)
    items[:] = [item for item in items if not item.get_closest_marker("redis")]
    config._abaco_no_redis = len(marked)


def pytest_terminal_summary(terminalreporter, config):
    left_out = getattr(config, "_abaco_no_redis", 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} Redis test(s) left out: no Redis answers on REDIS_TEST_URL "
            "(default redis://127.0.0.1:6379/15)"
        )
