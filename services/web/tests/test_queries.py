"""The post list's compiled SQL kept per slice (apps.core.queries): the same rows as Django
compiling every time, never another query's rows, and never stale data."""

import pytest
from django.db import connection
from django.db.models.query import ValuesIterable

from apps.core import queries
from apps.posts import selectors
from tests.factories import PostFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/posts/"


@pytest.fixture(autouse=True)
def _fresh():
    queries.forget_compiled()
    yield
    queries.forget_compiled()


def _compiled_every_time(queryset):
    plain = queryset.all()
    plain._iterable_class = ValuesIterable
    return list(plain)


def test_pages_are_the_rows_django_compiles():
    PostFactory.create_batch(45)
    for bottom, top in [(0, 20), (20, 40), (40, 60), (0, 20), (3, 7), (20, 40)]:
        page = selectors.post_rows()[bottom:top]
        assert list(page) == _compiled_every_time(page)


def test_kept_sql_reads_the_current_rows():
    first = PostFactory.create_batch(3)
    assert [row["id"] for row in selectors.post_rows()[0:20]] == [p.id for p in reversed(first)]
    newer = PostFactory(title="written after the SQL was kept")
    first[0].delete()
    rows = list(selectors.post_rows()[0:20])
    assert [row["id"] for row in rows] == [newer.id, first[2].id, first[1].id]
    assert rows[0]["title"] == "written after the SQL was kept"


def test_a_filter_or_another_ordering_on_the_same_slice_is_never_served_the_kept_sql():
    alice, bob = UserFactory(), UserFactory()
    PostFactory.create_batch(3, author=alice)
    PostFactory.create_batch(3, author=bob)
    everyone = list(selectors.post_rows()[0:5])
    assert {row["author_id"] for row in everyone} == {alice.id, bob.id}
    only_alice = list(selectors.post_rows().filter(author=alice)[0:5])
    assert {row["author_id"] for row in only_alice} == {alice.id}
    oldest_first = list(selectors.post_rows().order_by("created_at", "id")[0:5])
    assert [row["id"] for row in oldest_first] == sorted(row["id"] for row in oldest_first)
    assert oldest_first != everyone[:5]
    searched = list(selectors.post_rows().filter(title__icontains="no such title")[0:5])
    assert searched == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's dates need converters")
def test_the_unfiltered_list_compiles_its_page_once(api_client):
    PostFactory.create_batch(25)
    responses = [api_client.get(LIST_URL) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json() == responses[2].json()
    assert queries.stats["compiled"] == 1
    assert queries.stats["hits"] >= 2
    # The second page is a slice of its own; a search is compiled as usual, never kept.
    assert api_client.get(LIST_URL + "?page=2").json()["results"]
    assert api_client.get(LIST_URL + "?search=zzz").json()["results"] == []
    assert queries.stats["compiled"] == 2
