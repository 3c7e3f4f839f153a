"""One JSON error shape for every error, from DRF views and from Django itself::

    {"error": {"status": 400, "code": "invalid", "detail": "Invalid input.",
               "fields": {"title": ["This field is required."]}, "request_id": "..."}}

``fields`` appears only on validation errors. ``exception_handler`` is DRF's
``EXCEPTION_HANDLER``; ``handler400``/``403``/``404``/``500`` are wired in ``config.urls``
for errors raised outside DRF (unknown URLs, disallowed hosts, crashes).
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from psycopg2.errors import QueryCanceled
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.context import get_request_id
from apps.core.exceptions import DatabaseUnavailable, PayloadTooLarge, QueryTimeout

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait (Retry-After) when a dependency is down.
RETRY_AFTER_SECONDS = 5


def is_query_timeout(exc: BaseException) -> bool:
    """True for Django's ``OperationalError`` wrapping psycopg2's ``QueryCanceled`` (SQLSTATE
    57014): PostgreSQL stopped the statement (``statement_timeout``), the database is fine."""
    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, QueryCanceled)


def error_body(
    status_code: int, code: str, detail: str, fields: dict | None = None, request_id=None
) -> dict:
    error: dict = {"status": status_code, "code": code, "detail": str(detail)}
    if fields is not None:
        error["fields"] = fields
    error["request_id"] = request_id or get_request_id()
    return {"error": error}


def error_response(
    status_code: int, code: str, detail: str, fields: dict | None = None, request=None
) -> JsonResponse:
    request_id = getattr(request, "request_id", None)
    return JsonResponse(
        error_body(status_code, code, detail, fields, request_id), status=status_code
    )


def _first_code(codes) -> str:
    """The first error code found in DRF's (possibly nested) ``get_codes()`` result."""
    if isinstance(codes, dict):
        for value in codes.values():
            return _first_code(value)
    if isinstance(codes, list):
        for value in codes:
            return _first_code(value)
        return "invalid"
    return str(codes)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    """DRF exception handler: DRF's own, then reshaped into the common error body."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    elif is_query_timeout(exc):
        logger.warning("database statement stopped (statement_timeout): %s", exc)
        exc = QueryTimeout()
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable (restarting, failing over): a transient 503.
        logger.warning("database unavailable: %s", exc)
        exc = DatabaseUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's handler500 answers (and the error is logged)

    request = context.get("request")
    request_id = getattr(request, "request_id", None)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        code = "invalid"
        message = _first_message(fields)
    else:
        fields = None
        code = _first_code(exc.get_codes()) if isinstance(exc, exceptions.APIException) else "error"
        message = response.data.get("detail", "") if isinstance(response.data, dict) else ""
    response.data = error_body(response.status_code, code, message, fields, request_id)
    if response.status_code == 503 and "Retry-After" not in response:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# --- Django-level handlers (outside DRF views) ---------------------------------------------------


def handler400(request: HttpRequest, exception=None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return error_response(
            413, "payload_too_large", "Request body is too large.", request=request
        )
    return error_response(400, "bad_request", "Bad request.", request=request)


def handler403(request: HttpRequest, exception=None) -> JsonResponse:
    return error_response(
        403,
        "permission_denied",
        "You do not have permission to perform this action.",
        request=request,
    )


def handler404(request: HttpRequest, exception=None) -> JsonResponse:
    return error_response(404, "not_found", "Not found.", request=request)


def handler500(request: HttpRequest) -> JsonResponse:
    return error_response(500, "server_error", "Internal server error.", request=request)


def database_unavailable(request: HttpRequest) -> JsonResponse:
    response = error_response(
        503,
        DatabaseUnavailable.default_code,
        str(DatabaseUnavailable.default_detail),
        request=request,
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def query_timeout(request: HttpRequest) -> JsonResponse:
    return error_response(
        504, QueryTimeout.default_code, str(QueryTimeout.default_detail), request=request
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    detail = f"CSRF verification failed: {reason}"
    return error_response(403, "csrf_failed", detail, request=request)


__all__ = [
    "csrf_failure",
    "database_unavailable",
    "error_body",
    "error_response",
    "exception_handler",
    "handler400",
    "handler403",
    "handler404",
    "handler500",
    "is_query_timeout",
    "query_timeout",
]
