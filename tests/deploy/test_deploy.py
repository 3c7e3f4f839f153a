"""`make deploy` and `make rollback` on the running prod stack under load
(docs/deploy-single-vm.md): a bounded read/write request loop through nginx sees zero failed
requests, exports submitted while the worker is swapped all finish, and rollback returns to
the previous tag.
Disruptive (replaces every app container), so this suite runs late."""

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.client import RemoteDisconnected

import pytest
import requests
from conftest import record_timing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THREADS = 6
# Each thread is one user; stay under the API's per-user throttle (1000/min by default).
MIN_SECONDS_PER_REQUEST = 1 / 12
MAX_REQUESTS_PER_THREAD = 5000  # bounded in count ...
MAX_SECONDS = 420  # ... and in time
MAX_EXPORTS = 40


def make(stack, target: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        ["make", "-s", target, f"PROD_PROJECT={stack.project}", f"PROD_ENV={stack.env_file}"],
        cwd=ROOT, capture_output=True, text=True, timeout=MAX_SECONDS,
    )  # fmt: skip
    return done, time.monotonic() - start


def tags(stack) -> dict[str, str]:
    with open(stack.env_file + ".tags") as f:
        return dict(
            line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#")
        )


def running_tag(stack, service: str) -> set[str]:
    return {
        stack.inspect(c)["Config"]["Image"].rsplit(":", 1)[1] for c in stack.container_ids(service)
    }


def _causes(exc: BaseException):
    """The exception, its arguments and its cause chain (urllib3 wraps the socket error)."""
    seen = []
    todo = [exc]
    while todo and len(seen) < 20:
        e = todo.pop()
        if not isinstance(e, BaseException) or e in seen:
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, *e.args, getattr(e, "reason", None)]
    return seen


@dataclass
class Load:
    """Reads and writes through nginx from several threads until stopped (bounded)."""

    users: list
    ok: int = 0
    retried: int = 0
    failures: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _send(self, user, method: str, url: str, **kwargs):
        """One request, retried once only when the server closed an idle keep-alive connection
        as the request went out (no response at all: nginx's old workers close idle
        connections when nginx reloads, before reading anything). Browsers and most HTTP
        clients retry exactly this case (RFC 9112, 9.3.1); any other error is a failure."""
        try:
            return user.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            if not any(
                isinstance(a, (RemoteDisconnected, ConnectionResetError)) for a in _causes(exc)
            ):
                raise
            with self.lock:
                self.retried += 1
            return user.request(method, url, **kwargs)

    def _one(self, user, i: int) -> None:
        kind = i % 4
        if kind == 0:
            r = self._send(user, "GET", "/api/posts/", params={"page_size": 5})
            want = 200
        elif kind == 1:
            post = {"title": f"deploy {i}", "body": "under load"}
            r = self._send(user, "POST", "/api/posts/", json=post)
            want = 201
            if r.status_code == 201:
                user.last_post = r.json()["id"]
        elif kind == 2:
            r = self._send(user, "PATCH", f"/api/posts/{user.last_post}/", json={"body": f"{i}"})
            want = 200
        else:
            r = self._send(user, "GET", "/api/me/")
            want = 200
        if r.status_code != want:
            raise AssertionError(
                f"{r.request.method} {r.request.path_url}: {r.status_code} {r.text[:200]}"
            )

    def _run(self, user) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for i in range(MAX_REQUESTS_PER_THREAD):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                self._one(user, i)
                with self.lock:
                    self.ok += 1
            except (requests.RequestException, AssertionError) as exc:
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {exc}")
                self.stop.wait(0.2)  # keep counting failures, not spinning on them
            self.stop.wait(max(0.0, MIN_SECONDS_PER_REQUEST - (time.monotonic() - started)))

    def __enter__(self):
        self.threads = [
            threading.Thread(target=self._run, args=(u,), daemon=True) for u in self.users
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


class Exports:
    """Submits an export now and then until stopped (at most MAX_EXPORTS)."""

    def __init__(self, user):
        self.user, self.ids, self.errors = user, [], []
        self.stop = threading.Event()

    def _run(self):
        while not self.stop.is_set() and len(self.ids) < MAX_EXPORTS:
            try:
                r = self.user.post("/api/exports/", json={"format": "csv"})
                if r.status_code == 202:
                    self.ids.append(r.json()["id"])
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.errors.append(str(exc))
            self.stop.wait(1.5)

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)

    def wait_all_done(self, timeout: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states = {}
        while time.monotonic() < deadline:
            states = {i: self.user.get(f"/api/exports/{i}/").json()["status"] for i in self.ids}
            if all(s in ("done", "failed") for s in states.values()):
                break
            time.sleep(1)
        return states


@pytest.fixture(scope="module")
def cleanup_images():
    made = []
    yield made
    for tag in made:
        for name in ("web", "worker", "nginx", "postgres", "redis"):
            subprocess.run(
                ["docker", "image", "rm", f"drs/{name}:{tag}"], capture_output=True, check=False
            )


def _deploy_under_load(
    stack, make_user, target: str
) -> tuple[subprocess.CompletedProcess, Load, Exports, float]:
    users = [make_user(f"load{i}") for i in range(THREADS)]
    for u in users:
        r = u.post("/api/posts/", json={"title": "seed", "body": "x"})
        assert r.status_code == 201, r.text
        u.last_post = r.json()["id"]
    exporter = make_user("exports")
    for i in range(5):
        exporter.post("/api/posts/", json={"title": f"export me {i}", "body": "x"})
    with Load(users) as load, Exports(exporter) as exports:
        time.sleep(2)  # load is flowing before the deploy starts
        done, took = make(stack, target)
        time.sleep(2)  # and continues on the new containers
    return done, load, exports, took


def test_deploy_under_load_then_rollback(stack, make_user, cleanup_images):
    before = running_tag(stack, "web")
    assert len(before) == 1
    previous = before.pop()

    done, load, exports, took = _deploy_under_load(stack, make_user, "deploy")
    # The tag built (for removal at the end), also when the deploy failed part-way.
    built = re.search(r"building images (\S+)", done.stdout)
    if built:
        cleanup_images.append(built.group(1))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    new = tags(stack)["DRS_TAG"]
    assert tags(stack)["DRS_PREVIOUS_TAG"] == previous
    assert new != previous
    for service in ("web", "worker", "beat"):
        assert running_tag(stack, service) == {new}, service
    assert len(stack.container_ids("web")) == 1
    assert len(stack.container_ids("worker")) == 1
    record_timing(f"deploy: make deploy {took:.0f}s, {load.ok} requests through nginx, "
           f"{len(load.failures)} failed, {load.retried} retried on a closed keep-alive "
           f"connection, {len(exports.ids)} exports submitted")  # fmt: skip
    assert load.ok > 0
    assert load.failures == [], (
        f"{len(load.failures)} of {load.ok + len(load.failures)} failed:\n"
        + "\n".join(load.failures[:20])
    )
    assert exports.errors == []
    assert exports.ids, "no export was submitted during the deploy"
    states = exports.wait_all_done()
    assert set(states.values()) == {"done"}, states

    done, load, exports, took = _deploy_under_load(stack, make_user, "rollback")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert tags(stack)["DRS_TAG"] == previous
    assert tags(stack)["DRS_PREVIOUS_TAG"] == new
    for service in ("web", "worker", "beat"):
        assert running_tag(stack, service) == {previous}, service
    record_timing(f"deploy: make rollback {took:.0f}s, {load.ok} requests, {len(load.failures)} failed, "
           f"{load.retried} retried on a closed keep-alive connection, "
           f"{len(exports.ids)} exports submitted")  # fmt: skip
    assert load.failures == [], "\n".join(load.failures[:20])
    states = exports.wait_all_done()
    assert set(states.values()) == {"done"}, states
    stack.wait_healthy("nginx")
