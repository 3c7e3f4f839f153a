"""Per-username lockout (apps/accounts/lockout.py) on the token endpoint and /admin/login/, and
the login limits failing closed when the cache (Redis) refuses."""

import time

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from redis.exceptions import ResponseError

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
ADMIN_LOGIN = "/admin/login/"
ATTEMPTS = 3


@pytest.fixture(autouse=True)
def _lockout(settings, throttle_rates):
    settings.LOGIN_LOCKOUT_ATTEMPTS = ATTEMPTS
    settings.LOGIN_LOCKOUT_SECONDS = 60
    throttle_rates(login=None)  # the per-address limit is tested on its own


@pytest.fixture
def hashed(monkeypatch):
    """How many times a password was hashed (the test hasher, wrapped)."""
    calls = []
    for name in ("verify", "encode"):
        original = getattr(MD5PasswordHasher, name)

        def counting(self, *args, _original=original, **kwargs):
            calls.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(MD5PasswordHasher, name, counting)
    return calls


def token_login(client, username="alice", password=PASSWORD):
    return client.post(TOKEN_URL, {"username": username, "password": password})


def admin_login(client, username, password):
    return client.post(ADMIN_LOGIN, {"username": username, "password": password, "next": "/admin/"})


def test_a_username_is_locked_after_its_attempts_without_hashing(api_client, user, hashed):
    for _ in range(ATTEMPTS):
        assert token_login(api_client, password="guess").status_code == 400
    hashed_before = len(hashed)
    response = token_login(api_client)  # the right password, too late
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "login_locked"
    assert len(hashed) == hashed_before  # refused before the hasher


def test_another_users_login_works_during_the_lock(api_client, user, other_user):
    for _ in range(ATTEMPTS + 2):
        token_login(api_client, password="guess")
    assert token_login(api_client).status_code == 429
    assert token_login(api_client, username="bob").status_code == 200


def test_the_lock_ends_after_the_cool_off(api_client, user, settings):
    settings.LOGIN_LOCKOUT_SECONDS = 1
    for _ in range(ATTEMPTS + 3):  # attempts while locked do not extend it
        token_login(api_client, password="guess")
    assert token_login(api_client).status_code == 429
    time.sleep(1.5)
    assert token_login(api_client).status_code == 200


def test_a_successful_login_clears_the_count(api_client, user):
    for _ in range(ATTEMPTS - 1):
        token_login(api_client, password="guess")
    assert token_login(api_client).status_code == 200
    for _ in range(ATTEMPTS):
        assert token_login(api_client, password="guess").status_code == 400


def test_unknown_usernames_are_counted_too(api_client, db):
    for _ in range(ATTEMPTS):
        assert token_login(api_client, username="nobody", password="x").status_code == 400
    assert token_login(api_client, username="nobody", password="x").status_code == 429


def test_the_admin_login_shares_the_lock_and_says_so(client, user, hashed):
    user.is_staff = True
    user.save()
    for _ in range(ATTEMPTS):
        response = admin_login(client, "alice", "guess")
        assert response.status_code == 200
        assert b"Please enter the correct username" in response.content
    hashed_before = len(hashed)
    response = admin_login(client, "alice", PASSWORD)
    assert response.status_code == 200  # the form again, not logged in
    assert b"Too many login attempts for this username" in response.content
    assert "_auth_user_id" not in client.session
    assert len(hashed) == hashed_before


def test_admin_login_works_for_another_user_during_the_lock(client, user, other_user):
    other_user.is_staff = True
    other_user.save()
    for _ in range(ATTEMPTS + 1):
        admin_login(client, "alice", "guess")
    response = admin_login(client, "bob", PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(other_user.pk)


# --- Redis refusing: the login limits fail closed, the others stay open ------------------------


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }


@pytest.fixture
def cache_full(monkeypatch):
    """Redis at maxmemory under noeviction: every counter write answers OOM."""
    from apps.accounts import lockout
    from apps.core import throttles

    def refuse(*args, **kwargs):
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    for module in (lockout, throttles):  # the users of apps.core.cache.counter_hit
        monkeypatch.setattr(module, "counter_hit", refuse)


@pytest.mark.parametrize("refusal", ["cache_down", "cache_full"])
def test_login_fails_closed_when_redis_refuses(request, api_client, user, hashed, refusal):
    request.getfixturevalue(refusal)
    response = token_login(api_client)
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "login_unavailable"
    assert hashed == []


@pytest.mark.parametrize("refusal", ["cache_down", "cache_full"])
def test_login_throttle_alone_fails_closed(request, api_client, user, settings, refusal):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 0  # lockout off: the per-address throttle answers
    request.getfixturevalue("throttle_rates")(login="10/min")
    request.getfixturevalue(refusal)
    response = token_login(api_client)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "login_unavailable"


def test_admin_login_fails_closed_when_redis_refuses(client, user, cache_full):
    user.is_staff = True
    user.save()
    response = admin_login(client, "alice", PASSWORD)
    assert response.status_code == 200
    assert b"Login is temporarily unavailable" in response.content
    assert "_auth_user_id" not in client.session


def test_other_throttles_stay_open_when_redis_is_full(
    api_client, auth_client, throttle_rates, cache_full
):
    throttle_rates(anon="1/min", user="1/min")
    for _ in range(2):
        assert api_client.get("/api/posts/").status_code == 200
        assert auth_client.get("/api/me/").status_code == 200


def test_the_lockout_is_off_with_zero_attempts(api_client, user, settings, cache_down):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 0
    assert token_login(api_client).status_code == 200
