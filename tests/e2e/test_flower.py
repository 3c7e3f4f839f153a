"""Flower, the Celery monitor, through nginx at /flower/ (the opt-in profile `flower`, switched
on in the test stack's env file by scripts/test.sh; docs/observability.md): credentials asked
for and checked, the running workers listed, a finished task shown, no remote control."""

import re
import time
import uuid
from datetime import UTC, datetime

import pytest

from conftest import Client

# Flower tells the workers to send task events every 5 s (its enable_events timer).
EVENTS_ENABLED_AFTER = 12


def credentials(stack) -> tuple[str, str]:
    return stack.env_value("FLOWER_USER", "flower"), stack.env_value("FLOWER_PASSWORD")


def running_workers(stack) -> set[str]:
    """Celery's names of the running worker containers (`--hostname worker@%h`: the container's
    host name)."""
    ids = stack.container_ids("worker")
    assert ids, "no running worker container"
    return {f"worker@{stack.inspect(cid)['Config']['Hostname']}" for cid in ids}


def started_at(stack, cid: str) -> float:
    """When the container last started (epoch seconds); Docker gives nanoseconds, cut to whole
    seconds."""
    stamp = stack.inspect(cid)["State"]["StartedAt"]
    whole = re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", stamp)
    assert whole, stamp
    return datetime.fromisoformat(whole.group(0)).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def flower(base_url, stack):
    """A client of the stack's nginx that sends Flower's credentials."""
    with Client(base_url) as c:
        c.auth = credentials(stack)
        yield c


def workers_answering(flower, expected: set[str], timeout: float = 30) -> dict:
    """Flower's /api/workers?refresh=1 (a broadcast `inspect`, 1 s for replies) until every
    expected worker answered, or the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        r = flower.get("/flower/api/workers", params={"refresh": "1"})
        assert r.status_code == 200, r.text[:300]
        workers = r.json()
        if expected <= set(workers) or time.monotonic() > deadline:
            return workers
        time.sleep(1)


# Pages ask the browser for basic auth (WWW-Authenticate); Flower's API answers a bare 401.
@pytest.mark.parametrize(
    ("path", "prompts"),
    [("/flower/", True), ("/flower/tasks", True), ("/flower/api/workers", False)],
)
def test_flower_asks_for_credentials(client, path, prompts):
    r = client.get(path)
    assert r.status_code == 401, (path, r.status_code)
    if prompts:
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic "), r.headers


def test_flower_refuses_wrong_credentials(client, stack):
    user, password = credentials(stack)
    wrong = {
        "wrong password": (user, "wrong-" + uuid.uuid4().hex),
        "wrong user": ("not-" + user, password),
        "password one character short": (user, password[:-1]),
    }
    for case, auth in wrong.items():
        r = client.get("/flower/api/workers", auth=auth)
        assert r.status_code == 401, (case, r.status_code)


def test_flower_lists_the_running_workers(flower, stack):
    """Every running worker container answers Flower's inspect, with its pool of
    CELERY_CONCURRENCY processes."""
    expected = running_workers(stack)
    workers = workers_answering(flower, expected)
    assert expected <= set(workers), (sorted(expected), sorted(workers))
    concurrency = int(stack.env_value("CELERY_CONCURRENCY", "2"))
    for name in expected:
        assert workers[name]["stats"]["pool"]["max-concurrency"] == concurrency, workers[name]


def test_flower_dashboard_and_its_assets_load(flower, stack):
    """The dashboard page, its static files under /flower/static/, and the workers table it
    loads (built from the workers' heartbeat events)."""
    page = flower.get("/flower/")
    assert page.status_code == 200, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/flower/static/[^"]+)"', page.text)
    assert any(".js" in a for a in assets), assets
    for asset in assets:
        assert flower.get(asset).status_code == 200, asset
    expected = running_workers(stack)
    deadline = time.monotonic() + 30
    while True:
        table = flower.get("/flower/workers", params={"json": "1"})
        assert table.status_code == 200, table.text[:300]
        shown = {row["hostname"]: row["status"] for row in table.json()["data"]}
        if all(shown.get(name) for name in expected) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(shown.get(name) for name in expected), (sorted(expected), shown)


def test_flower_shows_a_finished_export_task(flower, stack, make_user):
    """An export run by the worker appears in Flower's tasks as succeeded (task events)."""
    starts = [started_at(stack, cid) for cid in stack.container_ids("flower")]
    starts += [started_at(stack, cid) for cid in stack.container_ids("worker")]
    time.sleep(max(0.0, max(starts) + EVENTS_ENABLED_AFTER - time.time()))
    alice = make_user("flower")
    r = alice.post("/api/exports/", json={"format": "csv"})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    deadline = time.monotonic() + 60
    task = None
    while task is None or task["state"] != "SUCCESS":
        assert time.monotonic() < deadline, f"export {export_id} not shown as done: {task}"
        time.sleep(1)
        r = flower.get("/flower/api/tasks", params={"taskname": "apps.exports.tasks.run_export"})
        assert r.status_code == 200, r.text[:300]
        task = next((t for t in r.json().values() if export_id in (t.get("args") or "")), None)
    assert task["worker"] in running_workers(stack), task


def test_flower_is_read_only(flower, stack):
    """Remote control is off: growing a worker's pool is refused, and the pool stays as it was."""
    expected = running_workers(stack)
    name = sorted(expected)[0]
    before = workers_answering(flower, expected)[name]["stats"]["pool"]["max-concurrency"]
    r = flower.post(f"/flower/api/worker/pool/grow/{name}", params={"n": "1"})
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert "read only" in r.text.lower(), r.text[:300]
    after = workers_answering(flower, expected)[name]["stats"]["pool"]["max-concurrency"]
    assert after == before


@pytest.mark.parametrize("path", ["/flower/metrics", "/flower/healthcheck"])
def test_flower_pages_without_credentials_are_not_served(client, flower, path):
    """Flower answers these without asking for credentials: nginx does not pass them on, with
    credentials or without."""
    for case, session in (("without credentials", client), ("with credentials", flower)):
        r = session.get(path)
        assert r.status_code == 404, (path, case, r.status_code)
        assert r.json()["error"]["code"] == "not_found", (path, case, r.text[:300])
