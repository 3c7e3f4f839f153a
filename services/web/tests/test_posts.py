import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.posts.models import Post
from tests.factories import PostFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/posts/"


def detail_url(post_id) -> str:
    return f"/api/posts/{post_id}/"


# --- Reading -------------------------------------------------------------------------------------


def test_list_is_public_and_paginated_by_20(api_client):
    PostFactory.create_batch(25)
    response = api_client.get(LIST_URL)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 25
    assert len(body["results"]) == 20
    assert body["next"].endswith("?page=2")
    assert body["previous"] is None
    first = body["results"][0]
    assert set(first) == {"id", "title", "body", "author", "created_at", "updated_at"}
    assert set(first["author"]) == {"id", "username"}


def test_list_without_filter_parameters_skips_the_filter_form(api_client, user, other_user):
    """No filter parameter: the same rows as with an empty filter set; with one: filtered."""
    PostFactory.create_batch(3, author=user)
    PostFactory.create_batch(2, author=other_user)
    plain = api_client.get(LIST_URL).json()
    assert plain["count"] == 5
    assert api_client.get(LIST_URL, {"ordering": "-created"}).json()["results"] == plain["results"]
    assert api_client.get(LIST_URL, {"author": user.id}).json()["count"] == 3


def test_list_is_newest_first(api_client):
    older, newer = PostFactory(), PostFactory()
    ids = [row["id"] for row in api_client.get(LIST_URL).json()["results"]]
    assert ids == [newer.id, older.id]


def test_page_size_parameter_up_to_100(api_client):
    PostFactory.create_batch(105)
    assert len(api_client.get(LIST_URL, {"page_size": 5}).json()["results"]) == 5
    assert len(api_client.get(LIST_URL, {"page_size": 100}).json()["results"]) == 100
    assert len(api_client.get(LIST_URL).json()["results"]) == 20


def test_page_past_the_end_is_404_json(api_client):
    PostFactory.create_batch(3)
    response = api_client.get(LIST_URL, {"page": 9})
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


def test_list_runs_a_constant_number_of_queries(api_client):
    authors = UserFactory.create_batch(10)
    for index in range(100):
        PostFactory(author=authors[index % 10])

    def count_queries(page_size):
        with CaptureQueriesContext(connection) as queries:
            response = api_client.get(LIST_URL, {"page_size": page_size})
        assert response.status_code == 200
        assert len(response.json()["results"]) == page_size
        return len(queries)

    small, large = count_queries(2), count_queries(100)
    assert small == large
    assert large <= 2  # COUNT(*) and the page itself, author joined in


def test_retrieve(api_client, post):
    response = api_client.get(detail_url(post.id))
    assert response.status_code == 200
    assert response.json()["title"] == post.title
    assert response.json()["author"] == {"id": post.author.id, "username": "alice"}


def test_retrieve_missing_is_404_json(api_client):
    response = api_client.get(detail_url(999999))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- Filtering, search, ordering ----------------------------------------------------------------


def test_filter_by_author(api_client, user, other_user):
    PostFactory.create_batch(2, author=user)
    PostFactory.create_batch(3, author=other_user)
    by_id = api_client.get(LIST_URL, {"author": other_user.id}).json()
    assert by_id["count"] == 3
    assert {row["author"]["id"] for row in by_id["results"]} == {other_user.id}
    by_name = api_client.get(LIST_URL, {"author_username": "alice"}).json()
    assert by_name["count"] == 2


def test_filter_by_malformed_author_is_400(api_client):
    response = api_client.get(LIST_URL, {"author": "not-a-number"})
    assert response.status_code == 400
    assert "author" in response.json()["error"]["fields"]


def test_search_in_title_and_body(api_client):
    PostFactory(title="Celery tips", body="nothing here")
    PostFactory(title="Other", body="about celery queues")
    PostFactory(title="Unrelated", body="nginx")
    response = api_client.get(LIST_URL, {"search": "celery"})
    assert response.json()["count"] == 2


@pytest.mark.parametrize(
    "term", ["'; DROP TABLE posts_post; --", "%abc", "abc_", "\\abc", "' OR 'abc'='abc", "日本語"]
)
def test_search_with_sql_looking_text_is_safe(api_client, term):
    PostFactory(title="plain title")
    response = api_client.get(LIST_URL, {"search": term})
    assert response.status_code == 200
    assert response.json()["count"] == 0
    assert Post.objects.count() == 1


@pytest.mark.parametrize("term", ["%", "_", "\\", "' OR '1'='1"])
def test_search_with_only_sql_punctuation_is_refused(api_client, term):
    PostFactory(title="plain title")
    response = api_client.get(LIST_URL, {"search": term})
    assert response.status_code == 400
    assert Post.objects.count() == 1


def test_search_with_nul_byte_is_400_not_500(api_client):
    response = api_client.get(LIST_URL, {"search": "a\x00b"})
    assert response.status_code == 400


def test_author_username_with_nul_byte_is_400(api_client):
    response = api_client.get(LIST_URL, {"author_username": "a\x00b"})
    assert response.status_code == 400


@pytest.mark.parametrize(("ordering", "expected"), [("title", "abc"), ("-title", "cba")])
def test_ordering_by_title(api_client, ordering, expected):
    for title in "bca":
        PostFactory(title=title)
    rows = api_client.get(LIST_URL, {"ordering": ordering}).json()["results"]
    assert "".join(row["title"] for row in rows) == expected


def test_ordering_by_created_and_updated(api_client):
    first, second = PostFactory(), PostFactory()
    first.title = "touched"
    first.save()
    created = [r["id"] for r in api_client.get(LIST_URL, {"ordering": "created"}).json()["results"]]
    assert created == [first.id, second.id]
    updated = [
        r["id"] for r in api_client.get(LIST_URL, {"ordering": "-updated"}).json()["results"]
    ]
    assert updated == [first.id, second.id]


def test_unknown_ordering_is_400(api_client):
    response = api_client.get(LIST_URL, {"ordering": "password"})
    assert response.status_code == 400


# --- Writing -------------------------------------------------------------------------------------


def test_anonymous_create_is_401(api_client):
    response = api_client.post(LIST_URL, {"title": "t", "body": "b"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"
    assert not Post.objects.exists()


def test_create_sets_the_requesting_user_as_author(auth_client, user, other_user):
    payload = {"title": "Hello", "body": "World"}
    response = auth_client.post(LIST_URL, payload, format="json")
    assert response.status_code == 201
    assert response.json()["author"]["id"] == user.id
    assert Post.objects.get().author == user
    # Naming another author is refused outright (read-only field), not silently ignored.
    response = auth_client.post(LIST_URL, {**payload, "author": other_user.id}, format="json")
    assert response.status_code == 400
    assert "author" in response.json()["error"]["fields"]
    assert Post.objects.count() == 1


def test_author_updates_and_deletes(auth_client, post):
    response = auth_client.patch(detail_url(post.id), {"title": "New"}, format="json")
    assert response.status_code == 200
    assert response.json()["title"] == "New"
    response = auth_client.put(detail_url(post.id), {"title": "Put", "body": ""}, format="json")
    assert response.status_code == 200
    assert auth_client.delete(detail_url(post.id)).status_code == 204
    assert not Post.objects.exists()


def test_others_cannot_change_or_delete(other_client, post):
    response = other_client.patch(detail_url(post.id), {"title": "Mine now"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert other_client.delete(detail_url(post.id)).status_code == 403
    post.refresh_from_db()
    assert post.title != "Mine now"


def test_anonymous_update_is_401(api_client, post):
    assert api_client.patch(detail_url(post.id), {"title": "x"}, format="json").status_code == 401


# --- Validation ----------------------------------------------------------------------------------


def test_missing_title_is_400_with_field_errors(auth_client):
    response = auth_client.post(LIST_URL, {"body": "b"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]["title"] == ["This field is required."]
    assert "title" in error["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "x" * 201, "body": ""},
        {"title": "ok", "body": "x" * 10_001},
        {"title": "a\x00b", "body": ""},
        {"title": "ok", "body": "a\x00b"},
        {"title": "", "body": ""},
        {"title": ["a", "list"], "body": ""},
    ],
)
def test_bad_field_values_are_400_never_500(auth_client, payload):
    response = auth_client.post(LIST_URL, payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]
    assert not Post.objects.exists()


def test_longest_allowed_values_are_accepted(auth_client):
    response = auth_client.post(LIST_URL, {"title": "x" * 200, "body": "y" * 10_000}, format="json")
    assert response.status_code == 201


def test_malformed_json_is_400_naming_the_problem(auth_client):
    response = auth_client.post(LIST_URL, '{"title": "x",', content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert "JSON parse error" in error["detail"]


def test_json_that_is_not_an_object_is_400(auth_client):
    response = auth_client.post(LIST_URL, "[1, 2]", content_type="application/json")
    assert response.status_code == 400


def test_unsupported_media_type_is_415(auth_client):
    response = auth_client.post(LIST_URL, "<post/>", content_type="application/xml")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_method_not_allowed_is_405(auth_client, post):
    response = auth_client.post(detail_url(post.id), {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_body_over_the_upload_limit_is_413(auth_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = auth_client.post(LIST_URL, {"title": "t", "body": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Post.objects.exists()
    # Also where no one is authenticated yet (DRF's parser reads the body through Django's
    # bounded request.body).
    response = auth_client.post("/api/auth/token/", {"username": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
