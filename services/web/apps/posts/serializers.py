from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone
from rest_framework import serializers

from apps.core.validation import StrictModelSerializer
from apps.posts.models import Post


class AuthorSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]
        read_only_fields = fields


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField in the project's time zone (``TIME_ZONE``), passed as its public
    ``default_timezone``: DRF would otherwise look up the current time zone (a context-local
    read) for every value it writes, two per post (docs/benchmarks.md). The app never activates
    another time zone, so the output is the same."""

    def __init__(self, **kwargs):
        kwargs.setdefault("default_timezone", timezone.get_default_timezone())
        super().__init__(**kwargs)


class PostSerializer(StrictModelSerializer):
    """A post: the one representation of a post, in the API, the bench view and JSON exports.
    ``author`` is always the requesting user (read-only). Strings only, no NUL characters, no
    unknown or read-only keys, and the model's max lengths apply (400, never a database
    error)."""

    serializer_field_mapping = {
        **StrictModelSerializer.serializer_field_mapping,
        models.DateTimeField: DateTimeField,
    }

    author = AuthorSerializer(read_only=True)

    class Meta:
        model = Post
        fields = ["id", "title", "body", "author", "created_at", "updated_at"]
        read_only_fields = ["id", "author", "created_at", "updated_at"]
