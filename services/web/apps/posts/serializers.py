from django.utils import timezone
from rest_framework import serializers

from apps.core.validation import StrictCharField, StrictInputMixin
from apps.posts.models import BODY_MAX_LENGTH, TITLE_MAX_LENGTH


class AuthorSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField in the project's time zone (``TIME_ZONE``), passed as its public
    ``default_timezone``: DRF would otherwise look up the current time zone (a context-local
    read) for every value it writes, two per post (docs/benchmarks.md). The app never activates
    another time zone, so the output is the same."""

    def __init__(self, **kwargs):
        kwargs.setdefault("default_timezone", timezone.get_default_timezone())
        super().__init__(**kwargs)


class PostSerializer(StrictInputMixin, serializers.Serializer):
    """A post: the one representation of a post, in the API, the bench view and JSON exports.
    ``author`` is always the requesting user (read-only). Strings only, no NUL characters, no
    unknown or read-only keys, and the model's max lengths apply (400, never a database
    error)."""

    # Declared, not derived from the model (ModelSerializer): DRF builds a serializer's fields
    # for every request, and deriving them from the model took about a tenth of a page of
    # posts' CPU, copying declared ones a third of that (docs/benchmarks.md). The lengths are
    # the model's constants; writes go through apps/posts/services.py with validated_data.
    id = serializers.IntegerField(read_only=True)
    title = StrictCharField(max_length=TITLE_MAX_LENGTH)
    body = StrictCharField(max_length=BODY_MAX_LENGTH, allow_blank=True, required=False)
    author = AuthorSerializer(read_only=True)
    created_at = DateTimeField(read_only=True)
    updated_at = DateTimeField(read_only=True)
