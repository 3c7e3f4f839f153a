from django.contrib.auth import get_user_model
from rest_framework import serializers

from apps.core.validation import StrictModelSerializer
from apps.posts.models import Post


class AuthorSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]
        read_only_fields = fields


class PostSerializer(StrictModelSerializer):
    """A post: the one representation of a post, in the API, the bench view and JSON exports.
    ``author`` is always the requesting user (read-only). Strings only, no NUL characters, no
    unknown or read-only keys, and the model's max lengths apply (400, never a database
    error)."""

    author = AuthorSerializer(read_only=True)

    class Meta:
        model = Post
        fields = ["id", "title", "body", "author", "created_at", "updated_at"]
        read_only_fields = ["id", "author", "created_at", "updated_at"]
