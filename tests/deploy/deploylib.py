"""Helpers of the deploy suite: releases made from a copy of the working tree, `make` runs whose
output lines are timed as they come, a keep-alive request load through nginx that retries only
what provably never reached nginx, and nginx's access log as the evidence for each retry."""

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from conftest import CA_BUNDLE, ROOT

# Hang guards, generous on purpose (2 shared cores): never a speed check.
# A request: nginx gives up on the application after proxy_read_timeout (35 s); a new
# connection held while nginx is replaced waits a few seconds for its SYN to be resent.
REQUEST_TIMEOUT = 40
# `make deploy`: image builds, a verified backup and the rolling replacement (1-4 min here).
MAKE_TIMEOUT = 900
# `make update`: every image built again without cached apt layers (5-10 min here), then a deploy.
UPDATE_TIMEOUT = 2400
# Each user is one thread; stay under the API's per-user throttle (1000/min by default).
MIN_SECONDS_PER_REQUEST = 1 / 12
MAX_REQUESTS_PER_THREAD = 30_000  # the load is bounded in count (12/s for UPDATE_TIMEOUT) ...
MAX_LOAD_SECONDS = UPDATE_TIMEOUT + 60  # ... and in time
MAX_EXPORTS = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# What a client sees when the server closed a connection: no status line (RemoteDisconnected,
# a ConnectionResetError), a reset or closed socket on send, a TLS stream cut short.
CLOSED = (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


# ---- a release: a copy of the working tree, changed there -----------------------------------


def copy_working_tree(dest: str) -> int:
    """Copies what `git ls-files -co --exclude-standard` lists (tracked and new files, as they
    are now) into dest; returns the number of files. The real checkout is never changed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    copied = 0
    for name in filter(None, listed.split("\0")):
        source = Path(ROOT) / name
        if not os.path.lexists(source):  # deleted in the working tree
            continue
        target = Path(dest) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        copied += 1
    return copied


def edit(tree: str, path: str, old: str, new: str) -> None:
    """Replace one exact, unique piece of a file in a release copy."""
    target = Path(tree) / path
    with target.open(encoding="utf-8") as f:
        text = f.read()
    assert text.count(old) == 1, f"{path}: expected exactly one {old!r}"
    with target.open("w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


def write(tree: str, path: str, text: str) -> None:
    with (Path(tree) / path).open("w", encoding="utf-8") as f:
        f.write(text)


def latest_migration(tree: str, app_dir: str) -> str:
    """The highest-numbered migration of an app (its leaf in this project's linear history)."""
    names = [
        n[:-3]
        for n in (entry.name for entry in (Path(tree) / app_dir / "migrations").iterdir())
        if re.match(r"^\d{4}_.*\.py$", n)
    ]
    assert names, f"no migrations in {app_dir}"
    return max(names)


def new_tree() -> str:
    cache = Path(ROOT) / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="deploy-release-", dir=cache)


# ---- make, with its output lines timed ------------------------------------------------------


@dataclass
class MakeRun:
    returncode: int
    stdout: str
    stderr: str
    started: float
    seconds: float
    lines: list  # (time.time(), line without colours)

    def when(self, fragment: str, after: float = 0.0) -> float:
        """When the first line containing fragment (printed after `after`) came."""
        for t, line in self.lines:
            if t >= after and fragment in line:
                return t
        raise AssertionError(f"make never printed {fragment!r}:\n{self.stdout}\n{self.stderr}")

    def line_after(self, t0: float) -> float:
        """When the next line after the one printed at t0 came."""
        later = [t for t, _ in self.lines if t > t0]
        assert later, f"make printed nothing after {t0}:\n{self.stdout}"
        return later[0]


def run_make(
    stack, tree: str, target: str, env: dict, on_line=None, timeout: float = MAKE_TIMEOUT
) -> MakeRun:
    """`make -s TARGET` in tree against the test stack; on_line(line) is called for each line of
    its output as it comes (e.g. to start something at a given step); killed after timeout."""
    started = time.time()
    proc = subprocess.Popen(
        ["make", "-s", target, f"PROD_PROJECT={stack.project}", f"PROD_ENV={stack.env_file}"],
        cwd=tree, env={**os.environ, **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    # Hang guard: the whole process group goes after MAKE_TIMEOUT.
    guard = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    guard.start()
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()
    lines, out = [], []
    for raw in proc.stdout:
        line = ANSI.sub("", raw.rstrip("\n"))
        lines.append((time.time(), line))
        out.append(line)
        if on_line is not None:
            on_line(line)
    proc.wait()
    guard.cancel()
    reader.join(timeout=10)
    return MakeRun(
        proc.returncode, "\n".join(out), "".join(errors), started, time.time() - started, lines
    )


# ---- HTTP through nginx, one keep-alive connection per user -----------------------------------


class ClosedUnansweredError(Exception):
    """A reused, idle keep-alive connection was closed by the server before any byte of an
    answer: nginx closes an idle connection only when it has no request on it (its reload or
    graceful stop), so it never read this one. nginx's access log confirms it afterwards."""

    def __init__(self, request_id: str, why: str):
        super().__init__(f"reused idle connection closed unanswered ({why})")
        self.request_id, self.why = request_id, why


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict
    request_id: str

    def json(self):
        return json.loads(self.body)


class KeepAlive:
    """One HTTPS connection to nginx kept alive between requests, as a browser keeps one."""

    def __init__(self, base_url: str, token: str | None = None):
        url = urlsplit(base_url)
        self.host, self.port = url.hostname, url.port
        self.context = ssl.create_default_context(cafile=CA_BUNDLE)
        self.headers = {"Host": f"localhost:{url.port}", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        self.conn: http.client.HTTPSConnection | None = None
        self.answered = 0  # answers read on the current connection
        self.reopened = 0  # idle connections found closed before use: nothing was sent on them

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.answered = None, 0

    def _reusable(self) -> bool:
        """The connection answered before and the server has not closed it since: nothing is
        due on an idle connection, so anything readable is the server's FIN, close_notify or
        reset (the check urllib3 makes before reusing a pooled connection)."""
        if self.conn is None or self.conn.sock is None or not self.answered:
            return False
        readable, _, _ = select.select([self.conn.sock], [], [], 0)
        return not readable

    def send(self, method: str, path: str, body=None) -> Reply:
        request_id = uuid.uuid4().hex  # nginx logs and passes on a client's sane X-Request-ID
        reused = self._reusable()
        if not reused:
            if self.conn is not None:
                self.reopened += 1
            self.close()
            self.conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=REQUEST_TIMEOUT, context=self.context
            )
            self.conn.connect()  # refused, timed out, TLS failure: raised, a failure
        headers = {**self.headers, "X-Request-ID": request_id}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
        except CLOSED as exc:
            self.close()
            if reused:
                raise ClosedUnansweredError(request_id, type(exc).__name__) from exc
            raise  # on a new connection: not provably unseen, a failure
        except BaseException:
            self.close()
            raise
        data = response.read()
        self.answered += 1
        if response.will_close:
            self.close()
        return Reply(response.status, data, dict(response.getheaders()), request_id)


@dataclass
class Retry:
    request_id: str  # the first attempt's, which must not be in nginx's access log
    why: str
    what: str


@dataclass
class Failure:
    started: float
    what: str

    def __str__(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.started))} {self.what}"


@dataclass
class Done:
    method: str
    path: str
    status: int
    started: float
    finished: float
    request_id: str


@dataclass
class User:
    name: str
    token: str
    post_id: int | None = None


@dataclass
class Load:
    """Users reading and writing through nginx, one thread each (GET a page, POST a post with a
    unique title, PATCH it, GET /api/me/), plus one user asking for an export every 1.5 s; until
    stopped, bounded in count and time. Each request is sent once. The only retry: once, on a
    new connection, when a reused idle connection was closed before any byte of an answer
    (ClosedUnansweredError); anything else that is not the expected status is a failure."""

    base_url: str
    users: list
    exporter: User
    prefix: str  # every POSTed title starts with it (and is unique)
    done: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    retries: list = field(default_factory=list)
    acknowledged: list = field(default_factory=list)  # titles answered 201
    export_ids: list = field(default_factory=list)
    reopened: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list = field(default_factory=list)  # empty until started

    def call(self, conn: KeepAlive, method: str, path: str, body, want: int) -> Reply | None:
        started = time.time()
        try:
            try:
                reply = conn.send(method, path, body)
            except ClosedUnansweredError as exc:
                with self.lock:
                    self.retries.append(Retry(exc.request_id, exc.why, f"{method} {path}"))
                reply = conn.send(method, path, body)  # a new connection: no second retry
        except (OSError, http.client.HTTPException, ClosedUnansweredError) as exc:
            self._fail(started, f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        if reply.status != want:
            self._fail(
                started,
                f"{method} {path}: {reply.status} {reply.body[:200]!r} (id {reply.request_id})",
            )
            return None
        with self.lock:
            self.done.append(
                Done(method, path, reply.status, started, time.time(), reply.request_id)
            )
        return reply

    def _fail(self, started: float, what: str) -> None:
        with self.lock:
            self.failures.append(Failure(started, what))
        self.stop.wait(0.2)  # keep counting failures, not spinning on them

    def _user(self, user: User) -> None:
        conn = KeepAlive(self.base_url, user.token)
        deadline = time.monotonic() + MAX_LOAD_SECONDS
        for i in range(MAX_REQUESTS_PER_THREAD):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            started = time.monotonic()
            kind = i % 4
            if kind == 0:
                self.call(conn, "GET", "/api/posts/?page_size=5", None, 200)
            elif kind == 1:
                title = f"{self.prefix} {user.name} {i}"
                reply = self.call(conn, "POST", "/api/posts/", {"title": title, "body": "x"}, 201)
                if reply is not None:
                    user.post_id = reply.json()["id"]
                    with self.lock:
                        self.acknowledged.append(title)
            elif kind == 2:
                self.call(conn, "PATCH", f"/api/posts/{user.post_id}/", {"body": f"{i}"}, 200)
            else:
                self.call(conn, "GET", "/api/me/", None, 200)
            self.stop.wait(max(0.0, MIN_SECONDS_PER_REQUEST - (time.monotonic() - started)))
        conn.close()
        with self.lock:
            self.reopened += conn.reopened

    def _exports(self) -> None:
        conn = KeepAlive(self.base_url, self.exporter.token)
        while not self.stop.is_set() and len(self.export_ids) < MAX_EXPORTS:
            reply = self.call(conn, "POST", "/api/exports/", {"format": "csv"}, 202)
            if reply is not None:
                self.export_ids.append(reply.json()["id"])
            self.stop.wait(1.5)
        conn.close()
        with self.lock:
            self.reopened += conn.reopened

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._user, args=(u,), daemon=True) for u in self.users
        ]
        self.threads.append(threading.Thread(target=self._exports, daemon=True))
        for t in self.threads:
            t.start()

    def running(self) -> bool:
        return bool(self.threads)

    def finish(self) -> None:
        """Stops the load (one that never started: nothing to do) and waits for its threads."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT * 2 + 5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.finish()

    def started_between(self, t0: float, t1: float) -> list:
        return [d for d in self.done if t0 <= d.started <= t1]


def wait_exports_done(base_url: str, user: User, ids: list, timeout: float = 240) -> dict:
    """Each export's final status (done or failed), polled through nginx; generous timeout
    (the worker may still be busy with a long export)."""
    conn = KeepAlive(base_url, user.token)
    deadline = time.monotonic() + timeout
    states: dict = {}
    try:
        while time.monotonic() < deadline:
            for i in ids:
                if states.get(i) not in ("done", "failed"):
                    states[i] = conn.send("GET", f"/api/exports/{i}/").json()["status"]
            if all(states.get(i) in ("done", "failed") for i in ids):
                break
            time.sleep(1)
    finally:
        conn.close()
    return states


# ---- nginx's access log: which requests reached nginx ------------------------------------------


class NginxLogs:
    """Every access-log line of the stack's nginx containers from now on, including those of a
    container a deploy replaces (followed with `docker logs -f` until it is removed)."""

    def __init__(self, stack):
        self.stack = stack
        self.since = f"{time.time() - 1:.3f}"
        self.followed: dict[str, tuple] = {}
        for cid in stack.container_ids("nginx"):
            out = tempfile.TemporaryFile()  # noqa: SIM115 (read and closed in collect)
            proc = subprocess.Popen(
                ["docker", "logs", "-f", "--since", self.since, cid],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            self.followed[cid] = (proc, out)
        assert self.followed, "no nginx container to follow"

    def collect(self) -> list[dict]:
        """The access-log entries (parsed JSON lines) up to now."""
        time.sleep(2.5)  # nginx flushes its buffered access log every second
        chunks = []
        for cid in self.stack.container_ids("nginx"):
            if cid not in self.followed:
                logs = subprocess.run(
                    ["docker", "logs", "--since", self.since, cid],
                    capture_output=True, text=True, check=True, timeout=60,
                )  # fmt: skip
                chunks.append(logs.stdout)
        for proc, out in self.followed.values():
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)
            out.seek(0)
            chunks.append(out.read().decode(errors="replace"))
            out.close()
        self.followed = {}
        entries = []
        for line in "\n".join(chunks).splitlines():
            if line.startswith("{") and '"request_id"' in line:
                with contextlib.suppress(ValueError):  # a line cut short
                    entries.append(json.loads(line))
        return entries


def evidence_problems(load: Load, entries: list[dict]) -> list[str]:
    """What nginx's access log contradicts: an answered request it did not log (the log is
    incomplete, so it proves nothing), or a retried request it did log (it reached nginx)."""
    logged = {e["request_id"] for e in entries}
    problems = []
    unlogged = [d.request_id for d in load.done if d.request_id not in logged]
    if unlogged or not load.done:
        problems.append(
            f"{len(unlogged)} of {len(load.done)} answered requests are not in nginx's access "
            f"log, e.g. {unlogged[:3]}"
        )
    problems += [
        f"retried {r.what} (first attempt {r.request_id}, {r.why}) had reached nginx"
        for r in load.retries
        if r.request_id in logged
    ]
    return problems


def retry_summary(load: Load) -> str:
    whys: dict[str, int] = {}
    for r in load.retries:
        whys[r.why] = whys.get(r.why, 0) + 1
    detail = ", ".join(f"{n} {why}" for why, n in sorted(whys.items()))
    return f"{len(load.retries)} retried" + (f" ({detail})" if detail else "")


def manage_json(stack, code: str):
    """Run code in the web container's Django shell; it must print one JSON line last."""
    out = stack.manage(code)
    return json.loads([line for line in out.splitlines() if line.strip()][-1])


def fresh_id() -> str:
    return uuid.uuid4().hex[:8]
