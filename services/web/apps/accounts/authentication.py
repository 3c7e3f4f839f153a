"""Token authentication on django-rest-knox's tokens: only a SHA-512 digest of each token is
stored (``knox_authtoken``), and every request reads the token with its user from the database.
Nothing is cached, so a revoked token (logout, password change, deactivation, user deleted:
apps/accounts/services.py, signals.py) is refused from the moment its deletion commits, on every
worker and replica.

The lookup is one primary-key query: the digest is the table's primary key and knox's hash is
unsalted, so the digest of the token sent finds its row directly. Knox's own class looks rows
up by the token's first 15 characters, compares digests, then reads all of the user's tokens to
delete expired ones: two queries per request (docs/benchmarks.md, "Token lookups without a
cache"). Expired tokens are deleted here when used, and at each login (``token_create``).
Knox's ``AUTO_REFRESH`` is not supported (off in config/settings.py).
"""

import re

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import knox_settings
from rest_framework.exceptions import AuthenticationFailed

# Knox makes 64 hexadecimal digits; tokens carried over from DRF's authtoken have 40. Anything
# else (NUL bytes, non-UTF-8) is refused before the database, where it could be a 500.
_TOKEN = re.compile(rb"[0-9a-f]{40,128}")


class TokenAuthentication(KnoxTokenAuthentication):
    """``Authorization: Token <token>`` against knox's table, in one query."""

    def authenticate_credentials(self, token: bytes):
        if not _TOKEN.fullmatch(token):
            raise AuthenticationFailed("Invalid token.")
        model = get_token_model()
        try:
            row = model.objects.select_related("user").get(pk=hash_token(token.decode()))
        except model.DoesNotExist:
            raise AuthenticationFailed("Invalid token.") from None
        if row.expiry is not None and row.expiry < timezone.now():
            row.delete()
            raise AuthenticationFailed("Invalid token.")
        return self.validate_user(row)


class TokenScheme(OpenApiAuthenticationExtension):
    """The schema's ``tokenAuth``: ``Authorization: Token <token>``, as before knox."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=knox_settings.AUTH_HEADER_PREFIX
        )
