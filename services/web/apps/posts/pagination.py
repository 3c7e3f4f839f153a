"""Pages of a searched post list, with a bounded count."""

from django.utils.functional import cached_property

from apps.core.pagination import PageNumberPagination, Paginator
from apps.posts.filters import SearchFilter

# A term found in most posts matches tens of thousands of rows, and an exact COUNT(*) must check
# each one's body (the trigram index only narrows the candidates): seconds of work per request.
# Counting stops here instead; the page itself is cheap either way.
SEARCH_COUNT_LIMIT = 1000


class SearchPaginator(Paginator):
    """A searched list's ``count`` is exact up to ``SEARCH_COUNT_LIMIT`` matches; above that it
    is ``SEARCH_COUNT_LIMIT`` (at least that many). A page past it is still served when asked
    for: the count is then exact (``Paginator.validate_number``), bounded by the statement
    timeout like any query."""

    @cached_property
    def count(self) -> int:
        # No ORDER BY: the scan stops at the first SEARCH_COUNT_LIMIT + 1 matches.
        counted = self.object_list.order_by()[: SEARCH_COUNT_LIMIT + 1].count()
        if counted <= SEARCH_COUNT_LIMIT:
            return counted
        self.estimated = True
        return SEARCH_COUNT_LIMIT


class PostPagination(PageNumberPagination):
    """The API's pagination; a list narrowed by ``?search=`` counts with ``SearchPaginator``."""

    def paginate_queryset(self, queryset, request, view=None):
        searching = bool(SearchFilter().get_search_terms(request))
        self.django_paginator_class = SearchPaginator if searching else Paginator
        return super().paginate_queryset(queryset, request, view)
