import time

import pytest
from django_redis import get_redis_connection

from apps.core.cache import counter_hit

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
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    throttle_rates(anon="1/min")
    for _ in range(2):
        assert api_client.get("/api/posts/").status_code == 200


def test_redis_counter_window_opens_at_the_first_hit(settings):
    """The throttles' counter in Redis (apps/core/cache.py): one key per client, counted and
    read in one round trip, gone when its window closes."""
    if not settings.REDIS_URL:
        pytest.skip("the Redis cache only (REDIS_URL set, as in the stack)")
    assert counter_hit("window", 60)[0] == 1
    hits, left = counter_hit("window", 60)
    assert hits == 2
    assert 58 < left <= 60
    assert counter_hit("other", 60)[0] == 1
    assert counter_hit("short", 1)[0] == 1
    time.sleep(1.2)
    assert counter_hit("short", 1)[0] == 1


def test_redis_counter_survives_a_redis_that_forgot_its_scripts(settings):
    """After a Redis restart its script cache is empty; the counter loads its script again."""
    if not settings.REDIS_URL:
        pytest.skip("the Redis cache only (REDIS_URL set, as in the stack)")
    assert counter_hit("restart", 60)[0] == 1
    get_redis_connection("default").script_flush()
    assert counter_hit("restart", 60)[0] == 2
