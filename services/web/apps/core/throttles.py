"""Throttles whose rates are read from settings at request time.

DRF's throttles copy ``DEFAULT_THROTTLE_RATES`` into a class attribute at import, so a change of
settings (tests, ``override_settings``) would be ignored. Counters live in the default cache:
Redis when ``REDIS_URL`` is set, hence shared by every gunicorn worker and replica. If the cache
refuses (down, or full under ``noeviction``) the anon and user throttles let requests through
(and log it) instead of failing them; the login throttle refuses instead (503
``login_unavailable``): password guessing must not get faster when Redis is in trouble.
"""

import logging

from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling
from rest_framework.settings import api_settings

from apps.core.cache import counter_hit
from apps.core.exceptions import LoginUnavailable

logger = logging.getLogger(__name__)


class _RateFromSettingsMixin:
    """Rates read at request time, counted with ``apps.core.cache.counter_hit``: a window
    opens at a client's first request and lets ``num_requests`` through until it closes;
    ``Retry-After`` is the time it has left. (DRF's own throttles keep every request's
    timestamp in a list, read and written back whole on each request.)"""

    scope: str
    # True: with the cache unavailable, refuse (503) instead of letting the request through.
    fail_closed = False

    def get_rate(self):
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}")
        return rates[self.scope]

    def allow_request(self, request, view):
        # Fail open (unless fail_closed): with the cache (Redis) down, serve the request
        # unthrottled rather than answer 500 to everyone; /readyz reports the cache as failing.
        try:
            if self.rate is None:
                return True
            self.key = self.get_cache_key(request, view)
            if self.key is None:
                return True
            hits, self.left = counter_hit(self.key, self.duration)
            return hits <= self.num_requests
        except Exception as exc:
            if self.fail_closed:
                logger.warning("throttle %s refused, cache unavailable: %s", self.scope, exc)
                raise LoginUnavailable() from exc
            logger.warning("throttle %s skipped, cache unavailable: %s", self.scope, exc)
            return True

    def wait(self):
        return max(self.left, 1)  # allow_request refused: its counter said how long is left


class AnonRateThrottle(_RateFromSettingsMixin, throttling.AnonRateThrottle):
    """Anonymous requests, per client address (``DJANGO_THROTTLE_ANON``)."""


class UserRateThrottle(_RateFromSettingsMixin, throttling.UserRateThrottle):
    """Authenticated requests, per user (``DJANGO_THROTTLE_USER``)."""


class LoginRateThrottle(_RateFromSettingsMixin, throttling.SimpleRateThrottle):
    """Attempts at the token endpoint, per client address whoever is logged in
    (``DJANGO_THROTTLE_LOGIN``): slows down password guessing. Fails closed."""

    scope = "login"
    fail_closed = True

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
