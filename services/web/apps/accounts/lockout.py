"""Per-username login lockout: at most ``DJANGO_LOGIN_LOCKOUT_ATTEMPTS`` password checks per
username in a window of ``DJANGO_LOGIN_LOCKOUT_SECONDS`` that opens at the first attempt.

Every attempt is counted before the password is hashed, so a locked username costs one Redis
command, not a PBKDF2 run. The window never grows (a lock lasts at most the window, however long
an attack goes on: the real user gets in again after the cool-off) and a successful login closes
it. Counters are per username, so an attack on one account leaves every other account's logins
alone; the per-address limits are nginx's ``limit_req`` and ``LoginRateThrottle``.

The counters live in the shared cache (Redis). If it refuses the write (down, or full under
``noeviction``), the login is refused with 503 ``login_unavailable``: without a counter the
lockout would not hold, so logins fail closed.
"""

import hashlib
import logging

from django.conf import settings
from django.core.cache import cache

from apps.core.cache import counter_hit
from apps.core.exceptions import LoginLocked, LoginUnavailable

logger = logging.getLogger(__name__)


def _attempts_key(username: str) -> str:
    # Hashed: the key names no username, and any length or character fits.
    return "login:attempts:" + hashlib.sha256(username.casefold().encode()).hexdigest()


def login_attempt_count(username: str) -> None:
    """Count one password check for ``username``. Raises ``LoginLocked`` (429) past the limit,
    ``LoginUnavailable`` (503) when the cache refuses."""
    limit = settings.LOGIN_LOCKOUT_ATTEMPTS
    if limit <= 0:
        return
    try:
        hits, left = counter_hit(_attempts_key(username), settings.LOGIN_LOCKOUT_SECONDS)
    except Exception as exc:
        logger.warning("login refused, lockout counter unavailable: %s", exc)
        raise LoginUnavailable() from exc
    if hits > limit:
        logger.warning("login refused, username locked for %.0f s more", left)
        raise LoginLocked(wait=max(left, 1))


def login_attempts_clear(username: str) -> None:
    """Close the username's window after a successful login."""
    try:
        cache.delete(_attempts_key(username))
    except Exception as exc:  # the window closes on its own
        logger.warning("could not clear a login counter: %s", exc)
