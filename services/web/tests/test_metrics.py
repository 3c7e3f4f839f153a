"""The app's Prometheus metrics (apps/core/metrics.py): requests and tasks counted, /metrics
answered on the metrics port only, the broker's queues read, and DJANGO_METRICS=0 switching it
all off. Across gunicorn's processes: tests/e2e/test_monitoring.py, on the running stack."""

import json
import os
import time
import uuid

import pytest
import redis
from django.test import Client

from apps.core import metrics
from apps.exports import tasks
from config.celery import app as celery_app
from tests.test_settings import run


class FakeSocket:
    """What gunicorn hands a request as ``gunicorn.socket``: the connection, local port known."""

    def __init__(self, port: int):
        self.port = port

    def getsockname(self):
        return ("10.0.0.5", self.port)


def sample(name: str, **labels) -> float:
    return metrics.scrape_registry(broker=False).get_sample_value(name, labels) or 0.0


def on_port(port: int) -> dict:
    return {"gunicorn.socket": FakeSocket(port)}


@pytest.mark.django_db
def test_a_request_is_counted_under_its_view_and_status():
    labels = {"method": "GET", "view": "post-list", "status": "200"}
    before = sample("drs_http_responses_total", **labels)
    latency = {"method": "GET", "view": "post-list"}
    latency_before = sample("drs_http_request_duration_seconds_count", **latency)
    assert Client().get("/api/posts/").status_code == 200
    assert sample("drs_http_responses_total", **labels) == before + 1
    assert sample("drs_http_request_duration_seconds_count", **latency) == latency_before + 1


@pytest.mark.django_db
def test_unknown_paths_share_one_label_and_health_checks_are_not_counted():
    unmatched = {"method": "GET", "view": "<unmatched>", "status": "404"}
    before = sample("drs_http_responses_total", **unmatched)
    assert Client().get(f"/no-such-path-{uuid.uuid4().hex}").status_code == 404
    assert sample("drs_http_responses_total", **unmatched) == before + 1
    Client().get("/healthz")
    assert sample("drs_http_responses_total", method="GET", view="healthz", status="200") == 0


def test_metrics_answer_on_the_metrics_port_only(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    client = Client()
    # Prometheus scrapes web's address on the metrics port: no host check, no redirect.
    r = client.get("/metrics", HTTP_HOST="10.0.0.5:8001", **on_port(settings.METRICS_PORT))
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    assert "drs_celery_queue_length" in r.content.decode()
    # The same path on the app's port (where nginx sends everything): an unknown path.
    r = client.get("/metrics", HTTP_HOST="example.com", **on_port(8000))
    assert r.status_code == 404
    assert b"drs_http" not in r.content
    # Anything else on the metrics port: 404, whatever it is.
    r = client.get("/api/", HTTP_HOST="10.0.0.5:8001", **on_port(settings.METRICS_PORT))
    assert r.status_code == 404


@pytest.fixture
def broker():
    url = os.environ.get("CELERY_BROKER_URL", "")
    assert url.startswith("redis://"), "the suite runs against the stack's Redis (make test-django)"
    client = redis.Redis.from_url(url)
    queue = f"test-queue-{uuid.uuid4().hex[:8]}"
    yield url, client, queue
    client.delete(queue)


def test_every_published_task_carries_its_send_time(broker):
    url, client, queue = broker
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = url
    sent = time.time()
    tasks.purge_expired_exports.apply_async(queue=queue)
    message = json.loads(client.lindex(queue, -1))
    assert sent - 1 <= message["headers"][metrics.SENT_AT_HEADER] <= time.time()


def test_queue_length_and_the_oldest_tasks_age_come_from_the_broker(broker):
    url, client, queue = broker
    collector = metrics.BrokerQueueCollector(url, [queue])
    empty = {m.name: m.samples for m in collector.collect()}
    assert empty["drs_celery_queue_length"][0].value == 0
    assert empty["drs_celery_oldest_task_age_seconds"][0].value == 0
    # kombu pushes new messages at the head: the tail is the oldest.
    for age in (120, 30):  # the oldest pushed first
        headers = {metrics.SENT_AT_HEADER: time.time() - age}
        client.lpush(queue, json.dumps({"body": "", "headers": headers}))
    found = {m.name: m.samples for m in collector.collect()}
    assert found["drs_celery_queue_length"][0].value == 2
    assert 120 <= found["drs_celery_oldest_task_age_seconds"][0].value < 130
    assert found["drs_celery_broker_up"][0].value == 1


def test_an_unreachable_broker_is_reported_not_raised():
    collector = metrics.BrokerQueueCollector("redis://127.0.0.1:1/0", ["celery"])
    found = {m.name: m.samples for m in collector.collect()}
    assert found == {"drs_celery_broker_up": [found["drs_celery_broker_up"][0]]}
    assert found["drs_celery_broker_up"][0].value == 0


def test_a_message_without_a_send_time_has_no_age():
    assert metrics.message_age(None, 100.0) == 0.0
    assert metrics.message_age(b'{"headers": {}}', 100.0) is None
    assert metrics.message_age(b"not json", 100.0) is None
    assert metrics.message_age(b'{"headers": {"drs_sent_at": 40}}', 100.0) == 60.0


@pytest.mark.django_db
def test_tasks_are_counted_by_name_and_state():
    labels = {"task": "apps.exports.tasks.purge_expired_exports", "state": "SUCCESS"}
    before = sample("drs_celery_tasks_total", **labels)
    tasks.purge_expired_exports.delay()
    assert sample("drs_celery_tasks_total", **labels) == before + 1
    assert sample("drs_celery_task_duration_seconds_count", task=labels["task"]) >= 1


def test_metrics_off_means_no_middleware_and_no_client_library():
    code = (
        "import sys, django; django.setup(); from django.conf import settings as s; "
        "print(any('Metrics' in m for m in s.MIDDLEWARE), 'prometheus_client' in sys.modules)"
    )
    off = run(code, {"DJANGO_DEBUG": "1", "DJANGO_METRICS": "0"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "False"]
    on = run(code, {"DJANGO_DEBUG": "1"})
    assert on.returncode == 0, on.stderr
    assert on.stdout.split() == ["True", "True"]
