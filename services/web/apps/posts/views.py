from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticatedOrReadOnly

from apps.core.filters import FilterBackend
from apps.core.pagination import TableCountPaginator
from apps.posts import selectors, services
from apps.posts.filters import PostFilter, SearchFilter
from apps.posts.pagination import PostPagination
from apps.posts.permissions import IsAuthorOrReadOnly
from apps.posts.serializers import PostSerializer


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
        return selectors.post_list()

    def perform_create(self, serializer):
        serializer.instance = services.post_create(
            author=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.post_update(
            post=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.post_delete(post=instance)


def _iso(value) -> str:
    """A datetime as DRF writes it (ISO 8601, UTC as ``Z``)."""
    return value.isoformat().replace("+00:00", "Z")


@require_GET
def bench_posts(request: HttpRequest) -> JsonResponse:
    """Bench only (``DJANGO_BENCH_VIEWS``): the rows of the first page of ``/api/posts/`` (same
    query, same count, same JSON) from a plain Django view: ``.values()`` rows written out by
    hand, no DRF. It prices what DRF costs around the same rows: authentication, throttles,
    filters, pagination, serializers, content negotiation and rendering."""
    if not settings.BENCH_VIEWS:
        raise Http404
    page_size = settings.REST_FRAMEWORK["PAGE_SIZE"]
    rows = selectors.post_list().values(
        "id", "title", "body", "author_id", "author__username", "created_at", "updated_at"
    )
    paginator = TableCountPaginator(rows, page_size)
    page = paginator.page(1)
    results = [
        {
            "id": row["id"],
            "title": row["title"],
            "body": row["body"],
            "author": {"id": row["author_id"], "username": row["author__username"]},
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }
        for row in page.object_list
    ]
    next_url = None
    if page.has_next():
        next_url = request.build_absolute_uri(reverse("post-list") + "?page=2")
    return JsonResponse(
        {"count": paginator.count, "next": next_url, "previous": None, "results": results}
    )
