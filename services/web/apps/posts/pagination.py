"""Pages of the post list, counted as cheaply as the list allows."""

from apps.core.pagination import PageNumberPagination, Paginator, TableCountPaginator
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


class PostPagination(PageNumberPagination):
    """The post list's pagination: a search counts with ``SearchPaginator``, a filtered list
    exactly, and the whole list (any ordering) with ``TableCountPaginator``: on a table of more
    than ``DJANGO_PAGINATION_ESTIMATE_ABOVE`` rows its ``count`` is PostgreSQL's estimate
    (kept current by autovacuum), not ``COUNT(*)``."""

    def paginate_queryset(self, queryset, request, view=None):
        if SearchFilter().get_search_terms(request):
            self.django_paginator_class = SearchPaginator
        elif narrowed_by_filters(request):
            self.django_paginator_class = Paginator
        else:
            self.django_paginator_class = TableCountPaginator
        return super().paginate_queryset(queryset, request, view)
