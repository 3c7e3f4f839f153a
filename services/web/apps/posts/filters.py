import django_filters

from apps.posts.models import Post


class StableOrderingFilter(django_filters.OrderingFilter):
    """Ordering with ``id`` as a tie-breaker, so pages never repeat or skip rows."""

    def filter(self, qs, value):
        if not value:
            return qs
        ordering = [self.get_ordering_value(param) for param in value]
        return qs.order_by(*ordering, "-id" if ordering[-1].startswith("-") else "id")


class PostFilter(django_filters.FilterSet):
    author = django_filters.NumberFilter(field_name="author_id", help_text="Author's user id.")
    author_username = django_filters.CharFilter(
        field_name="author__username", help_text="Author's username (exact)."
    )
    ordering = StableOrderingFilter(
        fields=(("created_at", "created"), ("updated_at", "updated"), ("title", "title")),
        help_text="Sort by created, updated or title; prefix with - for descending.",
    )

    class Meta:
        model = Post
        fields = ["author", "author_username"]
