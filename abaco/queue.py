"""The task queue on Redis when several task clusters share it (``Q_BROKER_URL``).

django-q2's own Redis broker pops a task with BLPOP and never hears of it again: a cluster
killed while running it (an instance recycled, an out-of-memory kill) loses the task. The ORM
broker does not: an unacknowledged task is handed out again after ``Q_RETRY`` seconds. This
broker keeps that promise on Redis with the usual reliable-queue pattern: taking a task moves it,
in one Lua script, from the queue to a sorted set of leases that expire ``Q_RETRY`` seconds on;
acknowledging it removes the lease; any cluster that finds an expired lease puts the task back
at the head of the queue, once (the script's ZREM decides who). So a task runs at least once, as
with the ORM broker, and our tasks are written to be safe when run twice (integrations.pipelines).
"""

from __future__ import annotations

import time
from typing import Any

from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf

# Take one task: move it from the queue to the leases with its expiry (atomic on the server).
TAKE = """
local task = redis.call('LPOP', KEYS[1])
if task then redis.call('ZADD', KEYS[2], ARGV[1], task) end
return task
"""
# Put back tasks whose lease expired; returns how many (each only by the caller that removed it).
REAP = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
local n = 0
for _, task in ipairs(expired) do
  if redis.call('ZREM', KEYS[2], task) == 1 then
    redis.call('LPUSH', KEYS[1], task)
    n = n + 1
  end
end
return n
"""
IDLE_WAIT = 1.0  # seconds between polls of an empty queue (BLPOP's timeout in django-q2's)


class ReliableRedis(Redis):
    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key=list_key)
        self.lease_key = f"{self.list_key}:leases"
        self._take = self.connection.register_script(TAKE)
        self._reap = self.connection.register_script(REAP)

    def dequeue(self) -> list[tuple[Any, Any]] | None:
        self.requeue_expired()
        task = self._take(keys=[self.list_key, self.lease_key], args=[time.time() + Conf.RETRY])
        if task:
            # The payload is its own acknowledgement id: signed, it is unique per task.
            return [(task, task)]
        time.sleep(IDLE_WAIT)
        return None

    def acknowledge(self, task_id: Any) -> None:
        self.connection.zrem(self.lease_key, task_id)

    def fail(self, task_id: Any) -> None:
        self.acknowledge(task_id)

    def requeue_expired(self) -> int:
        return int(self._reap(keys=[self.list_key, self.lease_key], args=[time.time()]))

    def leases(self) -> int:
        """Tasks taken and not yet acknowledged (being run, or lost with their cluster)."""
        return int(self.connection.zcard(self.lease_key))

    def delete_queue(self) -> Any:
        self.connection.delete(self.lease_key)
        return super().delete_queue()
