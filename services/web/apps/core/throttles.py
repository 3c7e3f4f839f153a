"""Throttles whose rates are read from settings at request time.

DRF's throttles copy ``DEFAULT_THROTTLE_RATES`` into a class attribute at import, so a change of
settings (tests, ``override_settings``) would be ignored. Counters live in the default cache:
Redis when ``REDIS_URL`` is set, hence shared by every gunicorn worker and replica. If the cache
is unreachable the throttles let requests through (and log it) instead of failing them.
"""

import logging

from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class _RateFromSettingsMixin:
    scope: str

    def get_rate(self):
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}")
        return rates[self.scope]

    def allow_request(self, request, view):
        # Fail open: with the cache (Redis) down, serve the request unthrottled rather than
        # answer 500 to everyone; /readyz reports the cache as failing meanwhile.
        try:
            return super().allow_request(request, view)
        except Exception as exc:
            logger.warning("throttle %s skipped, cache unavailable: %s", self.scope, exc)
            return True


class AnonRateThrottle(_RateFromSettingsMixin, throttling.AnonRateThrottle):
    """Anonymous requests, per client address (``DJANGO_THROTTLE_ANON``)."""


class UserRateThrottle(_RateFromSettingsMixin, throttling.UserRateThrottle):
    """Authenticated requests, per user (``DJANGO_THROTTLE_USER``)."""


class LoginRateThrottle(_RateFromSettingsMixin, throttling.SimpleRateThrottle):
    """Attempts at the token endpoint, per client address whoever is logged in
    (``DJANGO_THROTTLE_LOGIN``): slows down password guessing."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
