"""Celery tasks of the core app."""

from celery import shared_task


class ErrorReportingTestError(Exception):
    """Raised on purpose, to prove that errors reach Sentry and the admins (never otherwise)."""


@shared_task(ignore_result=True)
def fail_for_error_test(marker: str) -> None:
    """Fails on purpose; queued only by the test-only view (``DJANGO_ERROR_TEST_VIEWS``)."""
    raise ErrorReportingTestError(f"error reporting test: task failed on purpose ({marker})")
