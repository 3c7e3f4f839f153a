"""apps/accounts/migrations/0001_hash_authtoken_keys.py on a database with DRF authtoken keys:
every old key authenticates after the migration, and no plain-text key remains (the old table
is left empty for a rollback)."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from knox.models import AuthToken
from rest_framework.test import APIClient

MIGRATION = ("accounts", "0001_hash_authtoken_keys")
OLD_KEY = "0123456789abcdef0123456789abcdef01234567"  # DRF's format: 40 hexadecimal digits


def migrate(target) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def create_authtoken_table(user_id: int) -> None:
    """The table and migration records DRF's authtoken app left behind (its 0004 schema)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
            "created timestamptz NOT NULL, "
            "user_id integer NOT NULL UNIQUE REFERENCES auth_user (id))"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [OLD_KEY, user_id])
        cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) "
            "VALUES ('authtoken', '0001_initial', now())"
        )


@pytest.mark.django_db(transaction=True)
def test_old_keys_keep_working_and_leave_no_plain_text():
    user = get_user_model().objects.create_user("legacy", password="x" * 20)
    migrate(("accounts", None))
    create_authtoken_table(user.pk)

    migrate(MIGRATION)

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {OLD_KEY}")
    response = client.get("/api/me/")
    assert response.status_code == 200, response.content
    assert response.json()["username"] == "legacy"
    row = AuthToken.objects.get(user=user)
    assert row.expiry is None
    assert OLD_KEY not in row.digest
    with connection.cursor() as cursor:  # kept, empty, for a rollback to the old release
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
        cursor.execute("DROP TABLE authtoken_token")
        cursor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


@pytest.mark.django_db(transaction=True)
def test_a_new_database_migrates_without_the_old_table():
    migrate(("accounts", None))
    migrate(MIGRATION)
    assert "authtoken_token" not in connection.introspection.table_names()
