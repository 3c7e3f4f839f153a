from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticatedOrReadOnly

from apps.core.filters import FilterBackend
from apps.core.pagination import Paginator
from apps.posts import selectors
from apps.posts.filters import PostFilter, SearchFilter
from apps.posts.pagination import PostPagination
from apps.posts.permissions import IsAuthorOrReadOnly
from apps.posts.serializers import PostSerializer, row_representation


@extend_schema_view(
    list=extend_schema(summary="List posts (public, paginated)"),
    retrieve=extend_schema(summary="Read a post (public)"),
    create=extend_schema(summary="Create a post as the requesting user"),
    update=extend_schema(summary="Replace a post (author only)"),
    partial_update=extend_schema(summary="Change a post (author only)"),
    destroy=extend_schema(summary="Delete a post (author only)"),
)
class PostViewSet(viewsets.ModelViewSet):
    """Posts: anyone reads, signed-in users write, only the author changes or deletes."""

    serializer_class = PostSerializer
    permission_classes = [IsAuthenticatedOrReadOnly, IsAuthorOrReadOnly]
    filterset_class = PostFilter
    search_fields = ["title", "body"]
    pagination_class = PostPagination

    filter_backends = [FilterBackend, SearchFilter]

    def get_queryset(self):
        # A list only shows posts: plain rows. Everything else works on model instances
        # (object permissions, updates).
        if self.action == "list":
            return selectors.post_rows()
        return selectors.post_list()

    def perform_create(self, serializer):
        serializer.save(author=self.request.user)


@require_GET
def bench_posts(request: HttpRequest) -> JsonResponse:
    """Bench only (``DJANGO_BENCH_VIEWS``): the first page of ``/api/posts/`` (same 20 rows,
    same fields, same count strategy, same row function) as a bare Django view, to price
    DRF's own overhead: authentication, throttles, filters, pagination, rendering."""
    if not settings.BENCH_VIEWS:
        raise Http404
    queryset = selectors.post_rows()
    page_size = settings.REST_FRAMEWORK["PAGE_SIZE"]
    count = Paginator(queryset, page_size).count
    zone = timezone.get_current_timezone()
    rows = [row_representation(row, zone) for row in queryset[:page_size]]
    next_url = None
    if count > page_size:
        next_url = request.build_absolute_uri(reverse("post-list") + "?page=2")
    return JsonResponse({"count": count, "next": next_url, "previous": None, "results": rows})
