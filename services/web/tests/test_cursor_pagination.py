"""Cursor pagination of the post list, chosen by the client with ?cursor= (empty for the first
page): opaque next/previous links, no count, newest first, the same page size bounds."""

from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import PostFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/posts/"


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _walk(client, first: str) -> tuple[list[int], list[dict]]:
    """Every page from `first`, following `next`: the ids in order and the bodies."""
    ids, bodies, url = [], [], first
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        bodies.append(body)
        ids += [row["id"] for row in body["results"]]
        url = body["next"] and _path(body["next"])
    return ids, bodies


def test_cursor_pages_walk_every_post_newest_first_once(api_client):
    posts = PostFactory.create_batch(17)
    newest_first = [post.id for post in reversed(posts)]
    ids, bodies = _walk(api_client, LIST_URL + "?cursor=&page_size=5")
    assert ids == newest_first
    assert [len(body["results"]) for body in bodies] == [5, 5, 5, 2]
    assert all(set(body) == {"next", "previous", "results"} for body in bodies)
    assert bodies[0]["previous"] is None
    # Back from the last page: the page before it.
    back = api_client.get(_path(bodies[-1]["previous"])).json()
    assert [row["id"] for row in back["results"]] == newest_first[10:15]


def test_page_numbers_stay_the_default(api_client):
    PostFactory.create_batch(3)
    body = api_client.get(LIST_URL).json()
    assert body["count"] == 3
    assert "cursor=" not in (body["next"] or "")


def test_cursor_keeps_filters(api_client):
    author = UserFactory()
    mine = PostFactory.create_batch(4, author=author)
    PostFactory.create_batch(3)
    ids, _ = _walk(api_client, f"{LIST_URL}?cursor=&page_size=3&author={author.id}")
    assert ids == [post.id for post in reversed(mine)]


@pytest.mark.parametrize("extra", ["page=2", "ordering=title"])
def test_cursor_with_page_or_ordering_is_a_400_naming_it(api_client, extra):
    PostFactory.create_batch(2)
    response = api_client.get(f"{LIST_URL}?cursor=&{extra}")
    assert response.status_code == 400
    name = extra.split("=")[0]
    assert name in response.json()["error"]["fields"]


def test_bad_cursor_is_a_404_json(api_client):
    PostFactory()
    response = api_client.get(LIST_URL + "?cursor=not-a-cursor")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


@pytest.mark.parametrize("size", ["0", "101", "x"])
def test_cursor_page_size_is_bounded(api_client, size):
    response = api_client.get(f"{LIST_URL}?cursor=&page_size={size}")
    assert response.status_code == 400
    assert "page_size" in response.json()["error"]["fields"]


def test_a_deep_cursor_page_is_one_query_without_count(api_client):
    PostFactory.create_batch(30)
    first = api_client.get(LIST_URL + "?cursor=&page_size=10").json()
    deeper = _path(first["next"])
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get(deeper)
    assert response.status_code == 200
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert "count(" not in queries[0]["sql"].lower()
    assert "offset" not in queries[0]["sql"].lower()


def test_schema_offers_the_cursor_and_count_is_optional(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parameters = {p["name"] for p in schema["paths"]["/api/posts/"]["get"]["parameters"]}
    assert {"cursor", "page", "page_size"} <= parameters
    paginated = schema["components"]["schemas"]["PaginatedPostList"]
    assert "count" not in paginated.get("required", [])
    assert "results" in paginated["required"]
