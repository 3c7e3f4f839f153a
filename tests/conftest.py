"""Shared helpers for the host-side suites (e2e, and later faults/fuzz/hardening): they talk to
a running prod stack through nginx on 127.0.0.1 and drive it with `docker compose`.
E2E_BASE_URL is nginx's HTTPS port (trusting E2E_CA_BUNDLE), E2E_HTTP_URL its HTTP port."""

import json
import os
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

# ROOT, COMPOSE and RESULTS_DIR stay strings: suites import them (cwd=, argv, " ".join, Path(...)).
ROOT = str(Path(__file__).resolve().parents[1])
# Every compose call goes through it (its usage: scripts/compose.sh itself).
COMPOSE = str(Path(ROOT, "scripts", "compose.sh"))
# Where scripts/test.sh collects results; suites append their measured figures here.
RESULTS_DIR = os.environ.get("TEST_RESULTS") or str(Path(ROOT, ".cache", "test-results"))


def record_timing(line: str) -> None:
    """Figures for the report (timings are recorded, never asserted)."""
    Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    with (Path(RESULTS_DIR) / "timings.txt").open("a") as f:
        f.write(line + "\n")


# The stack serves HTTPS with a CA made for the run (scripts/test.sh): every requests call in
# the suites trusts it, also those not made through Client (the suites talk to nothing else).
CA_BUNDLE = os.environ.get("E2E_CA_BUNDLE")
if CA_BUNDLE:
    os.environ["REQUESTS_CA_BUNDLE"] = CA_BUNDLE


def raw_request(url: str, host: str, path: str) -> bytes:
    """One request on a fresh connection; every byte nginx sent before it closed. The connect
    (and for HTTPS the handshake, against the run's CA) must succeed: a refused connection
    means nothing listens, which fails the test. Hang guard: 10 s per socket operation."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=os.environ["E2E_CA_BUNDLE"])
        sock = context.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


class Stack:
    """The compose project under test (started by scripts/test.sh)."""

    def __init__(self, project: str, env_file: str):
        self.project = project
        self.env_file = env_file

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """`docker compose ARGS` on the stack (scripts/compose.sh prod), whatever its exit
        status."""
        return subprocess.run(
            [*self.compose_command, *args],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    @property
    def compose_command(self) -> list[str]:
        """The command line of `docker compose` on this stack, to add arguments to."""
        return [COMPOSE, "--project", self.project, "--env-file", self.env_file, "prod"]

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        done = self.run(*args, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def env_values(self) -> dict[str, str]:
        """The stack's env file, as compose reads it (NAME=value lines; comments skipped)."""
        with Path(self.env_file).open(encoding="utf-8") as handle:
            pairs = (
                line.strip().split("=", 1) for line in handle if "=" in line and line[0] != "#"
            )
            return dict(pairs)

    def env_value(self, name: str, default: str = "") -> str:
        """One variable of the env file; ``default`` (the documented default) when unset or
        empty."""
        return self.env_values().get(name) or default

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def manage(self, code: str) -> str:
        """Run Python in a Django shell inside the running web container, as an operator's
        `make shell` does: without the per-request statement timeout (seeding is slow work)."""
        return self.compose(
            "exec", "-T", "-e", "DJANGO_DB_STATEMENT_TIMEOUT_MS=0", "web",
            "python", "manage.py", "shell", "-c", code,
        )  # fmt: skip

    def readyz(self) -> tuple[int, dict]:
        """(exit status, JSON) of `make readyz`: GET /readyz asked inside the web container, as
        monitors on the host do (nginx does not serve it to the public)."""
        done = self.run("exec", "-T", "web", "python", "manage.py", "readyz", timeout=60)
        assert done.stdout.strip(), f"make readyz printed nothing: {done.stderr}"
        return done.returncode, json.loads(done.stdout)

    def wait_healthy(self, service: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.container_ids(service)
            states = [self.inspect(c)["State"].get("Health", {}).get("Status") for c in ids]
            if ids and all(s == "healthy" for s in states):
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy after {timeout}s")


def seed_posts(stack: Stack, username: str, rows: int, body: str = "lorem ipsum") -> None:
    """``rows`` posts of ``username`` titled "row 0" .. "row <rows-1>", in one INSERT ... SELECT
    in the database (seconds, where the ORM's bulk_create takes minutes)."""
    stack.manage(
        "from django.contrib.auth import get_user_model; from django.db import connection; "
        "from apps.posts.models import Post; "
        f"author = get_user_model().objects.get(username={username!r}); "
        "cursor = connection.cursor(); "
        "cursor.execute("
        "f'INSERT INTO {Post._meta.db_table} (author_id, title, body, created_at, updated_at) "
        "SELECT %s, %s || i, %s, now(), now() FROM generate_series(0, %s - 1) AS i', "
        f"[author.pk, 'row ', {body!r}, {rows}])"
    )


@pytest.fixture(scope="session")
def stack() -> Stack:
    project, env_file = os.environ.get("E2E_PROJECT"), os.environ.get("E2E_ENV_FILE")
    if not project or not env_file:
        pytest.fail("E2E_PROJECT/E2E_ENV_FILE are not set: run these tests with `make test-e2e`")
    return Stack(project, env_file)


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("E2E_BASE_URL")
    if not url:
        pytest.fail("E2E_BASE_URL is not set: run these tests with `make test-e2e`")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def http_url() -> str:
    """nginx's plain-HTTP port (redirects to HTTPS)."""
    url = os.environ.get("E2E_HTTP_URL")
    if not url:
        pytest.fail("E2E_HTTP_URL is not set: run these tests with `make test-e2e`")
    return url.rstrip("/")


class Client(requests.Session):
    """requests.Session bound to the stack's nginx, sending the served Host name."""

    def __init__(self, base_url: str, host: str = "localhost"):
        super().__init__()
        self.base_url = base_url
        self.headers["Host"] = f"{host}:{urlsplit(base_url).port}"

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 15)
        kwargs.setdefault("allow_redirects", False)
        if CA_BUNDLE:
            kwargs.setdefault("verify", CA_BUNDLE)
        if url.startswith("/"):
            url = self.base_url + url
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def client(base_url) -> Client:
    with Client(base_url) as c:
        yield c


def log_in(client: Client, username: str, password: str):
    """POST /api/auth/token/ with the right password: the answer. The login throttle (10/min per
    address) is shared by every suite on the stack: when it bites, wait as long as the API says
    (Retry-After) and log in again, a few times."""
    for _ in range(4):
        r = client.post("/api/auth/token/", json={"username": username, "password": password})
        if r.status_code != 429:
            break
        time.sleep(min(float(r.headers.get("Retry-After", "10")) + 1, 65))
    return r


@pytest.fixture(scope="session")
def make_user(stack, base_url):
    """Creates a user in the stack's database and returns a token-authenticated client (with
    the user's username and password)."""
    clients = []

    def make(prefix: str = "user") -> Client:
        username = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        # The user's API token is made as the login view makes it (apps.accounts.services), in
        # the same Django shell: no login request, so the per-address login throttle (10/min),
        # which some suites use up on purpose, never holds a test up here. Logging in is tested
        # where it is the subject (log_in: tests/e2e/test_api.py; tests/fuzz, tests/abuse).
        out = stack.manage(
            "from django.contrib.auth import get_user_model; "
            "from apps.accounts.services import token_create; "
            f"user = get_user_model().objects.create_user({username!r}, password={password!r}); "
            "print(token_create(user=user)[1])"
        )
        token = [line for line in out.splitlines() if line.strip()][-1].strip()
        c = Client(base_url)
        c.headers["Authorization"] = f"Token {token}"
        c.username, c.password = username, password
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
