"""API exceptions of our own (kept apart from apps.core.errors, which imports DRF's views)."""

from rest_framework import exceptions, status


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Service temporarily unavailable, try again later."
    default_code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached (restart, failover): a transient 503, never a 500."""

    default_detail = "The database is unavailable; try again shortly."
    default_code = "database_unavailable"


class QueryTimeout(exceptions.APIException):
    """A database statement ran past ``DJANGO_DB_STATEMENT_TIMEOUT_MS`` and PostgreSQL stopped
    it: 504, as nginx answers a request that outlives its read timeout. Retrying the same
    request is unlikely to help; a narrower one (fewer search terms, a filter) may."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_detail = "The request took too long and was stopped; try a narrower one."
    default_code = "query_timeout"


class LoginLocked(exceptions.Throttled):
    """Too many password checks for one username in the lockout window
    (``DJANGO_LOGIN_LOCKOUT_ATTEMPTS`` per ``DJANGO_LOGIN_LOCKOUT_SECONDS``): 429 with
    ``Retry-After``, answered before the password is hashed."""

    default_detail = "Too many login attempts for this username; try again later."
    default_code = "login_locked"


class LoginUnavailable(ServiceUnavailable):
    """The login counters (Redis) refused a write: logins are refused rather than let through
    without a limit (the login throttle and the lockout fail closed)."""

    default_detail = "Login is temporarily unavailable; try again shortly."
    default_code = "login_unavailable"
