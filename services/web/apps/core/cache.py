"""Counters in the shared cache: a window that opens at the first hit and lasts ``seconds``.

The throttles (apps/core/throttles.py) and the login lockout (apps/accounts/lockout.py) count
with ``counter_hit``. On Redis (django-redis, ``REDIS_URL`` set) a hit is one atomic command, a
Lua script run by its SHA (INCR, EXPIRE NX, PTTL), that also says how long the window has left
(``Retry-After``). Other caches (local memory in tests and development) count through Django's
cache API.
"""

import functools

from django.core.cache import cache
from django_redis import get_redis_connection

# KEYS[1]: the counter; ARGV[1]: its window in seconds. Returns {hits, milliseconds left}.
HIT_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return {hits, redis.call('PTTL', KEYS[1])}
"""


@functools.lru_cache(maxsize=8)
def _hit_script(client):
    # Run by its SHA; redis-py loads the script again when Redis answers NOSCRIPT.
    return client.register_script(HIT_SCRIPT)


def counter_hit(key: str, seconds: int) -> tuple[int, float]:
    """Count one hit on ``key``: ``(hits in the current window, seconds it has left)``."""
    try:
        client = get_redis_connection("default")
    except NotImplementedError:  # not django-redis
        cache.add(key, 0, seconds)
        return cache.incr(key), float(seconds)
    hits, left_ms = _hit_script(client)(keys=[cache.make_key(key)], args=[seconds])
    return hits, max(left_ms, 0) / 1000
