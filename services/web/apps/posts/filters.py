import re

import django_filters
from django import forms
from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import filters
from rest_framework.exceptions import ValidationError

from apps.core.validation import parse_positive_int, text_param
from apps.posts.models import Post

# pg_trgm finds a term through its trigram index only when the term holds at least one trigram:
# three letters or digits in a row. A search with no such term would read every post; one with
# such a term reads only the posts the index finds, and checks the other terms on those.
SEARCH_MIN_RUN = 3
_ALNUM_RUN = re.compile(rf"[^\W_]{{{SEARCH_MIN_RUN},}}")


class SearchFilter(filters.SearchFilter):
    """DRF's search (``?search=``), split as DRF splits it (whitespace and commas; a quoted
    phrase is one term), with bounded work: posts are found through their trigram indexes
    (migration 0002), so at least one term must hold ``SEARCH_MIN_RUN`` letters or digits in a
    row; more than ``DJANGO_SEARCH_MAX_TERMS`` terms, or a term longer than
    ``DJANGO_SEARCH_MAX_TERM_LENGTH`` characters, is a 400 naming the limit. NUL characters are
    a 400 too: PostgreSQL cannot compare them, and the schema's pattern excludes them."""

    @property
    def search_description(self):
        return (
            "Words or quoted phrases found in the title or body, separated by spaces or "
            f"commas: at most {settings.SEARCH_MAX_TERMS} terms of at most "
            f"{settings.SEARCH_MAX_TERM_LENGTH} characters each, one of them with at least "
            f"{SEARCH_MIN_RUN} letters or digits in a row (anything else is a 400)."
        )

    def get_search_terms(self, request):
        text_param(request, self.search_param)
        # An empty quoted phrase ("") narrows nothing: not a term.
        terms = [term for term in super().get_search_terms(request) if term]
        max_terms, max_length = settings.SEARCH_MAX_TERMS, settings.SEARCH_MAX_TERM_LENGTH
        if len(terms) > max_terms:
            self._refuse(f"At most {max_terms} search terms are allowed, not {len(terms)}.")
        longest = max(map(len, terms), default=0)
        if longest > max_length:
            self._refuse(f"A search term may have at most {max_length} characters, not {longest}.")
        if terms and not any(map(_ALNUM_RUN.search, terms)):
            self._refuse(
                f"A search needs a term with at least {SEARCH_MIN_RUN} letters or digits in a "
                "row (shorter ones cannot be looked up in the index)."
            )
        return terms

    def _refuse(self, message: str):
        raise ValidationError({self.search_param: [message]})


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
