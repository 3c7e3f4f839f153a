import pytest
from rest_framework.authtoken.models import Token

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"


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
