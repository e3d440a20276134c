"""Scale-out: two task clusters (real ``manage.py qcluster`` processes) on one Redis queue
(``Q_BROKER_URL``, abaco.queue.ReliableRedis), on the test database.

Run when a Redis answers on REDIS_TEST_URL (default redis://127.0.0.1:6379/15; the database
number is emptied): tests/conftest.py leaves these out, saying so, when none does. .ci/run runs
them on the machine's Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.tasks import async_task

from abaco.queue import ReliableRedis
from tests.abaco.test_metrics import database_url

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
RETRY = 6  # seconds before a taken, unacknowledged task is handed out again


@pytest.fixture
def queue() -> Iterator[redis.Redis]:
    connection = redis.from_url(REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()


def cluster_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "Q_BROKER_URL": REDIS_URL,
        "CACHE_URL": REDIS_URL,
        "Q_WORKERS": "1",
        "Q_TIMEOUT": str(RETRY - 1),
        "Q_RETRY": str(RETRY),
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,  # tasks are signed with it
        "ALLOWED_HOSTS": "localhost",
    }


@pytest.fixture
def clusters() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=Path(settings.BASE_DIR),
            env=cluster_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed with its workers
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_for(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.5)


def enqueue(func: str, *args: object, name: str) -> None:
    """Queue a task on the Redis queue, as a web process with Q_BROKER_URL does."""
    from django_q.conf import Conf

    saved = (Conf.REDIS, Conf.ORM, Conf.RETRY)
    Conf.REDIS, Conf.ORM, Conf.RETRY = REDIS_URL, None, RETRY
    try:
        async_task(func, *args, task_name=name, broker=ReliableRedis(), sync=False)
    finally:
        Conf.REDIS, Conf.ORM, Conf.RETRY = saved


def test_two_clusters_run_a_scheduled_job_once(queue, clusters):
    # A declared job (clusters switch undeclared schedules off at start): the overdue watch.
    Schedule.objects.bulk_create(
        [
            Schedule(
                name="pipelines_watch",
                func="integrations.tasks.pipelines_watch_task",
                schedule_type=Schedule.MINUTES,
                minutes=10,
                next_run=timezone.now() - timedelta(seconds=1),
            )
        ]
    )
    clusters(), clusters()
    # Each cluster's scheduler wakes about 30 s after it starts: both look at the due schedule.
    wait_for(
        lambda: Task.objects.filter(group="pipelines_watch").exists(),
        seconds=90,
        what="the scheduled task",
    )
    time.sleep(10)  # the other cluster's scheduler has run by now
    tasks = Task.objects.filter(group="pipelines_watch")
    assert [task.success for task in tasks] == [True]


def test_a_task_of_a_killed_cluster_is_run_by_the_other(queue, clusters):
    first = clusters()
    enqueue("time.sleep", 3, name="taken_by_a_cluster_that_dies")
    leases = f"django_q:{settings.Q_CLUSTER['name']}:q:leases"
    wait_for(lambda: queue.zcard(leases) == 1, seconds=60, what="the first cluster to take it")
    os.killpg(first.pid, signal.SIGKILL)  # no goodbye: the task is neither done nor acknowledged
    first.wait(timeout=10)
    clusters()
    wait_for(
        lambda: Task.objects.filter(name="taken_by_a_cluster_that_dies").exists(),
        seconds=90,
        what="the second cluster to run it after its lease expired",
    )
    task = Task.objects.get(name="taken_by_a_cluster_that_dies")
    assert task.success
    wait_for(lambda: queue.zcard(leases) == 0, seconds=10, what="the acknowledgement")
