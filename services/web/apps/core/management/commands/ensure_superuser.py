"""Create the superuser named by DJANGO_SUPERUSER_USERNAME unless it already exists.

Unlike ``createsuperuser --noinput`` it succeeds when the user is already there, so a
container can run it on every start.
"""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and "
        "DJANGO_SUPERUSER_EMAIL; do nothing if that user exists."
    )

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is not set: set it to the admin's name")
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"superuser {username!r} already exists; nothing to do")
            return
        if not password:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD is not set: set it to the admin's password"
            )
        user_model.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"created superuser {username!r}"))
