"""Strict input (apps.core.validation): what the OpenAPI schema declares is what the API
accepts. Out-of-range paging, NUL in text parameters, non-string values for string fields and
unknown body keys are each a 400 naming the culprit, and nothing is written."""

import pytest

from apps.exports.models import Export
from apps.posts.models import Post
from tests.factories import PASSWORD, PostFactory

pytestmark = pytest.mark.django_db

POSTS = "/api/posts/"
EXPORTS = "/api/exports/"


def assert_400_naming(response, name: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert name in error["fields"], error


# --- page and page_size ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "101", "1000", "99999999999999999999", "-5", "lots",
                                   "1.5", "", " 5", "+5", "1e2"])  # fmt: skip
@pytest.mark.parametrize("url", [POSTS, EXPORTS])
def test_page_size_outside_1_to_100_is_400(auth_client, url, value):
    assert_400_naming(auth_client.get(url, {"page_size": value}), "page_size")


@pytest.mark.parametrize("value", ["0", "-1", "last", "x", "", "2.0"])
@pytest.mark.parametrize("url", [POSTS, EXPORTS])
def test_page_that_is_not_a_positive_integer_is_400(auth_client, url, value):
    assert_400_naming(auth_client.get(url, {"page": value}), "page")


def test_page_size_bounds_are_accepted(auth_client):
    PostFactory.create_batch(3)
    assert len(auth_client.get(POSTS, {"page_size": 1}).json()["results"]) == 1
    assert auth_client.get(POSTS, {"page_size": 100}).status_code == 200
    assert auth_client.get(EXPORTS, {"page_size": 100, "page": 1}).status_code == 200


def test_page_past_the_end_stays_404(auth_client):
    assert auth_client.get(POSTS, {"page": 99999999999}).status_code == 404


def test_schema_declares_the_paging_bounds(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    for path in (POSTS, EXPORTS):
        params = {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"]}
        assert params["page_size"]["minimum"] == 1
        assert params["page_size"]["maximum"] == 100
        assert params["page"]["minimum"] == 1


# --- NUL in text query parameters --------------------------------------------------------------


@pytest.mark.parametrize("name", ["search", "author_username"])
def test_nul_in_a_text_parameter_is_400(api_client, name):
    PostFactory()
    assert_400_naming(api_client.get(POSTS, {name: "a\x00b"}), name)


def test_schema_says_text_parameters_exclude_nul(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    params = {p["name"]: p["schema"] for p in schema["paths"][POSTS]["get"]["parameters"]}
    for name in ("search", "author_username"):
        assert params[name]["pattern"] == "^[^\\x00]*$"


# --- strict types ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [123, 1.5, True, {"a": 1}, ["x"]])
def test_non_string_title_or_body_is_400(auth_client, value):
    assert_400_naming(auth_client.post(POSTS, {"title": value}, format="json"), "title")
    assert_400_naming(auth_client.post(POSTS, {"title": "t", "body": value}, format="json"), "body")
    assert not Post.objects.exists()


def test_non_string_title_is_400_on_update(auth_client, post):
    response = auth_client.patch(f"{POSTS}{post.id}/", {"title": 42}, format="json")
    assert_400_naming(response, "title")
    post.refresh_from_db()
    assert post.title != "42"


@pytest.mark.parametrize("value", [1, True, ["csv"], {"csv": 1}])
def test_non_string_export_format_is_400(auth_client, value):
    assert_400_naming(auth_client.post(EXPORTS, {"format": value}, format="json"), "format")
    assert not Export.objects.exists()


def test_non_string_credentials_are_400(api_client, user):
    response = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": 12345}, format="json"
    )
    assert_400_naming(response, "password")


# --- unknown and read-only keys ----------------------------------------------------------------


def test_unknown_key_in_a_post_is_400_naming_it(auth_client):
    response = auth_client.post(POSTS, {"title": "t", "colour": "red"}, format="json")
    assert_400_naming(response, "colour")
    assert response.json()["error"]["fields"]["colour"] == ["Unknown field."]
    assert not Post.objects.exists()


def test_read_only_key_in_a_post_is_400_naming_it(auth_client, other_user, post):
    response = auth_client.patch(f"{POSTS}{post.id}/", {"author": other_user.id}, format="json")
    assert_400_naming(response, "author")
    post.refresh_from_db()
    assert post.author.username == "alice"


def test_unknown_key_in_an_export_request_is_400(auth_client):
    response = auth_client.post(EXPORTS, {"format": "csv", "owner": 1}, format="json")
    assert_400_naming(response, "owner")
    assert not Export.objects.exists()


def test_unknown_key_at_login_is_400(api_client, user):
    body = {"username": "alice", "password": PASSWORD, "otp": "1"}
    assert_400_naming(api_client.post("/api/auth/token/", body, format="json"), "otp")


def test_schema_closes_every_request_body(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    for name in ("PostRequest", "PatchedPostRequest", "ExportCreateRequest", "LoginRequest"):
        assert components[name]["additionalProperties"] is False, name


# --- malformed bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 100_000, "[" * 50_000 + "]" * 50_000])
def test_json_nested_too_deeply_is_400(auth_client, body):
    response = auth_client.generic("POST", POSTS, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "parse_error"
    assert not Post.objects.exists()


# --- ids in query parameters -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "x", " 1", str(2**63), "9" * 60])
def test_author_that_is_not_an_id_is_400(api_client, value):
    assert_400_naming(api_client.get(POSTS, {"author": value}), "author")


def test_author_filter_accepts_any_id(api_client, post):
    assert api_client.get(POSTS, {"author": post.author_id}).json()["count"] == 1
    assert api_client.get(POSTS, {"author": 2**63 - 1}).json()["count"] == 0
