"""Request id, request log and the health endpoints' short-cut."""

import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponseNotFound

from apps.core import health
from apps.core.context import clean_request_id, request_id_var

logger = logging.getLogger("web.request")

HEALTH_PATHS = {"/healthz": health.liveness, "/readyz": health.readiness}


class RequestIdMiddleware:
    """Take ``X-Request-ID`` from the request (or make one), expose it to logs through a context
    variable, echo it on the response, and log one line per request with its timing (every
    request, or with ``DJANGO_REQUEST_LOG=errors`` only errors and slow requests)."""

    header = "X-Request-ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = clean_request_id(request.headers.get(self.header))
        request.request_id = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[self.header] = request_id
            self._log(request, response.status_code, started)
            return response
        finally:
            request_id_var.reset(token)

    @staticmethod
    def _log(request, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        slow = duration_ms >= settings.REQUEST_LOG_SLOW_MS
        if status < 400 and not slow and settings.REQUEST_LOG == "errors":
            return
        # Health checks are polled every few seconds: keep them out of the INFO log.
        if request.path in HEALTH_PATHS:
            level = logging.DEBUG if status < 400 else logging.WARNING
        else:
            level = logging.ERROR if status >= 500 else logging.INFO
        if slow:
            level = max(level, logging.WARNING)
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "%s %s %s%s",
            request.method,
            request.path,
            status,
            " (slow)" if slow else "",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": duration_ms,
            },
        )


class MetricsMiddleware:
    """First in MIDDLEWARE when metrics are on (DJANGO_METRICS): a request that arrived on the
    metrics port (DJANGO_METRICS_PORT, gunicorn's second listener) gets ``/metrics`` or a 404 and
    nothing else; every other request is timed and counted (apps/core/metrics.py), health checks
    aside. nginx proxies to the app's port only, so the metrics port is never reached from
    outside."""

    def __init__(self, get_response):
        from apps.core import metrics

        self.get_response = get_response
        self.metrics = metrics
        self.port = settings.METRICS_PORT

    def __call__(self, request):
        if self._on_metrics_port(request):
            if request.path == "/metrics" and request.method in {"GET", "HEAD"}:
                return self.metrics.metrics_response()
            return HttpResponseNotFound(b"not found\n", content_type="text/plain")
        if request.path in HEALTH_PATHS:
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self.metrics.request_observe(request, response.status_code, time.perf_counter() - started)
        return response

    def _on_metrics_port(self, request) -> bool:
        """gunicorn hands each request its connection (``gunicorn.socket``): the local port says
        which listener took it. The Host header would not do: a client can write any port there."""
        sock = request.META.get("gunicorn.socket")
        if sock is None:
            return False
        try:
            return sock.getsockname()[1] == self.port
        except OSError:
            return False


class HealthCheckMiddleware:
    """Answer ``/healthz`` and ``/readyz`` before host validation, the HTTPS redirect, sessions
    and authentication: a container probe on http://127.0.0.1:8000 must work in production."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = HEALTH_PATHS.get(request.path)
        if view is not None:
            return view(request)
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """Outside DRF views (admin, plain Django views), answer a lost database with the same JSON
    503 and Retry-After as the API does, not a 500: the outage is transient. A statement that
    PostgreSQL stopped at ``statement_timeout`` answers the API's JSON 504 ``query_timeout``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from apps.core.errors import database_unavailable, is_query_timeout, query_timeout

        if is_query_timeout(exception):
            logger.warning("database statement stopped (statement_timeout): %s", exception)
            return query_timeout(request)
        if isinstance(exception, OperationalError | InterfaceError):
            logger.warning("database unavailable: %s", exception)
            return database_unavailable(request)
        return None
