"""Read queries for posts, shared by the API, the bench view and exports."""

from django.db.models import QuerySet

from apps.posts.models import Post


def post_list() -> QuerySet[Post]:
    """Posts newest first with their author joined in: one query per page, whatever its size."""
    return Post.objects.select_related("author").order_by("-created_at", "-id")


def posts_by_author(user) -> QuerySet[Post]:
    return post_list().filter(author=user)
