from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M``: 20 per page by default; a larger ``page_size`` than 100 is
    capped at 100 and a non-numeric one falls back to the default (never an error)."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
