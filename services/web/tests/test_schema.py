"""The OpenAPI schema says what the API takes and answers (tests/e2e/test_generated_client.py
builds a client from it): JSON request bodies only, as the parsers take; every error with the
error body; an export's download in the media types it is really served in."""

import json

import jsonschema
import pytest

from apps.accounts.views import LogoutView, MeView, TokenView
from apps.core.views import ApiRootView
from apps.exports.models import Export
from apps.exports.views import ExportViewSet
from apps.posts.views import PostViewSet
from tests.factories import PostFactory

pytestmark = pytest.mark.django_db

DOWNLOAD = "/api/exports/{id}/download/"


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_request_bodies_are_json_only_as_the_parsers_are(schema):
    views = (TokenView, LogoutView, MeView, PostViewSet, ExportViewSet, ApiRootView)
    parsed = {parser.media_type for view in views for parser in view.parser_classes}
    assert parsed == {"application/json"}
    bodies = {
        (path, method): set(operation["requestBody"]["content"])
        for path, method, operation in operations(schema)
        if "requestBody" in operation
    }
    assert bodies, "no operation takes a body"
    for where, media_types in bodies.items():
        assert media_types == parsed, where


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_form_bodies_are_refused_415(auth_client, api_client, user, content_type):
    for client, path in ((auth_client, "/api/posts/"), (api_client, "/api/auth/token/")):
        response = client.generic("POST", path, "title=x&username=alice", content_type=content_type)
        assert response.status_code == 415, (path, response.content)
        assert response.json()["error"]["code"] == "unsupported_media_type"


def test_every_error_answer_declares_the_error_body(schema):
    assert "Error" in schema["components"]["schemas"]
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                content = response.get("content", {})
                assert list(content) == ["application/json"], (path, method, status)
                assert content["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }, (path, method, status)


def test_errors_are_declared_where_they_can_happen(schema):
    ops = {(path, method): set(op["responses"]) for path, method, op in operations(schema)}
    # No body, no 415; no authentication at the token endpoint, no 401 there.
    assert "415" in ops["/api/posts/", "post"]
    assert "415" not in ops["/api/posts/", "get"]
    assert "401" not in ops["/api/auth/token/", "post"]
    assert "401" in ops["/api/me/", "get"]
    # Writes a session makes can fail CSRF (403); reads cannot.
    assert "403" in ops["/api/posts/{id}/", "delete"]
    assert "403" not in ops["/api/posts/", "get"]
    # The download answers whatever the Accept header: never 406.
    assert "406" not in ops[DOWNLOAD, "get"]
    assert "406" in ops["/api/posts/", "get"]
    assert {"429", "502", "503", "504"} <= ops["/api/posts/", "get"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_download_is_served_as_the_schema_declares(auth_client, schema, user, fmt):
    PostFactory.create_batch(3, author=user)
    created = auth_client.post("/api/exports/", {"format": fmt}, format="json")
    assert created.status_code == 202
    assert Export.objects.get(pk=created.json()["id"]).status == Export.Status.DONE
    response = auth_client.get(DOWNLOAD.format(id=created.json()["id"]))
    assert response.status_code == 200
    content = schema["paths"][DOWNLOAD]["get"]["responses"]["200"]["content"]
    # Text first: a generated client then reads either format as text.
    assert list(content) == ["text/csv", "application/json"]
    media_type = response.headers["Content-Type"].split(";")[0]
    assert media_type in content
    body = b"".join(response.streaming_content).decode("utf-8")
    if fmt == "json":
        # The declared schema refers to components (a Post): validate against the whole document.
        declared = {**content[media_type]["schema"], "components": schema["components"]}
        jsonschema.validate(json.loads(body), declared)
    else:
        assert body.splitlines()[0] == "id,title,body,created_at,updated_at"
