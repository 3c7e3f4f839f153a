"""Logging helpers: a filter that adds request and task ids, one that passes unhandled errors
only (the error mail), and the JSON-lines formatter."""

import logging
from datetime import UTC, datetime

from pythonjsonlogger.orjson import OrjsonFormatter as _BaseJsonFormatter

from apps.core.context import request_id_var, task_id_var


class ContextFilter(logging.Filter):
    """Add ``request_id`` and ``task_id`` (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            # Django logs failed requests (django.request) after our middleware has returned:
            # take the id from the request it attaches to the record.
            request = getattr(record, "request", None)
            record.request_id = request_id_var.get() or getattr(request, "request_id", None)
        if not hasattr(record, "task_id"):
            record.task_id = task_id_var.get()
        return True


class UnhandledErrorFilter(logging.Filter):
    """Pass only records of an unhandled exception (they carry its traceback): a crash, not a
    503 that the app answers on purpose while the database is away, which Django also logs at
    ERROR. Keeps the error mail to crashes, and an outage from sending a mail per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(record.exc_info)


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id, then any extras
    (the request log adds method, path, status and duration_ms). Encoded by orjson (UTF-8):
    one line per request, so its cost counts."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fmt", ["asctime", "levelname", "name", "message", "request_id"])
        kwargs.setdefault(
            "rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"}
        )
        super().__init__(*args, **kwargs)

    def formatTime(self, record, datefmt=None):  # noqa: N802  (logging's API name)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")

    def add_fields(self, log_data, record, message_dict):
        super().add_fields(log_data, record, message_dict)
        if log_data.get("task_id") is None:
            log_data.pop("task_id", None)
