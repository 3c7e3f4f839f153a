"""Token business logic: views, signals and the admin call these; nothing else writes tokens."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken


@transaction.atomic
def token_create(*, user) -> tuple[AuthToken, str]:
    """A new token for ``user``: ``(row, token)``. The token itself is returned once and never
    stored (the row holds its digest). Expired tokens of the user are deleted, and the oldest
    beyond ``DJANGO_TOKENS_PER_USER`` too, so repeated logins cannot pile up rows."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    row, token = AuthToken.objects.create(user=user)
    keep = max(settings.TOKENS_PER_USER, 1)
    newest_first = AuthToken.objects.filter(user=user).order_by("-created")
    stale = list(newest_first.values_list("pk", flat=True)[keep:])
    if stale:
        AuthToken.objects.filter(pk__in=stale).delete()
    return row, token


def token_revoke(*, token: AuthToken) -> None:
    """Log out one token: refused from the commit on."""
    token.delete()


def token_revoke_all(*, user_id: int) -> int:
    """Every token of the user (password change, deactivation): the number deleted."""
    deleted, _ = AuthToken.objects.filter(user_id=user_id).delete()
    return deleted
