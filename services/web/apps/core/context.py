"""Per-request and per-task context for logs: the request id and the Celery task id.

Context variables are local to a thread and to a Celery task, so gthread workers and the
Celery prefork pool each see their own values.
"""

import contextvars
import re
import uuid

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

# Printable ASCII without spaces, at most 200 characters: safe to echo in a header and a log.
_VALID_REQUEST_ID = re.compile(r"^[!-~]{1,200}$")


def clean_request_id(value: str | None) -> str:
    """Return the client's request id if it is acceptable, else a fresh uuid4 hex."""
    if value and _VALID_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def get_request_id() -> str | None:
    return request_id_var.get()
