import pytest
from rest_framework.authtoken.models import Token

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
ME_URL = "/api/me/"


def test_token_for_valid_credentials(api_client, user):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}


def test_token_accepts_form_data(api_client, user):
    response = api_client.post(
        TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="multipart"
    )
    assert response.status_code == 200


def test_token_with_wrong_password_is_400(api_client, user):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": "wrong"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "Unable to log in" in error["detail"]
    assert not Token.objects.exists()


def test_token_with_missing_fields_is_400(api_client):
    response = api_client.post(TOKEN_URL, {})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"username", "password"}


def test_token_with_nul_byte_is_400(api_client, user):
    response = api_client.post(TOKEN_URL, {"username": "ali\x00ce", "password": PASSWORD})
    assert response.status_code == 400


def test_me_with_token(auth_client, user):
    response = auth_client.get("/api/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["id"] == user.id


def test_me_with_session(api_client, user):
    api_client.force_login(user)
    assert api_client.get("/api/me/").json()["username"] == "alice"


def test_me_anonymous_is_401(api_client):
    response = api_client.get("/api/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["status"] == 401


def test_bad_token_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = api_client.get("/api/posts/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_login_attempts_are_throttled(api_client, user, throttle_rates):
    throttle_rates(login="3/min")
    for _ in range(3):
        api_client.post(TOKEN_URL, {"username": "alice", "password": "guess"})
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "throttled"


# --- Cached token lookups (apps/accounts/authentication.py) --------------------------------------


def _token_queries(client) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(ME_URL).status_code == 200
    return sum("authtoken_token" in q["sql"] for q in queries.captured_queries)


def test_token_lookup_is_cached_between_requests(auth_client):
    assert _token_queries(auth_client) == 1
    assert _token_queries(auth_client) == 0


def test_deleted_token_is_refused_at_once_despite_the_cache(auth_client, user):
    assert auth_client.get(ME_URL).status_code == 200  # cached now
    Token.objects.filter(user=user).delete()  # what the admin's delete does
    assert auth_client.get(ME_URL).status_code == 401


def test_deactivated_user_is_refused_at_once_despite_the_cache(auth_client, user):
    assert auth_client.get(ME_URL).status_code == 200  # cached now
    user.is_active = False
    user.save()
    assert auth_client.get(ME_URL).status_code == 401


def test_renamed_user_is_seen_at_once(auth_client, user):
    assert auth_client.get(ME_URL).json()["username"] == "alice"
    user.username = "alicia"
    user.save()
    assert auth_client.get(ME_URL).json()["username"] == "alicia"


def test_token_cache_off_asks_the_database_every_time(auth_client, settings):
    settings.TOKEN_CACHE_SECONDS = 0
    assert _token_queries(auth_client) == 1
    assert _token_queries(auth_client) == 1


def test_cache_keys_never_hold_the_token(auth_client, user):
    from apps.accounts.authentication import token_cache_key

    key = Token.objects.get(user=user).key
    assert key not in token_cache_key(key)
