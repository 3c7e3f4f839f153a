"""Django's Redis cache backend, with two additions the hot path needs.

- One ``redis.Redis`` client per connection pool, made once: Django's backend builds a new one
  on every cache call, which copies redis-py's table of response callbacks each time (a few
  percent of a list request, profiled with py-spy).
- ``hit(key, seconds)``: a counter that starts at the first hit and lives ``seconds``, counted
  and read in one command (a Lua script: INCR, EXPIRE NX, PTTL, atomic in Redis; a pipeline
  of them in a MULTI/EXEC transaction was five commands to send and parse): the throttles'
  counter (apps/core/throttles.py).
"""

from django.core.cache.backends import redis as django_redis

# KEYS[1]: the counter; ARGV[1]: its window in seconds. Returns {hits, milliseconds left}.
HIT_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return {hits, redis.call('PTTL', KEYS[1])}
"""


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient
        self._hit_script = None

    def hit(self, key: str, seconds: int, version=None) -> tuple[int, float]:
        """Count one hit on ``key``: ``(hits in the current window, seconds it has left)``.
        The window opens at the first hit and lasts ``seconds``."""
        key = self.make_and_validate_key(key, version=version)
        client = self._cache.get_client(key, write=True)
        if self._hit_script is None:  # run by its SHA; redis-py loads it again on NOSCRIPT
            self._hit_script = client.register_script(HIT_SCRIPT)
        hits, left_ms = self._hit_script(keys=[key], args=[seconds], client=client)
        return hits, max(left_ms, 0) / 1000
