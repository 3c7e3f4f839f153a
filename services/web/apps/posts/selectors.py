"""Read queries for posts, shared by the API, the bench view and exports."""

import functools

from django.db.models import QuerySet

from apps.core.queries import ReusedSQLValuesIterable
from apps.posts.models import Post


def post_list() -> QuerySet[Post]:
    """Posts newest first with their author joined in: one query per page, whatever its size."""
    return Post.objects.select_related("author").order_by("-created_at", "-id")


# What a post's representation needs (apps.posts.serializers.row_representation).
ROW_FIELDS = ("id", "title", "body", "created_at", "updated_at", "author_id", "author__username")


def post_rows() -> QuerySet:
    """``post_list()`` as plain rows (dicts of ``ROW_FIELDS``), for pages that only show posts:
    no model instances to build (a tenth of a list request, profiled with py-spy). Built once
    per process and copied (``.all()``); an unfiltered page runs SQL compiled once
    (``apps.core.queries``)."""
    return _post_rows().all()


@functools.cache
def _post_rows() -> QuerySet:
    rows = post_list().values(*ROW_FIELDS)
    rows._iterable_class = ReusedSQLValuesIterable  # no public API for a values() iterable
    return rows


def posts_by_author(user) -> QuerySet[Post]:
    return post_list().filter(author=user)
