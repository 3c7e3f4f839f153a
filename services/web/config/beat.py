"""A Celery beat scheduler that refuses to run twice (``CELERY_BEAT_SCHEDULER``).

Before sending anything, beat takes a lock in the broker's Redis (redis-py's ``Lock``: a key
with a TTL of ``CELERY_BEAT_LOCK_TTL`` seconds holding this beat's host, pid and a random part)
and renews it on every tick. A second beat (a scaled service, a leftover container, a second
host) finds the lock taken and stands by, sending nothing; it takes over within TTL + TTL/3
(the lock expires, then its next look) when the active beat dies. So each periodic task is sent
by one beat only, however many run. Without a Redis broker (tests, eager mode) there is no lock.
Why not celery-redbeat: docs/reliability.md, "Exactly one beat".
"""

import contextlib
import logging
import os
import pathlib
import socket
import uuid

import redis
from celery.beat import PersistentScheduler

logger = logging.getLogger(__name__)

LOCK_KEY = "drs:beat:lock"
LOCK_TTL_SECONDS = int(os.environ.get("CELERY_BEAT_LOCK_TTL", "30"))
# Renew well inside the TTL; a standby beat looks again this often.
RENEW_SECONDS = max(LOCK_TTL_SECONDS / 3, 1.0)


class SingleBeatScheduler(PersistentScheduler):
    def __init__(self, *args, **kwargs):
        self.lock_token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock = None
        self.holding = None  # unknown until the first tick
        super().__init__(*args, **kwargs)
        broker = self.app.conf.broker_url or ""
        if broker.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(broker, socket_connect_timeout=2, socket_timeout=2)
            self.lock = client.lock(LOCK_KEY, timeout=LOCK_TTL_SECONDS, thread_local=False)

    def hold_lock(self) -> bool:
        """Renew the lock if it is ours, else take it if it is free: whether this beat holds it."""
        if self.lock is None:
            return True
        try:
            try:
                held = self.lock.reacquire()
            except redis.exceptions.LockError:  # not ours: never taken, expired, or another's
                held = self.lock.acquire(blocking=False, token=self.lock_token)
        except redis.RedisError as exc:
            logger.warning("beat: cannot reach Redis for the beat lock: %s", exc)
            held = False
        if held != self.holding:
            if held:
                logger.info("beat: holding the beat lock (%s); sending periodic tasks", LOCK_KEY)
            else:
                logger.warning(
                    "beat: another beat holds the lock %s (or Redis is down); standing by",
                    LOCK_KEY,
                )
            self.holding = held
        return held

    def touch_alive_file(self) -> None:
        # The container health check reads this file's age (active and standby alike).
        if self.schedule_filename:
            try:
                pathlib.Path(f"{self.schedule_filename}.alive").touch()
            except OSError as exc:
                logger.warning("beat: cannot touch the liveness file: %s", exc)

    def tick(self, *args, **kwargs):
        self.touch_alive_file()
        if not self.hold_lock():
            return RENEW_SECONDS
        return min(super().tick(*args, **kwargs), RENEW_SECONDS)

    def close(self):
        try:
            super().close()
        finally:
            if self.lock is not None and self.holding:
                with contextlib.suppress(redis.RedisError):  # the TTL frees it anyway
                    self.lock.release()
