"""Celery signal handlers: put the task id (and the request id that queued the task) into the
logging context while a task runs; stamp each message with the time it was sent (the age of the
oldest waiting task, apps/core/metrics.py)."""

import time

from celery.signals import before_task_publish, task_postrun, task_prerun

from apps.core.context import get_request_id, request_id_var, task_id_var

# Context tokens per running task id, so the previous values come back afterwards (in eager
# mode the task runs inside a request, whose request id must survive it).
_tokens: dict[str, tuple] = {}


@before_task_publish.connect
def _add_request_id_header(headers=None, **kwargs) -> None:
    request_id = get_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id
    if headers is not None:
        # The name apps.core.metrics.SENT_AT_HEADER (not imported: that module is loaded only
        # when metrics are on, and every publisher stamps its messages either way).
        headers.setdefault("drs_sent_at", time.time())


@task_prerun.connect
def _enter_task_context(task_id=None, task=None, **kwargs) -> None:
    queued_by = getattr(task.request, "request_id", None) if task is not None else None
    request_id = queued_by or get_request_id() or task_id
    _tokens[task_id] = (task_id_var.set(task_id), request_id_var.set(request_id))


@task_postrun.connect
def _leave_task_context(task_id=None, **kwargs) -> None:
    tokens = _tokens.pop(task_id, None)
    if tokens:
        task_id_var.reset(tokens[0])
        request_id_var.reset(tokens[1])
