"""Helpers of the fault suite: bounded request loads, waits, and the figures it reports."""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from conftest import RESULTS_DIR, Client

ROOT = Path(__file__).resolve().parents[2]
FIGURES = Path(RESULTS_DIR) / "reliability-figures.jsonl"
# Longest a request may take: nginx gives up on the application after proxy_read_timeout (35 s);
# anything slower is a hang.
REQUEST_TIMEOUT = 40
# docs/reliability.md: requests that need the database answer "JSON 503 with Retry-After: 5
# (code database_unavailable)", from DRF views and plain Django views alike.
DOCUMENTED_RETRY_AFTER = "5"
DATABASE_UNAVAILABLE = "database_unavailable"


def record(scenario: str, **figures) -> None:
    """Append the scenario's figures (requests sent, failed, tasks lost) for the report."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"scenario": scenario, **figures}) + "\n")
    print(scenario, figures)


def wait_for(predicate, timeout: float, message: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except requests.RequestException as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} (after {timeout:.0f} s; last error: {last_error})")


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (connection error)
    seconds: float
    post_id: int | None = None
    title: str = ""
    body: dict | None = None
    content_type: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    """One thread per client, each sending requests one after another until stopped or until
    ``max_requests`` each: writes (POST a post) or reads (GET ``read_path``). Every answer is
    kept. Each client is its own user and paces itself (``pause``), staying under the per-user
    throttle."""

    clients: list
    max_requests: int = 1500
    write: bool = True
    pause: float = 0.05
    read_path: str = "/api/posts/"
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(n,), daemon=True)
            for n in range(len(self.clients))
        ]

    def _one(self, session, n: int) -> Outcome:
        title = f"load-{n}-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        try:
            if self.write:
                r = session.post(
                    "/api/posts/", json={"title": title, "body": "x"}, timeout=REQUEST_TIMEOUT
                )
            else:
                r = session.get(self.read_path, timeout=REQUEST_TIMEOUT)
        except requests.RequestException:
            return Outcome(None, time.monotonic() - started, title=title)
        elapsed = time.monotonic() - started
        try:
            body = r.json()
        except ValueError:
            body = None
        post_id = body.get("id") if (r.status_code == 201 and isinstance(body, dict)) else None
        return Outcome(
            r.status_code,
            elapsed,
            post_id,
            title,
            body,
            r.headers.get("Content-Type", ""),
            r.headers.get("Retry-After"),
        )

    def _run(self, n: int) -> None:
        session = self.clients[n]
        for _ in range(self.max_requests):
            if self._stop.is_set():
                break
            outcome = self._one(session, n)
            with self._lock:
                self.outcomes.append(outcome)
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self):
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=REQUEST_TIMEOUT + 5)

    def count(self, status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def sent(self) -> int:
        return len(self.outcomes)

    def acknowledged(self) -> dict[int, str]:
        return {o.post_id: o.title for o in self.outcomes if o.post_id is not None}

    def wait_for_requests(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: self.sent() >= n, timeout, f"load did not reach {n} requests")


def posts_query(stack, expression: str, **values):
    """The JSON value of ``expression`` evaluated in the web container's Django shell, with
    ``Post``, ``Count`` and each of ``values`` (given by repr) in scope."""
    assigned = "".join(f"{name} = {value!r}; " for name, value in values.items())
    out = stack.manage(
        "import json, sys; from django.db.models import Count; from apps.posts.models import Post; "
        f"{assigned}sys.stdout.write('RESULT' + json.dumps({expression}))"
    )
    return json.loads(out.split("RESULT", 1)[1])


def existing_posts(stack, ids) -> dict[int, str]:
    """Titles of the given post ids that exist in the database (read in the web container)."""
    found = posts_query(
        stack, "dict(Post.objects.filter(pk__in=ids).values_list('pk', 'title'))", ids=sorted(ids)
    )
    return {int(k): v for k, v in found.items()}


def clients(make_user, n: int, prefix: str = "load") -> list:
    """``n`` token-authenticated clients, each a user of its own."""
    return [make_user(f"{prefix}{i}") for i in range(n)]


def database_unavailable_answers(outcomes) -> int:
    """How many of ``outcomes`` were 503s, each checked against the documented contract: JSON,
    ``error.status`` 503, ``error.code`` database_unavailable, ``Retry-After: 5``."""
    answers = [o for o in outcomes if o.status == 503]
    for o in answers:
        assert o.content_type.startswith("application/json"), o.content_type
        assert isinstance(o.body, dict), o.body
        assert o.body["error"]["status"] == 503, o.body
        assert o.body["error"]["code"] == DATABASE_UNAVAILABLE, o.body
        assert o.retry_after == DOCUMENTED_RETRY_AFTER, f"Retry-After: {o.retry_after}"
    return len(answers)


def admin_client(stack, base_url: str) -> Client:
    """A client holding a Django admin session of a new staff user: ``GET /admin/`` is a plain
    Django view (the middleware's path, not DRF's) that reads the session and the user from the
    database. The session is made with django.contrib.auth.login, as a login form would."""
    username = f"staff-{uuid.uuid4().hex[:8]}"
    out = stack.manage(
        "import sys; from importlib import import_module; from django.conf import settings; "
        "from django.contrib.auth import get_user_model, login; "
        "from django.http import HttpRequest; "
        f"user = get_user_model().objects.create_user({username!r}, is_staff=True); "
        "request = HttpRequest(); "
        "request.session = import_module(settings.SESSION_ENGINE).SessionStore(); "
        "login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0]); "
        "request.session.save(); "
        "sys.stdout.write('RESULT' + settings.SESSION_COOKIE_NAME + '=' + "
        "request.session.session_key)"
    )
    c = Client(base_url)
    c.headers["Cookie"] = out.split("RESULT", 1)[1].strip()
    r = c.get("/admin/")
    assert r.status_code == 200, r.status_code
    assert "text/html" in r.headers["Content-Type"], r.headers["Content-Type"]
    return c


def wait_done(user, export_id: str, timeout: float = 120) -> dict:
    """The export once it is ``done`` or ``failed``."""

    def finished():
        export = user.get(f"/api/exports/{export_id}/").json()
        return export if export["status"] in ("done", "failed") else None

    return wait_for(finished, timeout, f"export {export_id} did not finish", 1)


def worker_containers(stack) -> list[tuple[str, str]]:
    """(container id, start time) of each worker: a restart or a replacement changes it."""
    return [(c, stack.inspect(c)["State"]["StartedAt"]) for c in stack.container_ids("worker")]


def export_completes_on(stack, user, workers) -> dict:
    """Request an export now and wait for it: it must end ``done`` while the workers are still
    ``workers`` (the same containers, not restarted): they reconnected by themselves."""
    r = user.post("/api/exports/", json={"format": "csv"})
    assert r.status_code == 202, r.text
    export = wait_done(user, r.json()["id"])
    assert export["status"] == "done", export
    assert worker_containers(stack) == workers, "the worker was restarted or replaced"
    return export
