"""Token authentication with the token -> user lookup kept in the shared cache (Redis).

DRF's ``TokenAuthentication`` runs a joined query on every request; on a page of posts it was
about a fifth of the request's CPU (profiled with py-spy). Here the user is read from the cache
and the database is asked only on a miss. The cache is shared by every gunicorn worker and
replica, and ``apps.accounts.signals`` deletes the entry when the token is deleted or its user
saved (deactivated, renamed) or deleted, so revocation still takes effect at once. Changes that
bypass signals (``QuerySet.update``) take effect within ``DJANGO_TOKEN_CACHE_SECONDS``.
The cache key is a hash of the token, never the token itself; the value is the user row as the
database has it (password hash included), in the stack's Redis, which only the backend network
reaches and which requires its password. With the cache down, requests are authenticated from
the database as usual.
"""

import hashlib
import logging

from django.conf import settings
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)


def token_cache_key(key: str) -> str:
    return "auth:token:" + hashlib.sha256(key.encode()).hexdigest()


def forget_token(key: str) -> None:
    try:
        cache.delete(token_cache_key(key))
    except Exception as exc:  # the entry expires on its own
        logger.warning("could not drop a cached token: %s", exc)


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        seconds = settings.TOKEN_CACHE_SECONDS
        if not seconds:
            return super().authenticate_credentials(key)
        name = token_cache_key(key)
        try:
            user = cache.get(name)
        except Exception as exc:
            logger.warning("token cache unavailable, using the database: %s", exc)
            return super().authenticate_credentials(key)
        if user is not None and user.is_active:
            return user, Token(key=key, user=user)
        user, token = super().authenticate_credentials(key)
        try:
            cache.set(name, user, seconds)
        except Exception as exc:
            logger.warning("could not cache a token: %s", exc)
        return user, token
