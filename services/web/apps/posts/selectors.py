"""Read queries for posts: the API, the bench view and exports read posts through these."""

from django.db.models import QuerySet

from apps.posts.models import Post

# Every column of a post, and of its author only what a post shows (PostSerializer): not the
# password hash, e-mail, names and dates of auth_user, which would be read, converted and set on
# 20 model instances per page for nothing.
POST_COLUMNS = [field.name for field in Post._meta.concrete_fields]
AUTHOR_COLUMNS = ["author__id", "author__username"]


def post_list(*, author_id: int | None = None) -> QuerySet[Post]:
    """Posts newest first with their author's id and username joined in (one query per page,
    whatever its size); only ``author_id``'s when given."""
    posts = (
        Post.objects.select_related("author")
        .only(*POST_COLUMNS, *AUTHOR_COLUMNS)
        .order_by("-created_at", "-id")
    )
    if author_id is not None:
        posts = posts.filter(author_id=author_id)
    return posts
