"""Prometheus metrics of the app (docs/observability.md, "Metrics and alerts").

On unless ``DJANGO_METRICS=0`` (then nothing here is even imported). gunicorn's workers and
Celery's pool processes each write their samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (a
tmpfs folder the entrypoint empties at start: prometheus-client's multiprocess mode), and a
scrape reads them all, so counts are right whichever process served a request or ran a task:

- web: gunicorn also listens on ``DJANGO_METRICS_PORT`` (8001; config/gunicorn.conf.py); a
  request that arrived on that port is answered by ``MetricsMiddleware``: ``/metrics``, anything
  else 404. nginx proxies to port 8000 only, where ``/metrics`` is an unknown path.
- worker: the worker's main process serves ``/metrics`` on the same port (``worker_ready``).

Without ``PROMETHEUS_MULTIPROC_DIR`` (the test suite, runserver) the samples live in the process.
"""

import functools
import json
import logging
import os
import time

import redis
from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

# The time a task message was published (epoch seconds), a header every publisher adds
# (config/celery.py): the age of the oldest waiting task is read from it.
SENT_AT_HEADER = "drs_sent_at"

METHODS = {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# registry=None: registered in the scrape registry below, never in prometheus-client's global one.
REQUESTS = Counter(
    "drs_http_responses",
    "Responses of the app (health checks and metrics scrapes not counted), by view and status.",
    ["method", "view", "status"],
    registry=None,
)
LATENCY = Histogram(
    "drs_http_request_duration_seconds",
    "Time from the request reaching Django to its response, by view.",
    ["method", "view"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
TASKS = Counter(
    "drs_celery_tasks",
    "Celery tasks run to an end, by task name and final state (SUCCESS, FAILURE, RETRY...).",
    ["task", "state"],
    registry=None,
)
TASK_DURATION = Histogram(
    "drs_celery_task_duration_seconds",
    "Run time of Celery tasks, by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300),
    registry=None,
)
OWN_METRICS = (REQUESTS, LATENCY, TASKS, TASK_DURATION)


@functools.lru_cache(maxsize=4096)
def _request_series(method: str, view: str, status: int):
    """The counter's and the histogram's series for these labels, looked up once per process:
    ``labels()`` takes a lock and builds its key on every call. Bounded: methods, view names
    and statuses."""
    return REQUESTS.labels(method, view, str(status)), LATENCY.labels(method, view)


def request_observe(request, status: int, seconds: float) -> None:
    """Count one answered request under its view's name (bounded labels, never the raw path)."""
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None else "<unmatched>"
    method = request.method if request.method in METHODS else "other"
    responses, latency = _request_series(method, view, status)
    responses.inc()
    latency.observe(seconds)


class BrokerQueueCollector:
    """At each scrape: how many tasks wait in each Celery queue in the broker (Redis LLEN) and how
    long the oldest has waited (its ``drs_sent_at`` header; kombu pushes at the head of the list
    and workers take from the tail, so the tail is the oldest)."""

    def __init__(self, url: str, queues: list[str]):
        self.queues = queues
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def collect(self):
        length = GaugeMetricFamily(
            "drs_celery_queue_length", "Tasks waiting in the broker's queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "drs_celery_oldest_task_age_seconds",
            "Seconds the oldest waiting task has waited (0: none waits).",
            labels=["queue"],
        )
        up = GaugeMetricFamily("drs_celery_broker_up", "1 if the broker answered this scrape.")
        try:
            for queue in self.queues:
                count = self.client.llen(queue)
                length.add_metric([queue], count)
                oldest = self.client.lindex(queue, -1) if count else None
                waited = message_age(oldest, time.time())
                if waited is not None:
                    age.add_metric([queue], waited)
            up.add_metric([], 1)
        except redis.RedisError as exc:
            logger.warning("metrics: the broker did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        yield from (length, age, up)


def message_age(raw: bytes | None, now: float) -> float | None:
    """Seconds since a kombu message in Redis was sent; 0 for no message, None when unknown."""
    if raw is None:
        return 0.0
    try:
        sent = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
    except (ValueError, AttributeError):
        return None
    return max(0.0, now - sent) if isinstance(sent, int | float) else None


def scrape_registry(broker: bool) -> CollectorRegistry:
    """What one scrape returns: every process's samples, PID 1's start time (a restarted
    container shows as a new start time: the ContainerRestarting alert), and with ``broker`` the
    Celery queues."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for metric in OWN_METRICS:
            registry.register(metric)
    ProcessCollector(pid=lambda: 1, registry=registry)
    if broker and settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        from config.celery import app

        registry.register(
            BrokerQueueCollector(settings.CELERY_BROKER_URL, [app.conf.task_default_queue])
        )
    return registry


_web_registry: CollectorRegistry | None = None


def metrics_response() -> HttpResponse:
    """The web container's scrape (its workers' requests and the broker's queues)."""
    global _web_registry  # one registry per process, made on the first scrape
    if _web_registry is None:
        _web_registry = scrape_registry(broker=True)
    return HttpResponse(generate_latest(_web_registry), content_type=CONTENT_TYPE_LATEST)


# ---- Celery (connected in apps.core.apps when metrics are on) ---------------------------------

_task_started: dict[str, float] = {}


def task_started(task_id=None, **_kwargs) -> None:
    _task_started[task_id] = time.perf_counter()


def task_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    started = _task_started.pop(task_id, None)
    name = getattr(task, "name", "unknown")
    TASKS.labels(name, state or "UNKNOWN").inc()
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)


def worker_serve(**_kwargs) -> None:
    """In the worker's main process: serve every pool process's samples on the metrics port."""
    start_http_server(settings.METRICS_PORT, registry=scrape_registry(broker=False))
    logger.info("metrics: serving /metrics on port %s", settings.METRICS_PORT)
