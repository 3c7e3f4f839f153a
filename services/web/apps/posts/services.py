"""Post business logic: the API calls these; nothing else writes posts."""

from apps.posts.models import Post


def post_create(*, author, title: str, body: str = "") -> Post:
    return Post.objects.create(author=author, title=title, body=body)


def post_update(*, post: Post, **fields) -> Post:
    """Change ``fields`` (title, body) of ``post``; ``updated_at`` moves on."""
    for name, value in fields.items():
        setattr(post, name, value)
    post.save()
    return post


def post_delete(*, post: Post) -> None:
    post.delete()
