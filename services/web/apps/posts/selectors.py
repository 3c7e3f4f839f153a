"""Read queries for posts: the API, the bench view and exports read posts through these."""

from django.db.models import QuerySet

from apps.posts.models import Post


def post_list(*, author_id: int | None = None) -> QuerySet[Post]:
    """Posts newest first with their author joined in (one query per page, whatever its
    size); only ``author_id``'s when given."""
    posts = Post.objects.select_related("author").order_by("-created_at", "-id")
    if author_id is not None:
        posts = posts.filter(author_id=author_id)
    return posts
