"""Pages of the post list, counted as cheaply as the list allows."""

from rest_framework.exceptions import ValidationError

from apps.core.pagination import (
    CursorPagination,
    PageNumberPagination,
    Paginator,
    TableCountPaginator,
)
from apps.posts.filters import PostFilter, SearchFilter

# A term found in most posts matches tens of thousands of rows, and an exact COUNT(*) must check
# each one's body (the trigram index only narrows the candidates): seconds of work per request.
# Counting stops here instead; the page itself is cheap either way.
SEARCH_COUNT_LIMIT = 1000


class SearchPaginator(Paginator):
    """A searched list's ``count`` is exact up to ``SEARCH_COUNT_LIMIT`` matches; above that it
    is ``SEARCH_COUNT_LIMIT`` (at least that many). A page past it is still served when asked
    for: the count is then exact, bounded by the statement timeout like any query."""

    def cheap_count(self):
        # No ORDER BY: the scan stops at the first SEARCH_COUNT_LIMIT + 1 matches.
        counted = self.object_list.order_by()[: SEARCH_COUNT_LIMIT + 1].count()
        if counted <= SEARCH_COUNT_LIMIT:
            return counted, False
        return SEARCH_COUNT_LIMIT, True


def narrowed_by_filters(request) -> bool:
    """Whether the query string asks for part of the posts (a filter other than ordering)."""
    return any(
        request.query_params.get(name) for name in PostFilter.base_filters if name != "ordering"
    )


class PostCursorPagination(CursorPagination):
    """Posts newest first, the list's default order (``created_at`` is indexed)."""

    ordering = ("-created_at", "-id")


CURSOR_DESCRIPTION = (
    "Cursor pagination, chosen by the client: present (empty for the first page), the answer "
    "has no `count` and its `next` and `previous` links carry the cursor. Every page costs the "
    "same, however deep; page numbers cost more the deeper the page. Posts come newest first: "
    "not combined with `page` or `ordering` (400)."
)


class PostPagination(PageNumberPagination):
    """The post list's pagination, page numbers unless the client asks for a cursor.

    Page numbers (``?page=``): a search counts with ``SearchPaginator``, a filtered list
    exactly, and the whole list (any ordering) with ``TableCountPaginator``: on a table of more
    than ``DJANGO_PAGINATION_ESTIMATE_ABOVE`` rows its ``count`` is PostgreSQL's estimate
    (kept current by autovacuum), not ``COUNT(*)``.

    Cursor (``?cursor=``, empty for the first page): ``PostCursorPagination``, no count."""

    cursor_query_param = PostCursorPagination.cursor_query_param
    cursor = None  # the PostCursorPagination serving this request, if the client chose it

    def paginate_queryset(self, queryset, request, view=None):
        if self.cursor_query_param in request.query_params:
            self.cursor = PostCursorPagination()
            self._refuse_with_cursor(request, self.page_query_param, "ordering")
            return self.cursor.paginate_queryset(queryset, request, view)
        if SearchFilter().get_search_terms(request):
            self.django_paginator_class = SearchPaginator
        elif narrowed_by_filters(request):
            self.django_paginator_class = Paginator
        else:
            self.django_paginator_class = TableCountPaginator
        return super().paginate_queryset(queryset, request, view)

    def _refuse_with_cursor(self, request, *names):
        for name in names:
            if name in request.query_params:
                raise ValidationError(
                    {
                        name: [
                            f"Cannot be combined with {self.cursor_query_param} (posts by cursor "
                            "come newest first)."
                        ]
                    }
                )

    def get_paginated_response(self, data):
        if self.cursor is not None:
            return self.cursor.get_paginated_response(data)
        return super().get_paginated_response(data)

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = [name for name in paginated["required"] if name != "count"]
        paginated["properties"]["count"]["description"] = "Absent when paginated by cursor."
        return paginated

    def get_schema_operation_parameters(self, view):
        return [
            *super().get_schema_operation_parameters(view),
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": CURSOR_DESCRIPTION,
                "schema": {"type": "string"},
            },
        ]
