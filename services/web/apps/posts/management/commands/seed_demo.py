"""Create a demo user and a few hundred posts, for trying the stack. Safe to run again: it
only tops up what is missing."""

import os
import random
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.posts.models import Post

_VOCABULARY = (
    "django rest stack docker compose nginx redis celery postgres worker queue cache export "
    "health ready token page filter search order author title body deploy scale proxy"
)
WORDS = tuple(_VOCABULARY.split())


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


class Command(BaseCommand):
    help = "Create the demo user (password from DEMO_PASSWORD) and demo posts; idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=5, help="other demo authors (default 5)")
        parser.add_argument("--posts", type=int, default=300, help="posts in total (default 300)")

    def handle(self, *args, users: int, posts: int, **options):
        if users < 0 or posts < 0:
            raise CommandError("--users and --posts must be zero or more")
        user_model = get_user_model()
        password = os.environ.get("DEMO_PASSWORD", "")
        demo, created = user_model.objects.get_or_create(
            username="demo", defaults={"email": "demo@example.com"}
        )
        if created:
            generated = not password
            password = password or secrets.token_urlsafe(12)
            demo.set_password(password)
            demo.save(update_fields=["password"])
            shown = password if generated else "from DEMO_PASSWORD"
            self.stdout.write(f"created user 'demo' (password: {shown})")
        else:
            self.stdout.write("user 'demo' exists; password unchanged")

        authors = [demo]
        for number in range(1, users + 1):
            author, _ = user_model.objects.get_or_create(
                username=f"demo{number}", defaults={"email": f"demo{number}@example.com"}
            )
            authors.append(author)

        existing = Post.objects.filter(author__in=authors).count()
        missing = max(posts - existing, 0)
        if not missing:
            self.stdout.write(f"{existing} demo posts already there; nothing to add")
            return
        rng = random.Random(existing)  # noqa: S311  (demo text, not security)
        batch_size = 100
        created_count = 0
        while created_count < missing:
            size = min(batch_size, missing - created_count)
            with transaction.atomic():
                Post.objects.bulk_create(
                    Post(
                        author=authors[(existing + created_count + i) % len(authors)],
                        title=_sentence(rng, rng.randint(3, 8)),
                        body="\n\n".join(
                            _sentence(rng, rng.randint(8, 30)) + "."
                            for _ in range(rng.randint(1, 4))
                        ),
                    )
                    for i in range(size)
                )
            created_count += size
            self.stdout.write(f"  posts: {existing + created_count}/{posts}")
        self.stdout.write(self.style.SUCCESS(f"added {missing} posts by {len(authors)} authors"))
