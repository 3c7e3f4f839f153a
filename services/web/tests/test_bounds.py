"""Bounded work per request: the search's terms are capped in number and length (a 400 naming
the limit), and every web database session has a statement_timeout; a statement that hits it
answers JSON 504 ``query_timeout``, never a 500."""

import copy
import os

import pytest
from django.db import connection
from django.http import JsonResponse
from django.test import Client
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apps.posts import pagination, selectors
from apps.posts.filters import SearchFilter
from apps.posts.views import PostViewSet
from config.urls import urlpatterns as real_urlpatterns
from tests.factories import PostFactory
from tests.test_settings import run

POSTS = "/api/posts/"

# --- Search terms ------------------------------------------------------------------------------


def search(client, text):
    return client.get(POSTS, {"search": text})


def assert_search_refused(response, *words: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    message = error["fields"]["search"][0]
    assert error["detail"] == f"search: {message}"
    for word in words:
        assert word in message, message


@pytest.mark.django_db
def test_the_default_limits_are_5_terms_of_64_characters(settings):
    assert (settings.SEARCH_MAX_TERMS, settings.SEARCH_MAX_TERM_LENGTH) == (5, 64)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("one two three four five six", 6),
        ("one,two,three,four,five,six", 6),
        ("one, two ,three\tfour\nfive,,six seven", 7),
        ('"one two" three four five six seven', 6),
        ("a," * 200, 200),
    ],
    ids=["spaces", "commas", "mixed", "phrase", "200"],
)
def test_more_terms_than_the_limit_is_400_naming_it(api_client, text, count):
    PostFactory(title="one two three four five six seven")
    assert_search_refused(search(api_client, text), "5 search terms", str(count))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        "alpha beta gamma delta epsilon",
        "alpha,beta,gamma,delta,epsilon",
        " alpha , beta,,gamma\tdelta epsilon, ",
        '"alpha beta gamma delta epsilon zeta" gamma delta',  # a quoted phrase is one term
        'alpha "" beta gamma "" delta epsilon',  # an empty phrase is no term
    ],
    ids=["spaces", "commas", "mixed", "phrase", "empty-phrase"],
)
def test_terms_up_to_the_limit_search_as_drf_does(api_client, text):
    wanted = PostFactory(title="alpha beta gamma", body="alpha beta gamma delta epsilon zeta")
    PostFactory(title="alpha beta gamma", body="delta only")  # lacks epsilon: every term counts
    response = search(api_client, text)
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [wanted.id]


@pytest.mark.django_db
def test_a_term_of_the_limits_length_is_searched(api_client):
    term = "x" * 63 + "y"
    wanted = PostFactory(title=f"before {term} after")
    PostFactory(title="x" * 63 + "z")
    response = search(api_client, term)
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [wanted.id]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("x" * 65, 65),
        ("short " + "y" * 1000, 1000),
        ('"' + "a phrase " * 8 + '"', len("a phrase " * 8)),  # one quoted term of 72
        ("ok," + "é" * 65, 65),  # characters, not bytes
    ],
    ids=["65", "1000", "phrase", "non-ascii"],
)
def test_a_term_longer_than_the_limit_is_400_naming_it(api_client, text, length):
    assert_search_refused(search(api_client, text), "64 characters", str(length))


@pytest.mark.django_db
def test_the_limits_come_from_the_settings(api_client, settings):
    settings.SEARCH_MAX_TERMS = 2
    settings.SEARCH_MAX_TERM_LENGTH = 3
    PostFactory(title="abc def")
    assert search(api_client, "abc def").json()["count"] == 1
    assert_search_refused(search(api_client, "abc def ghi"), "2 search terms", "3")
    assert_search_refused(search(api_client, "abcd"), "3 characters", "4")


@pytest.mark.django_db
def test_an_empty_search_is_no_search(api_client):
    PostFactory.create_batch(2)
    for text in ["", " ", ",,,", " , "]:
        response = search(api_client, text)
        assert response.status_code == 200, (text, response.content)
        assert response.json()["count"] == 2


@pytest.mark.django_db
def test_schema_states_the_search_limits(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    params = {p["name"]: p for p in schema["paths"][POSTS]["get"]["parameters"]}
    description = params["search"]["description"]
    assert "at most 5 terms" in description
    assert "at most 64 characters" in description
    assert "at least 3 letters or digits in a row" in description


# --- statement_timeout -------------------------------------------------------------------------

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="statement_timeout: PostgreSQL's"
)
SLEEP_SECONDS = 5  # far above the lowered timeout: without it the request answers 200, slowly
STATEMENT_TIMEOUT_SQL = "SELECT setting, source FROM pg_settings WHERE name = 'statement_timeout'"


def _sleep() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [SLEEP_SECONDS])


class SleepView(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        _sleep()
        return Response({"slept": SLEEP_SECONDS})


def plain_sleep(request):
    _sleep()
    return JsonResponse({"slept": SLEEP_SECONDS})


urlpatterns = [
    *real_urlpatterns,
    path("sleep/api/", SleepView.as_view()),
    path("sleep/plain/", plain_sleep),
]


@postgres_only
@pytest.mark.django_db
def test_a_web_session_has_the_settings_statement_timeout(settings):
    assert settings.DB_STATEMENT_TIMEOUT_MS == 15_000  # nothing set in the test environment
    with connection.cursor() as cursor:
        cursor.execute(STATEMENT_TIMEOUT_SQL)
        setting, source = cursor.fetchone()
    assert setting == str(settings.DB_STATEMENT_TIMEOUT_MS)
    assert source == "client"  # from the connection's options, not the server's config


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize("value", ["1234", "0"])
def test_the_variable_sets_the_session_timeout_in_a_fresh_process(value):
    """As a container starts: DJANGO_DB_STATEMENT_TIMEOUT_MS (0 for migrate, worker and beat)
    read by the settings and applied by PostgreSQL to the session."""
    code = (
        "import django; django.setup(); from django.db import connection; "
        "cursor = connection.cursor(); "
        f'cursor.execute("{STATEMENT_TIMEOUT_SQL}"); print(*cursor.fetchone())'
    )
    env = {
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "DJANGO_DB_STATEMENT_TIMEOUT_MS": value,
    }
    result = run(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [value, "client"]


@pytest.fixture
def lowered_statement_timeout(transactional_db):
    """Reconnect with statement_timeout 300 ms, set as the settings set it (libpq options);
    afterwards reconnect with the settings as they were."""
    saved = copy.deepcopy(connection.settings_dict)
    connection.close()
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["options"] = "-c statement_timeout=300"
    yield 300
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@postgres_only
@pytest.mark.urls("tests.test_bounds")
@pytest.mark.parametrize("url", ["/sleep/api/", "/sleep/plain/"])
def test_a_statement_over_the_timeout_answers_json_504(lowered_statement_timeout, url, caplog):
    with connection.cursor() as cursor:
        cursor.execute(STATEMENT_TIMEOUT_SQL)
        assert cursor.fetchone()[0] == str(lowered_statement_timeout)
    client = Client(raise_request_exception=False)
    response = client.get(url)
    assert response.status_code == 504, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "query_timeout"
    assert error["status"] == 504
    assert error["request_id"] == response["X-Request-ID"]
    assert "statement" not in error["detail"]  # PostgreSQL's own text stays in the log
    assert "Retry-After" not in response  # the same request would be stopped again
    assert "canceling statement due to statement timeout" in caplog.text
    # The database was fine all along: the same connection answers the next request.
    assert client.get(POSTS).status_code == 200


# --- Index-backed search -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["ab", "a b c", "a,b", '"a b"', "%", "-- ;", "a_b", "__x__"])
def test_a_search_without_a_term_of_3_letters_or_digits_is_400(api_client, text):
    PostFactory(title="ab a b c", body="a_b __x__ -- ; %")
    assert_search_refused(search(api_client, text), "at least 3 letters or digits in a row")


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["C++ tips", "tips C++", "is 日本語", "go 2026"])
def test_short_terms_beside_a_long_one_search_as_drf_does(api_client, text):
    wanted = PostFactory(title="C++ tips is go", body="日本語 2026")
    PostFactory(title="tips only", body="nothing")
    response = search(api_client, text)
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [wanted.id]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_trgm: PostgreSQL's")
@pytest.mark.django_db
@pytest.mark.parametrize("text", ["celery", "Celery queues", "ab celery", "zq7x9k"])
def test_search_is_served_by_the_trigram_indexes(text):
    """The indexes match the query DRF builds (UPPER(column) LIKE UPPER('%term%')): with
    whole-table reads priced out (sequential scans, and index scans that filter every row),
    PostgreSQL finds the posts through both trigram indexes."""
    PostFactory.create_batch(3)
    request = Request(APIRequestFactory().get(POSTS, {"search": text}))
    found = SearchFilter().filter_queryset(request, selectors.post_list(), PostViewSet())
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = found.explain()
    assert "post_title_trgm_idx" in plan, plan
    assert "post_body_trgm_idx" in plan, plan
    assert "Seq Scan on posts_post" not in plan, plan


@pytest.mark.django_db
def test_a_searched_count_stops_at_the_limit_and_later_pages_are_still_served(
    api_client, monkeypatch
):
    monkeypatch.setattr(pagination, "SEARCH_COUNT_LIMIT", 3)
    PostFactory.create_batch(5, title="celery", body="tips")
    PostFactory(title="other", body="nothing")
    first = search_page(api_client, "celery", page=1)
    assert first["count"] == 3  # at least 3: counting stopped there
    assert len(first["results"]) == 2
    last = search_page(api_client, "celery", page=2)
    assert last["count"] == 3
    assert last["next"] is None
    # Asked for anyway, the page past the limit is served, with the exact count.
    beyond = search_page(api_client, "celery", page=3)
    assert beyond["count"] == 5
    assert len(beyond["results"]) == 1
    # Unsearched lists and searches under the limit count exactly.
    assert api_client.get(POSTS).json()["count"] == 6
    assert search_page(api_client, "other", page=1)["count"] == 1


def search_page(client, text: str, page: int) -> dict:
    response = client.get(POSTS, {"search": text, "page_size": 2, "page": page})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_trgm: PostgreSQL's")
@pytest.mark.django_db
def test_analyze_keeps_no_statistics_of_the_body_expression():
    """ANALYZE would evaluate UPPER(body) on 30,000 sampled posts and hold the values (hundreds
    of MB at 10 KB a post: the database container was OOM-killed at 100,000 posts)."""
    sql = "SELECT attstattarget FROM pg_attribute WHERE attrelid = %s::regclass"
    with connection.cursor() as cursor:
        cursor.execute(sql, ["post_body_trgm_idx"])
        assert cursor.fetchall() == [(0,)]
        cursor.execute(sql, ["post_title_trgm_idx"])
        assert cursor.fetchall() == [(None,)]  # titles are short: the default statistics
