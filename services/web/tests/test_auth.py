import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken
from rest_framework.test import APIClient

from apps.accounts.services import token_create
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
LOGOUT_URL = "/api/auth/logout/"
ME_URL = "/api/me/"


def login(api_client, username="alice", password=PASSWORD):
    return api_client.post(TOKEN_URL, {"username": username, "password": password})


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_token_for_valid_credentials(api_client, user):
    response = login(api_client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiry"}
    assert body["expiry"] is None  # DJANGO_TOKEN_TTL_HOURS=0: never expires
    assert client_with(body["token"]).get(ME_URL).json()["username"] == "alice"


def test_the_database_holds_a_digest_never_the_token(api_client, user):
    token = login(api_client).json()["token"]
    row = AuthToken.objects.get(user=user)
    assert row.digest == hashlib.sha512(token.encode()).hexdigest()
    stored = " ".join(str(v) for v in AuthToken.objects.values_list().get())
    assert token not in stored
    # What the table holds is no token: sent as one, it is refused.
    assert client_with(row.digest).get(ME_URL).status_code == 401
    assert client_with(row.token_key).get(ME_URL).status_code == 401


def test_each_login_makes_a_new_token_and_old_ones_still_work(api_client, user):
    first = login(api_client).json()["token"]
    second = login(api_client).json()["token"]
    assert first != second
    assert client_with(first).get(ME_URL).status_code == 200
    assert client_with(second).get(ME_URL).status_code == 200


def test_logins_beyond_the_cap_delete_the_oldest_tokens(api_client, user, settings):
    settings.TOKENS_PER_USER = 2
    tokens = [login(api_client).json()["token"] for _ in range(3)]
    assert AuthToken.objects.filter(user=user).count() == 2
    assert client_with(tokens[0]).get(ME_URL).status_code == 401
    assert client_with(tokens[2]).get(ME_URL).status_code == 200


def test_token_expiry_from_settings(api_client, user, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(hours=2)}
    response = login(api_client)
    assert response.json()["expiry"] is not None
    row = AuthToken.objects.get(user=user)
    assert timedelta(hours=1) < row.expiry - row.created <= timedelta(hours=2)


def test_an_expired_token_is_401_and_deleted(user):
    row, token = AuthToken.objects.create(user=user, expiry=timedelta(seconds=-1))
    assert client_with(token).get(ME_URL).status_code == 401
    assert not AuthToken.objects.filter(pk=row.pk).exists()


def test_token_with_wrong_password_is_400(api_client, user):
    response = login(api_client, password="wrong")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "Unable to log in" in error["detail"]
    assert not AuthToken.objects.exists()


def test_token_with_missing_fields_is_400(api_client):
    response = api_client.post(TOKEN_URL, {})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"username", "password"}


def test_token_with_nul_byte_is_400(api_client, user):
    response = api_client.post(TOKEN_URL, {"username": "ali\x00ce", "password": PASSWORD})
    assert response.status_code == 400


def test_login_works_with_a_stale_token_header(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)
    assert login(api_client).status_code == 200


def test_me_with_token(auth_client, user):
    response = auth_client.get(ME_URL)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["id"] == user.id


def test_me_with_session(api_client, user):
    api_client.force_login(user)
    assert api_client.get(ME_URL).json()["username"] == "alice"


def test_me_anonymous_is_401(api_client):
    response = api_client.get(ME_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["status"] == 401


@pytest.mark.parametrize("token", ["not-a-real-token", "0" * 64, "ab\x00" * 20, "é" * 64])
def test_bad_token_is_401(api_client, token):
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api_client.get("/api/posts/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_login_attempts_are_throttled(api_client, user, throttle_rates):
    throttle_rates(login="3/min")
    for _ in range(3):
        login(api_client, password="guess")
    response = login(api_client)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "throttled"


# --- Revocation: nothing is cached, so it holds from the commit on ----------------------------


def test_every_request_reads_the_token_from_the_database_once(auth_client):
    """No cache in front of the tokens (a deleted row is refused by the very next request), and
    one query for the token and its user."""
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            assert auth_client.get(ME_URL).status_code == 200
        assert sum("knox_authtoken" in q["sql"] for q in queries.captured_queries) == 1


def test_a_token_of_a_deactivated_user_is_401(user):
    _, token = token_create(user=user)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no signal
    assert client_with(token).get(ME_URL).status_code == 401


def test_logout_revokes_only_this_token(api_client, user):
    first = login(api_client).json()["token"]
    second = login(api_client).json()["token"]
    response = client_with(first).post(LOGOUT_URL)
    assert response.status_code == 204
    assert client_with(first).get(ME_URL).status_code == 401
    assert client_with(second).get(ME_URL).status_code == 200


def test_logout_needs_a_token(api_client, user):
    assert api_client.post(LOGOUT_URL).status_code == 401


def test_deleted_token_is_refused_at_once(auth_client, user):
    assert auth_client.get(ME_URL).status_code == 200
    AuthToken.objects.filter(user=user).delete()  # what the admin's delete does
    assert auth_client.get(ME_URL).status_code == 401


def test_password_change_revokes_the_users_tokens(auth_client, other_client, user):
    user.set_password("a-new-and-long-password")
    user.save()
    assert auth_client.get(ME_URL).status_code == 401
    assert other_client.get(ME_URL).status_code == 200


def test_changepassword_command_revokes_tokens(auth_client, user, monkeypatch):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a-new-and-long-password")
    call_command("changepassword", "alice")
    assert auth_client.get(ME_URL).status_code == 401


def test_admin_password_form_revokes_tokens(auth_client, user):
    admin = get_user_model().objects.create_superuser("root", password=PASSWORD)
    browser = APIClient()
    browser.force_login(admin)
    response = browser.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": "a-new-and-long-password", "password2": "a-new-and-long-password"},
        format="multipart",
    )
    assert response.status_code == 302, response.content[:500]
    assert auth_client.get(ME_URL).status_code == 401


def test_deactivation_revokes_tokens(auth_client, user):
    user.is_active = False
    user.save()
    assert auth_client.get(ME_URL).status_code == 401
    assert not AuthToken.objects.filter(user=user).exists()


def test_deleting_the_user_deletes_its_tokens(auth_client, user):
    user.delete()
    assert auth_client.get(ME_URL).status_code == 401
    assert not AuthToken.objects.exists()


def test_other_saves_keep_tokens(auth_client, user):
    user.first_name = "Alice"
    user.save()
    user.save(update_fields=["last_login"])
    assert auth_client.get(ME_URL).status_code == 200


def test_renamed_user_is_seen_at_once(auth_client, user):
    assert auth_client.get(ME_URL).json()["username"] == "alice"
    user.username = "alicia"
    user.save()
    assert auth_client.get(ME_URL).json()["username"] == "alicia"


def test_token_create_returns_a_working_token(user):
    row, token = token_create(user=user)
    assert row.user == user
    assert client_with(token).get(ME_URL).status_code == 200
