import time

import pytest

pytestmark = pytest.mark.django_db


def test_anonymous_requests_are_throttled(api_client, throttle_rates):
    throttle_rates(anon="3/min")
    for _ in range(3):
        assert api_client.get("/api/posts/").status_code == 200
    response = api_client.get("/api/posts/")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["status"] == 429
    assert "throttled" in error["detail"].lower()


def test_authenticated_requests_have_their_own_rate(auth_client, throttle_rates):
    throttle_rates(anon="1/min", user="2/min")
    assert auth_client.get("/api/posts/").status_code == 200
    assert auth_client.get("/api/posts/").status_code == 200
    assert auth_client.get("/api/posts/").status_code == 429


def test_users_are_counted_separately(auth_client, other_client, throttle_rates):
    throttle_rates(user="1/min")
    assert auth_client.get("/api/me/").status_code == 200
    assert auth_client.get("/api/me/").status_code == 429
    assert other_client.get("/api/me/").status_code == 200


def test_empty_rate_disables_throttling(api_client, throttle_rates):
    throttle_rates(anon=None)
    for _ in range(5):
        assert api_client.get("/api/posts/").status_code == 200


def test_health_endpoints_are_never_throttled(api_client, throttle_rates):
    throttle_rates(anon="1/min")
    for _ in range(3):
        assert api_client.get("/healthz").status_code == 200


def test_throttling_fails_open_when_the_cache_is_down(api_client, throttle_rates, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    throttle_rates(anon="1/min")
    for _ in range(2):
        assert api_client.get("/api/posts/").status_code == 200


def test_redis_counter_window_opens_at_the_first_hit():
    """The throttles' counter in Redis (apps/core/cache.py): one key per client, counted and
    read in one round trip, gone when its window closes."""
    from django.core.cache import cache

    if not hasattr(cache, "hit"):
        pytest.skip("the Redis cache backend only (REDIS_URL set, as in the stack)")
    assert cache.hit("window", 60)[0] == 1
    hits, left = cache.hit("window", 60)
    assert hits == 2
    assert 58 < left <= 60
    assert cache.hit("other", 60)[0] == 1
    assert cache.hit("short", 1)[0] == 1
    time.sleep(1.2)
    assert cache.hit("short", 1)[0] == 1


def test_redis_counter_survives_a_redis_that_forgot_its_scripts():
    """After a Redis restart its script cache is empty; the counter loads its script again."""
    from django.core.cache import cache

    if not hasattr(cache, "hit"):
        pytest.skip("the Redis cache backend only (REDIS_URL set, as in the stack)")
    assert cache.hit("restart", 60)[0] == 1
    cache._cache.get_client(write=True).script_flush()
    assert cache.hit("restart", 60)[0] == 2
