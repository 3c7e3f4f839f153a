"""Page-number pagination with bounded parameters, and a ``count`` that may cost less than
``COUNT(*)``: PostgreSQL's row estimate for a whole large table (``TableCountPaginator``); and
DRF's cursor pagination with the same bounded page size (``CursorPagination``)."""

import time

from django.conf import settings
from django.core.paginator import EmptyPage
from django.core.paginator import Paginator as DjangoPaginator
from django.db import connections
from django.utils.functional import cached_property
from rest_framework import pagination

from apps.core.validation import positive_int_param

# (database alias, table, threshold) -> (monotonic expiry, estimate); never an exact count.
_estimates: dict[tuple[str, str, int], tuple[float, int]] = {}


def forget_estimates() -> None:
    _estimates.clear()


def table_count(model, database: str = "default") -> tuple[int, bool] | None:
    """``(count, estimated)`` of ``model``'s whole table in one query on PostgreSQL: the
    planner's row estimate when it is at least ``PAGINATION_ESTIMATE_ABOVE``, else the exact
    ``COUNT(*)``. None when turned off (0) or on another database."""
    threshold = settings.PAGINATION_ESTIMATE_ABOVE
    connection = connections[database]
    if not threshold or connection.vendor != "postgresql":
        return None
    table = model._meta.db_table
    # The estimate changes only when autovacuum analyzes the table: each process keeps it
    # DJANGO_PAGINATION_ESTIMATE_CACHE_SECONDS, which saves a query per page.
    key = (database, table, threshold)
    cached = _estimates.get(key) if settings.PAGINATION_ESTIMATE_CACHE_SECONDS else None
    if cached is not None and cached[0] > time.monotonic():
        return cached[1], True
    # The table name is the model's own (quoted), never input.
    quoted = connection.ops.quote_name(table)
    sql = (
        "SELECT CASE WHEN reltuples >= %s THEN reltuples::bigint "  # noqa: S608
        f"ELSE (SELECT count(*) FROM {quoted}) END, "
        "reltuples >= %s FROM pg_class WHERE oid = to_regclass(%s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [threshold, threshold, table])
        row = cursor.fetchone()
    if row is None:
        return None
    count, estimated = int(row[0]), bool(row[1])
    if estimated and settings.PAGINATION_ESTIMATE_CACHE_SECONDS:
        _estimates[key] = (time.monotonic() + settings.PAGINATION_ESTIMATE_CACHE_SECONDS, count)
    return count, estimated


class Paginator(DjangoPaginator):
    """Django's paginator whose ``count`` may come from ``cheap_count()`` (None there: Django's
    exact count). When that count is an estimate (``estimated``) and a page lies past its end,
    the page is looked for again with the exact count, so every page stays reachable."""

    estimated = False
    exact = False  # True once a page past an estimate asked for the exact count

    def cheap_count(self) -> tuple[int, bool] | None:
        """``(count, estimated)`` for less than ``COUNT(*)``, or None to count exactly."""
        return None

    @cached_property
    def count(self) -> int:
        counted = None if self.exact else self.cheap_count()
        if counted is None:
            return super().count
        count, self.estimated = counted
        return count

    def validate_number(self, number):
        try:
            return super().validate_number(number)
        except EmptyPage:
            # Past the end of an estimate (so count and num_pages were read), or not a page.
            if not self.estimated or int(number) < 1:
                raise
        self.exact, self.estimated = True, False
        del self.count, self.num_pages  # cached properties: the next read computes them again
        return super().validate_number(number)


class TableCountPaginator(Paginator):
    """For a list of a whole table (nothing filtered out): ``table_count``."""

    def cheap_count(self):
        return table_count(self.object_list.model, self.object_list.db)


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M``: 20 per page by default. ``page_size`` must be an integer from 1
    to 100 and ``page`` an integer from 1 (anything else is a 400 naming the parameter; a page
    past the end is a 404)."""

    django_paginator_class = Paginator
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    last_page_strings = ()  # "page=last" would contradict the integer schema

    def get_page_size(self, request):
        return positive_int_param(
            request, self.page_size_query_param, self.page_size, self.max_page_size
        )

    def get_page_number(self, request, paginator):
        return positive_int_param(request, self.page_query_param, 1)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.page_query_param: {"minimum": 1},
            self.page_size_query_param: {
                "minimum": 1,
                "maximum": self.max_page_size,
                "default": self.page_size,
            },
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


class CursorPagination(pagination.CursorPagination):
    """DRF's cursor pagination (``?cursor=``; opaque ``next`` and ``previous`` links, no
    ``count``) with the page size of ``PageNumberPagination``: ``page_size`` from 1 to 100,
    default 20 (anything else is a 400). Every page costs the same: it starts where the last
    one ended (an index range), not after skipping the rows before it (OFFSET)."""

    page_size = PageNumberPagination.page_size
    page_size_query_param = PageNumberPagination.page_size_query_param
    max_page_size = PageNumberPagination.max_page_size

    def get_page_size(self, request):
        return positive_int_param(
            request, self.page_size_query_param, self.page_size, self.max_page_size
        )
