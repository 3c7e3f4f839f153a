"""The list's count on a large table: PostgreSQL's estimate instead of COUNT(*), with every
page still reachable; filtered lists and small tables stay exact."""

import pytest
from django.db import connection, transaction

from tests.factories import PostFactory, UserFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's estimate only"),
]

LIST_URL = "/api/posts/"


def _set_estimate(rows: int) -> None:
    """Make the planner's row estimate of the posts table `rows`, as a stale ANALYZE would:
    for a moment (a savepoint) the table holds that many rows and is analysed. ANALYZE writes
    its estimate in place, outside the transaction, so the estimate stays when the rows roll
    back (also after the test; the other tests keep the 10,000-row threshold). The app's role
    owns the table, not the catalog: no superuser needed."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM posts_post")
        have = cursor.fetchone()[0]
        if rows > have:
            cursor.execute(
                "INSERT INTO posts_post (author_id, title, body, created_at, updated_at) "
                "SELECT author_id, title, body, created_at, updated_at FROM posts_post "
                "CROSS JOIN generate_series(1, %s) LIMIT %s",
                [rows, rows - have],
            )
        else:
            cursor.execute(
                "DELETE FROM posts_post WHERE id IN (SELECT id FROM posts_post LIMIT %s)",
                [have - rows],
            )
        cursor.execute("ANALYZE posts_post")
        transaction.set_rollback(True)


def test_large_unfiltered_list_reports_the_estimate(api_client, settings):
    settings.PAGINATION_ESTIMATE_ABOVE = 20
    PostFactory.create_batch(30)
    _set_estimate(1000)
    body = api_client.get(LIST_URL).json()
    assert body["count"] == 1000
    assert len(body["results"]) == 20


def test_page_past_a_low_estimate_is_still_served(api_client, settings):
    settings.PAGINATION_ESTIMATE_ABOVE = 20
    PostFactory.create_batch(45)
    _set_estimate(25)  # two pages by the estimate; three exist
    response = api_client.get(LIST_URL + "?page=3")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 45
    assert len(body["results"]) == 5
    assert api_client.get(LIST_URL + "?page=4").status_code == 404


def test_filtered_list_and_small_tables_count_exactly(api_client, settings):
    settings.PAGINATION_ESTIMATE_ABOVE = 20
    author = UserFactory()
    PostFactory.create_batch(3, author=author)
    PostFactory.create_batch(27)
    _set_estimate(1000)
    assert api_client.get(LIST_URL, {"author": author.id}).json()["count"] == 3
    settings.PAGINATION_ESTIMATE_ABOVE = 0
    assert api_client.get(LIST_URL).json()["count"] == 30


def test_estimate_is_kept_a_few_seconds_per_process(api_client, settings):
    """The estimate is asked once and then reused (it changes only on ANALYZE); exact
    counts never are."""
    from django.test.utils import CaptureQueriesContext

    settings.PAGINATION_ESTIMATE_ABOVE = 20
    PostFactory.create_batch(30)
    _set_estimate(1000)

    def count_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            count = api_client.get(LIST_URL).json()["count"]
        return count, sum("pg_class" in q["sql"] for q in queries.captured_queries)

    assert count_queries() == (1000, 1)
    assert count_queries() == (1000, 0)
    settings.PAGINATION_ESTIMATE_CACHE_SECONDS = 0
    settings.PAGINATION_ESTIMATE_ABOVE = 5000  # exact from now on: 30 rows
    assert count_queries() == (30, 1)
    assert count_queries() == (30, 1)
