"""Error reporting to Sentry (or self-hosted Sentry, or GlitchTip, which speaks its protocol).

Called from config/settings.py only when ``SENTRY_DSN`` is set, so without it the SDK is never
initialised and costs nothing. What is sent: unhandled errors of views and Celery tasks (and
ERROR log lines of other loggers), each tagged with the request id that the API's error body,
the X-Request-ID header and the JSON log lines carry, so one id finds all three. What is not:
cookies, authorization headers, client addresses, user names, request bodies, the values of
local variables and Redis keys (docs/observability.md, "What is sent, and the personal-data
policy").
"""

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.integrations.redis import RedisIntegration

from apps.core.context import get_request_id, task_id_var


def add_request_id(event: dict, hint: dict) -> dict:
    """``before_send``: tag the event with the request id (and the Celery task id) of the
    request or task it happened in. Runs in the thread that captured the event, where the
    context variables of apps.core.context are those of that request or task."""
    tags = event.setdefault("tags", {})
    request_id = get_request_id()
    if request_id:
        tags["request_id"] = request_id
    task_id = task_id_var.get()
    if task_id:
        tags["task_id"] = task_id
    return event


def _command_only(description: str) -> str:
    """``GET 'throttle_anon_203.0.113.7'`` -> ``GET``: Redis keys can name a client (the anon
    throttle's key holds the client's address)."""
    return description.split(" ", 1)[0]


def drop_redis_keys(breadcrumb: dict, hint: dict) -> dict:
    """``before_breadcrumb``: Redis breadcrumbs keep the command, not the key."""
    if breadcrumb.get("category") == "redis":
        breadcrumb["message"] = _command_only(breadcrumb.get("message") or "")
        data = breadcrumb.get("data") or {}
        breadcrumb["data"] = {name: value for name, value in data.items() if "key" not in name}
    return breadcrumb


def drop_redis_keys_from_spans(event: dict, hint: dict) -> dict:
    """``before_send_transaction`` (tracing on): Redis spans keep the command, not the key."""
    for span in event.get("spans") or []:
        if str(span.get("op", "")).startswith("db.redis"):
            span["description"] = _command_only(span.get("description") or "")
            data = span.get("data") or {}
            span["data"] = {name: value for name, value in data.items() if "key" not in name}
    return event


def sentry_init(
    *,
    dsn: str,
    environment: str,
    release: str | None,
    sample_rate: float,
    traces_sample_rate: float,
) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        sample_rate=sample_rate,
        # None, not 0: with 0 the SDK would still build a transaction for every request.
        traces_sample_rate=traces_sample_rate or None,
        integrations=[DjangoIntegration(), CeleryIntegration(), RedisIntegration()],
        # No personal data: no cookies, auth headers, client IPs or user details; no request
        # bodies (a post, a password), no frame locals (they can hold the same), no Redis keys.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=add_request_id,
        before_breadcrumb=drop_redis_keys,
        before_send_transaction=drop_redis_keys_from_spans,
    )
    # Our request log writes an ERROR line for every 500, which the view's own event reports.
    ignore_logger("web.request")
