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


def _prepared_here() -> list[str]:
    """The kept statements prepared in this connection's PostgreSQL session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'kept\\_%%'")
        return [row[0] for row in cursor.fetchall()]


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements: PostgreSQL's"
)


@pytest.fixture
def fresh_session():
    """Nothing prepared yet in this connection's session (earlier tests share it)."""
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    connection.__dict__.pop("_kept_statements", None)


@postgres_only
@pytest.mark.django_db(transaction=True)  # outside a transaction, as requests run
def test_a_page_run_twice_on_a_connection_is_prepared_and_gives_the_same_rows(
    settings, fresh_session
):
    settings.DB_PREPARED_STATEMENTS = True
    PostFactory.create_batch(5)
    pages = [list(selectors.post_rows()[0:3]) for _ in range(4)]
    assert pages[0] == pages[1] == pages[2] == pages[3]
    assert pages[0] == _compiled_every_time(selectors.post_rows()[0:3])
    assert len(_prepared_here()) == 1
    newer = PostFactory()
    assert next(iter(selectors.post_rows()[0:3]))["id"] == newer.id  # the rows, never kept


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_statement_the_server_forgot_is_run_as_plain_sql_then_prepared_again(
    settings, fresh_session
):
    settings.DB_PREPARED_STATEMENTS = True
    PostFactory.create_batch(5)
    expected = _compiled_every_time(selectors.post_rows()[0:3])
    for _ in range(3):
        assert list(selectors.post_rows()[0:3]) == expected
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as a session reset (or a pooler) would
    for _ in range(3):
        assert list(selectors.post_rows()[0:3]) == expected
    assert len(_prepared_here()) == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_no_prepared_statement_when_turned_off_or_inside_a_transaction(settings, fresh_session):
    from django.db import transaction

    PostFactory.create_batch(5)
    settings.DB_PREPARED_STATEMENTS = False
    for _ in range(3):
        list(selectors.post_rows()[0:3])
    assert _prepared_here() == []
    settings.DB_PREPARED_STATEMENTS = True
    with transaction.atomic():
        for _ in range(3):
            list(selectors.post_rows()[0:3])
        assert _prepared_here() == []
