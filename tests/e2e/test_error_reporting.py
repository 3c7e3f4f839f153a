"""Errors reach someone: an unhandled view error and a failing Celery task arrive at Sentry, each
tagged with its request id, without personal data; the view error is also mailed to ADMINS.

Sentry and the mail server are stood in for by tests/e2e/errors_sink.py, run in a container of
the web image on the stack's backend network under the name the stack's env file points at
(scripts/test.sh sets SENTRY_DSN, EMAIL_URL, DJANGO_ADMINS and the test-only error views)."""

import contextlib
import email
import email.policy
import json
import subprocess
import time
import uuid
from email.utils import getaddresses
from pathlib import Path

import pytest

SINK_ALIAS = "errors-sink"
SINK_SCRIPT = Path(__file__).resolve().parent / "errors_sink.py"
ERROR_TYPE = "ErrorReportingTestError"
WAIT_SECONDS = 60


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr}{done.stdout}")
    return done.stdout


class Sink:
    def __init__(self, container: str):
        self.container = container

    def records(self) -> list[dict]:
        records = []
        for line in docker("logs", self.container).splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def wait(self, predicate, what: str) -> dict:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            found = [r for r in self.records() if predicate(r)]
            if found:
                return found[0]
            time.sleep(0.5)
        raise AssertionError(f"{what} never reached the sink; it got: {self.records()}")

    def event(self, request_id: str) -> dict:
        def tagged(record: dict) -> bool:
            event = record.get("event", {})
            return record.get("sink") == "sentry" and tags(event).get("request_id") == request_id

        return self.wait(tagged, f"a Sentry event tagged request_id={request_id}")["event"]

    def mail(self, request_id: str) -> dict:
        def about(record: dict) -> bool:
            return record.get("sink") == "smtp" and request_id in record.get("message", "")

        return self.wait(about, f"a mail about request {request_id}")


def tags(event: dict) -> dict:
    """An event's tags (the SDK sends a mapping; the protocol also allows pairs)."""
    raw = event.get("tags") or {}
    return dict(raw) if isinstance(raw, list) else raw


def exception_types(event: dict) -> list[str]:
    return [value.get("type") for value in event.get("exception", {}).get("values", [])]


@pytest.fixture(scope="module")
def sink(stack):
    """The sink container, on the backend network of the stack, named as the DSN says."""
    web = stack.container_ids("web")[0]
    details = stack.inspect(web)
    image = details["Config"]["Image"]
    attached = details["NetworkSettings"]["Networks"]
    networks = [name for name in attached if name.endswith("_backend")]
    assert len(networks) == 1, networks
    name = f"{stack.project}-errors-sink"
    docker("rm", "-f", name, check=False)
    docker(
        "run", "-d", "--name", name, "--network", networks[0], "--network-alias", SINK_ALIAS,
        "-v", f"{SINK_SCRIPT}:/sink.py:ro", "--entrypoint", "python", image, "-u", "/sink.py",
    )  # fmt: skip
    try:
        sink = Sink(name)
        sink.wait(lambda r: r.get("sink") == "ready", "the sink's start")
        yield sink
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def release(stack) -> str:
    """The release the Django containers report: the image tag they run."""
    return stack.inspect(stack.container_ids("web")[0])["Config"]["Image"].rsplit(":", 1)[1]


def test_view_error_reaches_sentry_with_its_request_id_without_personal_data(sink, client, release):
    request_id = f"e2e-view-error-{uuid.uuid4().hex}"
    secrets = {"cookie": f"c{uuid.uuid4().hex}", "token": f"t{uuid.uuid4().hex}"}
    r = client.get(
        "/api/test/error/?page=1",
        headers={
            "X-Request-ID": request_id,
            "Cookie": f"sessionid={secrets['cookie']}",
            "Authorization": f"Token {secrets['token']}",
        },
    )
    assert r.status_code == 500, r.text
    assert r.json()["error"]["request_id"] == request_id

    event = sink.event(request_id)
    assert ERROR_TYPE in exception_types(event), event.get("exception")
    assert event.get("release") == release
    assert event.get("environment") == "production"
    url = event.get("request", {}).get("url", "")
    assert url.endswith("/api/test/error/"), event.get("request")
    sent = json.dumps(event)
    assert secrets["cookie"] not in sent, "the session cookie was sent to Sentry"
    assert secrets["token"] not in sent, "the Authorization header was sent to Sentry"
    assert "ip_address" not in event.get("user", {}), event.get("user")


def test_failing_task_reaches_sentry_with_the_request_id_that_queued_it(sink, client, release):
    request_id = f"e2e-task-error-{uuid.uuid4().hex}"
    r = client.post("/api/test/task-error/", headers={"X-Request-ID": request_id})
    assert r.status_code == 202, r.text

    event = sink.event(request_id)
    assert ERROR_TYPE in exception_types(event), event.get("exception")
    assert tags(event).get("task_id"), "the event names no Celery task id"
    assert event.get("release") == release
    assert event.get("environment") == "production"


def test_view_error_is_mailed_to_admins_with_its_request_id(sink, stack, client):
    request_id = f"e2e-mail-{uuid.uuid4().hex}"
    r = client.get("/api/test/error/", headers={"X-Request-ID": request_id})
    assert r.status_code == 500, r.text

    record = sink.mail(request_id)
    admins = [address for _, address in getaddresses([stack.env_value("DJANGO_ADMINS")])]
    message = email.message_from_string(record["message"], policy=email.policy.default)
    assert "Internal Server Error: /api/test/error/" in message["Subject"], message["Subject"]
    assert [a.addr_spec for a in message["To"].addresses] == admins, (message["To"], admins)
    assert [r.strip("<>") for r in record["to"]] == admins, record["to"]
    body = message.get_body(("plain",)).get_content()
    assert f"Request id: {request_id}" in body, body[:2000]
    assert ERROR_TYPE in body, "the mail has no traceback"
