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
