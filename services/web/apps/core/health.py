"""Liveness (``/healthz``) and readiness (``/readyz``) endpoints.

Liveness answers as long as the process can serve a request and touches nothing else, so a
database outage does not get healthy web containers restarted. Readiness checks each
dependency (database, cache, broker) and answers 503 naming the one that fails; why it failed
(the exception, with hosts and ports) goes to the log only.
"""

import logging
import time
import uuid
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

from apps.core.errors import error_response

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 1.0
_ALLOWED_METHODS = ("GET", "HEAD")


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_cache() -> str:
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    try:
        if cache.get(key) != "1":
            raise RuntimeError("value written to the cache could not be read back")
    finally:
        cache.delete(key)
    return "ok"


def check_broker() -> str:
    from config.celery import app

    if app.conf.task_always_eager:
        return "skipped"  # tasks run in-process: there is no broker to reach
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def _method_not_allowed(request: HttpRequest) -> JsonResponse:
    response = error_response(
        405, "method_not_allowed", f'Method "{request.method}" not allowed.', request=request
    )
    response["Allow"] = ", ".join(_ALLOWED_METHODS)
    return response


def liveness(request: HttpRequest) -> JsonResponse:
    if request.method not in _ALLOWED_METHODS:
        return _method_not_allowed(request)
    return JsonResponse({"status": "ok"})


def readiness(request: HttpRequest) -> JsonResponse:
    if request.method not in _ALLOWED_METHODS:
        return _method_not_allowed(request)
    results: dict[str, dict] = {}
    failed: list[str] = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            result = {"status": check()}
        except Exception as exc:  # any failure means "not ready": the log says why
            # The exception's text names hosts, ports and users: for the log only, never for
            # the public response, which names the failed check.
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            result = {"status": "fail"}
            failed.append(name)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        results[name] = result
    body: dict = {"status": "fail" if failed else "ok", "checks": results}
    if failed:
        body["failed"] = failed
    response = JsonResponse(body, status=503 if failed else 200)
    response["Cache-Control"] = "no-store"
    return response
