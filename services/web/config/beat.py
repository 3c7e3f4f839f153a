"""A Celery beat scheduler that refuses to run twice (``CELERY_BEAT_SCHEDULER``).

Before sending anything, beat takes a lock in the broker's Redis (``SET NX`` with a TTL of
``CELERY_BEAT_LOCK_TTL`` seconds) and renews it on every tick. A second beat (a scaled service,
a leftover container, a second host) finds the lock taken and stands by, sending nothing; it
takes over within TTL + TTL/3 (the lock expires, then its next look) when the active beat dies.
So each periodic task is sent by one beat only, however many run. Without a Redis broker (tests,
eager mode) there is no lock.
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

# Renew the lock only if it is still ours; take it if it is free. Returns 1 when held.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class SingleBeatScheduler(PersistentScheduler):
    def __init__(self, *args, **kwargs):
        self.lock_token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.holding = None  # unknown until the first tick
        self._redis = None
        super().__init__(*args, **kwargs)
        broker = self.app.conf.broker_url or ""
        if broker.startswith(("redis://", "rediss://")):
            self._redis = redis.Redis.from_url(broker, socket_connect_timeout=2, socket_timeout=2)

    def _hold_lock(self) -> bool:
        if self._redis is None:
            return True
        try:
            held = bool(
                self._redis.eval(
                    _ACQUIRE, 1, LOCK_KEY, self.lock_token, int(LOCK_TTL_SECONDS * 1000)
                )
            )
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

    def _touch_alive_file(self) -> None:
        # The container health check reads this file's age (active and standby alike).
        if self.schedule_filename:
            try:
                pathlib.Path(f"{self.schedule_filename}.alive").touch()
            except OSError as exc:
                logger.warning("beat: cannot touch the liveness file: %s", exc)

    def tick(self, *args, **kwargs):
        self._touch_alive_file()
        if not self._hold_lock():
            return RENEW_SECONDS
        return min(super().tick(*args, **kwargs), RENEW_SECONDS)

    def close(self):
        try:
            super().close()
        finally:
            if self._redis is not None and self.holding:
                with contextlib.suppress(redis.RedisError):  # the TTL frees it anyway
                    self._redis.eval(_RELEASE, 1, LOCK_KEY, self.lock_token)
