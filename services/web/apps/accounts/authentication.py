"""Token authentication: django-rest-knox's, which stores only a SHA-512 digest of each token
and reads token and user from the database on every request (one query, plus one for the
user's other tokens, where knox deletes expired ones). Nothing is cached, so a revoked token
(logout, password change, deactivation, user deleted: apps/accounts/services.py) is refused
from the moment its deletion commits, on every worker and replica.
"""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.settings import knox_settings
from rest_framework.exceptions import AuthenticationFailed

# Knox makes 64 hexadecimal digits; tokens carried over from DRF's authtoken have 40.
_TOKEN = re.compile(rb"[0-9a-f]{40,128}")


class TokenAuthentication(KnoxTokenAuthentication):
    """Knox's, with malformed tokens (not hexadecimal: NUL bytes, non-UTF-8) refused with 401
    before they reach the database, where they would be a 500."""

    def authenticate_credentials(self, token: bytes):
        if not _TOKEN.fullmatch(token):
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class TokenScheme(OpenApiAuthenticationExtension):
    """The schema's ``tokenAuth``: ``Authorization: Token <token>``, as before knox."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=knox_settings.AUTH_HEADER_PREFIX
        )
