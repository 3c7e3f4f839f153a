"""Trigram (pg_trgm) GIN indexes for ``?search=``: DRF's SearchFilter matches each term with
``icontains``, which Django writes as ``UPPER(column) LIKE UPPER('%term%')``; an index on
``UPPER(column)`` with ``gin_trgm_ops`` serves exactly that expression, so search results are
the same as before, found through the index instead of by reading every post.

pg_trgm is a trusted extension (PostgreSQL 13+): the owner of the database may create it, no
superuser needed. The indexes are built CONCURRENTLY (so the migration is not atomic): on a
large table the build takes minutes, and posts stay writable meanwhile. PostgreSQL only; on
SQLite (development) the operations do nothing.

ANALYZE (and autovacuum's auto-analyze) evaluates an index's expression on every sampled row
(30,000) and keeps the values: UPPER(body) of 30,000 posts of up to 10 KB is hundreds of MB, which
got the server OOM-killed in its 512 MB container at 100,000 posts. Bodies are too wide for
PostgreSQL to keep statistics of anyway, so none are gathered for that expression."""

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.operations import AddIndexConcurrently, TrigramExtension
from django.db import migrations
from django.db.models.functions import Upper


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def body_index_without_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER INDEX post_body_trgm_idx ALTER COLUMN 1 SET STATISTICS 0")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("posts", "0001_initial"),
    ]

    operations = [
        TrigramExtension(),
        AddIndexConcurrentlyOnPostgres(
            model_name="post",
            index=GinIndex(
                OpClass(Upper("title"), name="gin_trgm_ops"), name="post_title_trgm_idx"
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="post",
            index=GinIndex(OpClass(Upper("body"), name="gin_trgm_ops"), name="post_body_trgm_idx"),
        ),
        migrations.RunPython(body_index_without_statistics, migrations.RunPython.noop),
    ]
