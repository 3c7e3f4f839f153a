"""CORS (django-cors-headers): pages on the origins of DJANGO_CORS_ALLOWED_ORIGINS may call the
API from a browser; any other origin gets no CORS header (the browser then keeps the answer from
the page). None is allowed by default; a malformed origin stops start-up with one line."""

import pytest

from tests.test_settings import PRINT_SETTINGS, PRODUCTION_ENV, run

pytestmark = pytest.mark.django_db

ALLOWED = "https://app.example.com"
POSTS = "/api/posts/"


@pytest.fixture
def allowed_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED, "http://localhost:3000"]


def preflight(client, origin: str, path: str = POSTS, method: str = "POST"):
    """What a browser sends before a cross-origin POST with a token and a JSON body."""
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


def allowed_headers(response) -> set[str]:
    value = response.headers.get("Access-Control-Allow-Headers", "")
    return {name.strip().lower() for name in value.split(",")}


def test_preflight_from_an_allowed_origin_is_allowed(api_client, allowed_origin):
    response = preflight(api_client, ALLOWED)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= allowed_headers(response)
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "origin" in response.headers["Vary"].lower()


def test_preflight_from_another_origin_gets_no_cors_headers(api_client, allowed_origin):
    for origin in (
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com:8443",
    ):
        response = preflight(api_client, origin)
        assert "Access-Control-Allow-Origin" not in response.headers, origin
        assert "Access-Control-Allow-Methods" not in response.headers, origin


def test_no_origin_is_allowed_by_default(api_client):
    response = preflight(api_client, ALLOWED)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_answers_to_an_allowed_origin_carry_cors_headers(auth_client, allowed_origin):
    response = auth_client.post(
        "/api/exports/", {"format": "csv"}, format="json", HTTP_ORIGIN=ALLOWED
    )
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "Location" in exposed
    assert "Content-Disposition" in exposed
    # Errors too, so the page can read them.
    response = auth_client.post(POSTS, {"title": ""}, format="json", HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_cors_covers_the_api_only(api_client, allowed_origin):
    response = preflight(api_client, ALLOWED, path="/admin/login/")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_allowed_origins_come_from_the_environment():
    code = "import django; django.setup(); from django.conf import settings as s; "
    result = run(
        code + "print(s.CORS_ALLOWED_ORIGINS)",
        {**PRODUCTION_ENV, "DJANGO_CORS_ALLOWED_ORIGINS": f"{ALLOWED},http://localhost:3000"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([ALLOWED, "http://localhost:3000"])
    result = run(code + "print(s.CORS_ALLOWED_ORIGINS)", PRODUCTION_ENV)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "origins",
    [
        "app.example.com",  # no scheme
        "https://app.example.com/",  # a path (even "/") never matches an origin
        "https://app.example.com,ftp://files.example.com",
        "https://app.example.com, http://localhost:3000",  # a space after the comma
        "https://app.example.com:port",
        "*",
    ],
)
def test_a_malformed_origin_stops_start_up_with_one_line(origins):
    result = run(PRINT_SETTINGS, {**PRODUCTION_ENV, "DJANGO_CORS_ALLOWED_ORIGINS": origins})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: DJANGO_CORS_ALLOWED_ORIGINS has ")
