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


def table_count(queryset) -> tuple[int, bool] | None:
    """``(count, estimated)`` in one query when the queryset is a whole PostgreSQL table (no
    filter): the planner's row estimate when it is at least ``PAGINATION_ESTIMATE_ABOVE``, else
    the exact ``COUNT(*)``. None for anything else (then the caller counts as usual).
    ``COUNT(*)`` scans every row: on a large table it costs more than the page itself."""
    threshold = settings.PAGINATION_ESTIMATE_ABOVE
    if not threshold or not hasattr(queryset, "query"):
        return None
    query = queryset.query
    connection = connections[queryset.db]
    if (
        connection.vendor != "postgresql"
        or query.where
        or query.distinct
        or query.combinator
        or query.is_sliced
    ):
        return None
    table = queryset.model._meta.db_table
    # The estimate changes only when autovacuum analyzes the table: kept a few seconds per
    # process (DJANGO_PAGINATION_ESTIMATE_CACHE_SECONDS), it saves a query on every page.
    key = (queryset.db, table, threshold)
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
    """Django's paginator with a cheap count on large unfiltered tables (``table_count``).
    A page past the estimated end falls back to the exact count, so every page stays
    reachable."""

    estimated = False

    @cached_property
    def count(self) -> int:
        counted = table_count(self.object_list)
        if counted is None:
            return DjangoPaginator.count.real_func(self)
        count, self.estimated = counted
        return count

    def validate_number(self, number):
        try:
            return super().validate_number(number)
        except EmptyPage:
            if not self.estimated:
                raise
            self.estimated = False
            self.__dict__["count"] = DjangoPaginator.count.real_func(self)
            self.__dict__.pop("num_pages", None)
            return super().validate_number(number)


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M``: 20 per page by default. ``page_size`` must be an integer from 1
    to 100 and ``page`` an integer from 1 (anything else is a 400 naming the parameter; a page
    past the end is a 404). On a table of more than ``DJANGO_PAGINATION_ESTIMATE_ABOVE`` rows
    an unfiltered list's ``count`` is PostgreSQL's estimate (kept current by autovacuum), not
    ``COUNT(*)``."""

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
