import django_filters
from django import forms
from drf_spectacular.utils import extend_schema_field
from rest_framework import filters

from apps.core.validation import parse_positive_int, text_param
from apps.posts.models import Post


class SearchFilter(filters.SearchFilter):
    """DRF's search (``?search=``), refusing NUL characters with a 400: PostgreSQL cannot
    compare them, and the schema's pattern excludes them."""

    def get_search_terms(self, request):
        text_param(request, self.search_param)
        return super().get_search_terms(request)


MAX_ID = 2**63 - 1  # PostgreSQL bigint


class IdField(forms.Field):
    """A database id: plain digits, 1 to 2**63-1 (anything else is a 400)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        number = parse_positive_int(str(value))
        if number is None or number > MAX_ID:
            raise forms.ValidationError(f"Enter an integer between 1 and {MAX_ID}.", "invalid")
        return number


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(django_filters.Filter):
    field_class = IdField


class StableOrderingFilter(django_filters.OrderingFilter):
    """Ordering with ``id`` as a tie-breaker, so pages never repeat or skip rows."""

    def filter(self, qs, value):
        if not value:
            return qs
        ordering = [self.get_ordering_value(param) for param in value]
        return qs.order_by(*ordering, "-id" if ordering[-1].startswith("-") else "id")


class PostFilter(django_filters.FilterSet):
    author = IdFilter(field_name="author_id", help_text="Author's user id.")
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
