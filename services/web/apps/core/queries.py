"""Compiled SQL kept for the hottest reads: a page of a whole table as plain rows.

Django compiles a queryset into SQL on every evaluation. For the first pages of the post list
(no filter: the same SQL every time) that compilation was about 15% of a request's CPU and
building the queryset another 7% (profiled with py-spy under the S3 benchmark). ``.values()``
querysets built with ``ReusedSQLValuesIterable`` keep the SQL of each whole-table slice they
run and run it again for a query equal to it: same model, same columns, same ordering, same
slice, every attribute of Django's ``Query`` equal. Anything else (a filter, another ordering,
a database that needs value converters) is compiled as usual.

On PostgreSQL the kept SQL is also planned once per connection: a connection that runs it a
second time prepares it (``PREPARE``) and runs it by name from then on (``EXECUTE``), which
skips parsing and planning (0.15 ms of planning for 0.1 ms of execution on the post list).
Only outside transactions, where a failed statement spoils nothing; a statement the server no
longer knows is run as plain SQL again. ``DJANGO_DB_PREPARED_STATEMENTS=0`` turns it off.
"""

import hashlib

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import DatabaseError, connections
from django.db.models.query import ValuesIterable

# SQLSTATEs: invalid_sql_statement_name (EXECUTE of an unknown name), duplicate_prepared_statement.
_STATEMENT_GONE = {"26000", "42P05"}

# (database alias, model, offset, limit) -> (the Query's attributes, SQL, params, column names).
# Per process; bounded (a crawler walking every page must not grow it without end).
_compiled: dict[tuple, tuple[dict, str, tuple, list[str]]] = {}
MAX_ENTRIES = 256
stats = {"hits": 0, "compiled": 0}


def forget_compiled() -> None:
    _compiled.clear()
    stats.update(hits=0, compiled=0)


class ReusedSQLValuesIterable(ValuesIterable):
    """``ValuesIterable`` that runs the SQL kept for an equal whole-table query when there is one
    (``queryset.values(...)`` then ``queryset._iterable_class = ReusedSQLValuesIterable``)."""

    def __iter__(self):
        queryset = self.queryset
        query = queryset.query
        if query.where or self.chunked_fetch:
            yield from super().__iter__()
            return
        key = (queryset.db, query.model, query.low_mark, query.high_mark)
        entry = _compiled.get(key)
        if entry is None or entry[0] != query.__dict__:
            entry = self._compile(key, queryset)
            if entry is None:
                yield from super().__iter__()
                return
        else:
            stats["hits"] += 1
        _, sql, params, names = entry
        for row in _run(connections[queryset.db], sql, params):
            yield dict(zip(names, row, strict=True))

    @staticmethod
    def _compile(key, queryset):
        """Compile a copy of the query; keep the SQL when the rows need nothing more than the
        database driver gives (no converters, no columns added for ordering)."""
        query = queryset.query
        attributes = dict(query.__dict__)  # before compiling anything
        compiler = query.clone().get_compiler(queryset.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return None
        fields = [column[0] for column in compiler.select[0 : compiler.col_count]]
        if (
            not sql
            or compiler.has_extra_select
            or compiler.get_converters(fields)
            or compiler.has_composite_fields(fields)
        ):
            return None
        if query.selected:
            names = list(query.selected)
        else:
            names = [*query.extra_select, *query.values_select, *query.annotation_select]
        if len(names) != compiler.col_count:
            return None
        if len(_compiled) >= MAX_ENTRIES:
            _compiled.clear()
        entry = (attributes, sql, tuple(params), names)
        _compiled[key] = entry
        stats["compiled"] += 1
        return entry


def _run(connection, sql: str, params: tuple) -> list[tuple]:
    """Run kept SQL: prepared on the second run on a connection, by name after that."""
    with connection.cursor() as cursor:
        if not _can_prepare(connection, params):
            cursor.execute(sql, params)
            return cursor.fetchall()
        raw = connection.connection
        state = getattr(connection, "_kept_statements", None)
        if state is None or state[0] is not raw:  # a new connection: nothing prepared on it
            state = connection._kept_statements = (raw, {})
        runs = state[1]
        name = "kept_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:20]
        count = runs.get(name, 0)
        # The second run prepares and runs in one round trip. The (empty) params are passed
        # every time, so "%%" reads the same in all three forms.
        if count == 0:
            statement = sql
        elif count == 1:
            statement = f"PREPARE {name} AS {sql}; EXECUTE {name}"
        else:
            statement = f"EXECUTE {name}"
        try:
            cursor.execute(statement, params)
        except DatabaseError as exc:
            if count == 0 or getattr(exc.__cause__, "pgcode", None) not in _STATEMENT_GONE:
                raise
            runs.clear()  # the session is not what we thought (reset, or a pooler's)
            cursor.execute(sql, params)
            return cursor.fetchall()
        runs[name] = count + 1
        return cursor.fetchall()


def _can_prepare(connection, params: tuple) -> bool:
    return (
        settings.DB_PREPARED_STATEMENTS
        and connection.vendor == "postgresql"
        and not params  # the kept SQL of a whole-table page has none
        and not connection.in_atomic_block
        and connection.get_autocommit()
    )
