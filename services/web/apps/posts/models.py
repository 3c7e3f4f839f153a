from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models.functions import Upper

TITLE_MAX_LENGTH = 200
BODY_MAX_LENGTH = 10_000


class Post(models.Model):
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts"
    )
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    # max_length is enforced by forms and serializers (PostgreSQL text has no limit).
    body = models.TextField(max_length=BODY_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["author", "-created_at"], name="post_author_created_idx"),
            # ?search= (icontains, i.e. UPPER(column) LIKE UPPER('%term%')) through pg_trgm
            # (migration 0002): a term with a trigram in it is found without reading every post.
            GinIndex(OpClass(Upper("title"), name="gin_trgm_ops"), name="post_title_trgm_idx"),
            GinIndex(OpClass(Upper("body"), name="gin_trgm_ops"), name="post_body_trgm_idx"),
        ]

    def __str__(self) -> str:
        return self.title
