"""`make dev` itself, as the README promises it: the stack comes up healthy, the URLs it prints
answer, the superuser and the demo data are there, and a code change is picked up by the
running web server (runserver's autoreload) and by the worker and beat (watchfiles) without
any container restarting.

It runs as the README's developer does: not root, in the `docker` group, with no `dockerd` on
its PATH (Docker Desktop's case: Docker answers, nothing is installed). When the suite itself
runs as root (CI, a server), `make dev` runs as such a user, made for the test and removed after.

Never touches the developer's checkout or dev stack: the working tree is copied into
.cache/ (so Docker can bind-mount it), and `make dev` runs there as its own compose project
on free 127.0.0.1 ports. The copy and the project (volumes included) are removed afterwards,
pass or fail."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import RESULTS_DIR, record_timing

ROOT = Path(__file__).resolve().parents[2]
# Hang guards, not speed limits: generous on 2 shared cores.
MAKE_DEV_TIMEOUT = 1200  # the images are normally built already; a cold build takes minutes
RELOAD_TIMEOUT = 120
EXPORT_TIMEOUT = 120
TEST_DJANGO_TIMEOUT = 900
# The dev stack as the README describes it: runserver, worker, beat, Postgres, Redis, and the
# one-shot migrate (migrations, superuser, demo data).
DOCUMENTED_SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat"}
ONE_SHOT_SERVICES = {"migrate"}
# A laptop user's PATH: no /usr/sbin, where Debian's dockerd lives.
DEVELOPER_PATH = "/usr/local/bin:/usr/bin:/bin"
DEVELOPER = "drs-devtest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_file_values(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def copy_working_tree(dest: Path) -> int:
    """Copy what git would see of the working tree (tracked and untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    copied = 0
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    return copied


@dataclass
class DevStack:
    """`make dev` run in a copy of the working tree, as compose project `project`."""

    root: Path
    project: str
    ports: dict[str, int]
    output: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **{name: str(port) for name, port in self.ports.items()}}

    def make(self, target: str, timeout: float) -> subprocess.CompletedProcess:
        """`make TARGET DEV_PROJECT=... DEV_WEB_PORT=...`, the README's way to move the ports,
        as the developer (see as_developer)."""
        variables = [f"{name}={port}" for name, port in self.ports.items()]
        return subprocess.run(
            [*as_developer(self.root), "make", target, f"DEV_PROJECT={self.project}", *variables],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )  # fmt: skip

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        cmd = [str(self.root / "scripts" / "compose.sh"), "--project", self.project, "dev", *args]
        done = subprocess.run(
            cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        assert len(ids) == 1, f"expected one {service} container, found {ids}"
        return ids[0]

    def state(self, service: str) -> dict:
        """Id, start time and restart count of the service's container."""
        out = subprocess.run(
            ["docker", "inspect", "--format",
             "{{.Id}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Status}}",
             self.container(service)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return dict(zip(("id", "started_at", "restart_count", "status"), out, strict=True))

    def processes(self, service: str) -> list[tuple[int, str]]:
        """(host pid, command line) of every process in the service's container."""
        out = subprocess.run(
            ["docker", "top", self.container(service), "-eo", "pid,args"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        rows = [line.strip().split(None, 1) for line in out[1:] if line.strip()]
        return [(int(pid), args) for pid, args in rows]

    def pids(self, service: str, script: str) -> set[int]:
        """Processes of the Python script `script` (celery, watchfiles, manage.py)."""
        return {
            pid
            for pid, args in self.processes(service)
            if len(argv := args.split()) > 1 and Path(argv[1]).name == script
        }

    def edit(self, relative: str, addition: str) -> None:
        """Append to a file of the copy in place (same inode, as an editor saving would)."""
        with (self.root / "services" / "web" / relative).open("a") as f:
            f.write(addition)


def compose_plugin() -> str:
    """Where this machine's Docker CLI finds its compose plugin."""
    out = subprocess.run(
        ["docker", "info", "--format", "{{range .ClientInfo.Plugins}}{{.Name}} {{.Path}}\n{{end}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    paths = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("compose ")]
    assert paths, "docker compose is not installed for this user"
    return paths[0]


def as_developer(root: Path) -> list[str]:
    """The command prefix that runs as a non-root member of the docker group with a laptop's
    PATH: nothing when the suite is not root; else the user DEVELOPER (made once), whose home
    is in the copy, with a copy of the machine's compose plugin in ~/.docker/cli-plugins as
    Docker Desktop provides it."""
    if os.geteuid() != 0:
        return []
    assert shutil.which("dockerd", path=DEVELOPER_PATH) is None, "dockerd on the developer's PATH"
    if subprocess.run(["id", DEVELOPER], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--no-create-home", "--gid", "docker", "--shell", "/bin/sh", DEVELOPER],
            check=True,
        )
    home = root / ".home"
    (home / ".docker" / "cli-plugins").mkdir(parents=True, exist_ok=True)
    # A copy: root's own plugin folder is not readable by other users.
    shutil.copy2(compose_plugin(), home / ".docker" / "cli-plugins" / "docker-compose")
    subprocess.run(["chown", "-R", f"{DEVELOPER}:docker", str(root)], check=True)
    keep = {"DRS_TAG": os.environ.get("DRS_TAG", "latest"), "LANG": "C.UTF-8"}
    return [
        "runuser", "-u", DEVELOPER, "--", "env", "-i", f"HOME={home}", f"USER={DEVELOPER}",
        f"PATH={DEVELOPER_PATH}", *(f"{k}={v}" for k, v in keep.items()),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dev() -> Iterator[DevStack]:
    cache = ROOT / ".cache"
    cache.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="devtest-", dir=cache))
    root.chmod(0o755)  # the containers' user (uid 10001) reads the bind-mounted code
    stack = DevStack(
        root=root,
        project=f"drs-devtest-{os.getpid()}",
        ports={
            "DEV_WEB_PORT": free_port(),
            "DEV_POSTGRES_PORT": free_port(),
            "DEV_REDIS_PORT": free_port(),
            "DEV_NGINX_PORT": free_port(),
        },
    )
    try:
        assert copy_working_tree(root) > 0, "git ls-files listed nothing to copy"
        start = time.monotonic()
        done = stack.make("dev", timeout=MAKE_DEV_TIMEOUT)
        took = time.monotonic() - start
        stack.output = done.stdout
        assert done.returncode == 0, f"make dev failed:\n{stack.output[-6000:]}"
        # Docker answered: the set-up script installed nothing (README: a working `docker info`
        # and `docker compose version` is all it needs).
        assert "[docker-setup] installing" not in stack.output, stack.output[-3000:]
        who = DEVELOPER if os.geteuid() == 0 else f"uid {os.geteuid()}"
        record_timing(f"dev: make dev as {who}, not root (images already built) {took:.0f} s")
        yield stack
    finally:
        teardown(stack)


def teardown(stack: DevStack) -> None:
    logs = stack.compose("logs", "--no-color", "--tail", "300", check=False)
    Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    Path(RESULTS_DIR, "dev-stack.log").write_text(stack.output + "\n" + logs)
    # `make dev-down` keeps the volumes (documented); a test project must leave nothing behind.
    stack.compose("--profile", "proxy", "down", "-v", "--remove-orphans", check=False, timeout=300)
    shutil.rmtree(stack.root, ignore_errors=True)
    if os.geteuid() == 0:
        subprocess.run(["userdel", DEVELOPER], capture_output=True)


def printed(output: str) -> dict[str, list[str]]:
    """The URLs `make dev` printed (scripts/dev-urls.sh), by label."""
    labels = ("API docs", "API", "Admin", "Demo user", "Health")
    urls = {}
    for line in output.splitlines():
        for label in labels:
            if re.match(rf"\s+{label}\s", line):
                urls[label] = re.findall(r"http://[^\s)]+", line)
                break
    return urls


def printed_port(output: str, label: str) -> int:
    match = re.search(rf"\b{label}\s+127\.0\.0\.1:(\d+)", output)
    assert match, f"make dev did not print the {label} address:\n{output[-2000:]}"
    return int(match.group(1))


def token(base: str, username: str, password: str) -> str:
    r = requests.post(
        f"{base}/api/auth/token/", json={"username": username, "password": password}, timeout=15
    )
    assert r.status_code == 200, f"{username}: {r.status_code} {r.text[:300]}"
    return r.json()["token"]


def test_every_service_is_up(dev):
    """`make dev` returns once the stack is healthy: every long-running service is running and
    healthy (each has a health check), the one-shot migrate has exited 0."""
    services = set(dev.compose("config", "--services").split())
    assert services >= DOCUMENTED_SERVICES
    out = dev.compose("ps", "-a", "--format", "json").strip()
    # Compose prints one JSON object per line (older releases: one JSON array).
    listed = json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines()]
    rows = {c["Service"]: (c["State"], c["Health"], c["ExitCode"]) for c in listed}
    assert set(rows) == services, rows
    for service in services - ONE_SHOT_SERVICES:
        assert rows[service][:2] == ("running", "healthy"), f"{service}: {rows[service]}"
    for service in ONE_SHOT_SERVICES:
        assert (rows[service][0], rows[service][2]) == ("exited", 0), f"{service}: {rows[service]}"


def test_printed_urls_answer(dev):
    """The URLs `make dev` prints are on the chosen ports, and each answers as described."""
    urls = printed(dev.output)
    web = f"http://127.0.0.1:{dev.ports['DEV_WEB_PORT']}"
    assert urls == {
        "API": [f"{web}/api/"],
        "API docs": [f"{web}/api/docs/"],
        "Admin": [f"{web}/admin/"],
        "Demo user": [f"{web}/api/auth/token/"],
        "Health": [f"{web}/healthz", f"{web}/readyz"],
    }, dev.output[-2000:]
    assert printed_port(dev.output, "Postgres") == dev.ports["DEV_POSTGRES_PORT"]
    assert printed_port(dev.output, "Redis") == dev.ports["DEV_REDIS_PORT"]

    # The printed API URL answers with the API root, which lists the endpoints; the posts
    # collection it names answers too.
    root = requests.get(urls["API"][0], timeout=15)
    assert root.status_code == 200, root.text[:300]
    assert root.json()["posts"] == f"{web}/api/posts/", root.text[:300]
    posts = requests.get(root.json()["posts"], timeout=15)
    assert posts.status_code == 200, posts.text[:300]
    assert "results" in posts.json()

    docs = requests.get(urls["API docs"][0], timeout=15)
    assert docs.status_code == 200, docs.text[:300]
    assert "swagger-ui" in docs.text.lower()
    schema = requests.get(f"{web}/api/schema/", timeout=15)  # what the docs page loads
    assert schema.status_code == 200, schema.text[:300]
    assert "/api/posts/" in schema.text

    admin = requests.get(urls["Admin"][0], timeout=15)
    assert admin.status_code == 200, admin.text[:300]
    assert admin.url.startswith(f"{web}/admin/login/")
    assert 'name="password"' in admin.text

    healthz, readyz = (requests.get(url, timeout=15) for url in urls["Health"])
    assert healthz.status_code == 200, healthz.text
    assert readyz.status_code == 200, readyz.text
    checks = readyz.json()["checks"]
    assert {"database", "cache", "broker"} <= set(checks)
    assert all(check["status"] == "ok" for check in checks.values()), checks

    # Postgres and Redis answer their own protocols on the printed ports.
    with socket.create_connection(("127.0.0.1", dev.ports["DEV_POSTGRES_PORT"]), 10) as s:
        s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))  # SSLRequest
        assert s.recv(1) in (b"N", b"S")
    password = env_file_values(ROOT / "compose" / "dev.env")["REDIS_PASSWORD"]
    with socket.create_connection(("127.0.0.1", dev.ports["DEV_REDIS_PORT"]), 10) as s:
        s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2 and len(reply) < 200:
            chunk = s.recv(200)
            if not chunk:
                break
            reply += chunk
        assert reply == b"+OK\r\n+PONG\r\n", reply


def test_demo_data_and_superuser(dev):
    """The first `make dev` creates the demo user (demo/demo, a token from the URL printed for
    it) with posts, and the admin/admin superuser."""
    web = f"http://127.0.0.1:{dev.ports['DEV_WEB_PORT']}"
    (token_url,) = printed(dev.output)["Demo user"]
    assert token_url.startswith(f"{web}/"), f"printed {token_url}: not this stack's"
    r = requests.post(token_url, json={"username": "demo", "password": "demo"}, timeout=15)
    assert r.status_code == 200, r.text[:300]
    demo = r.json()["token"]
    # The demo user's own posts: the seed gives demo a share of them.
    posts = requests.get(
        f"{web}/api/posts/", params={"author_username": "demo"},
        headers={"Authorization": f"Token {demo}"}, timeout=15,
    )  # fmt: skip
    assert posts.status_code == 200, posts.text[:300]
    results = posts.json()["results"]
    assert results, "the demo user has no posts"
    assert {post["author"]["username"] for post in results} == {"demo"}

    with requests.Session() as admin:
        page = admin.get(f"{web}/admin/login/", timeout=15)
        assert page.status_code == 200
        r = admin.post(
            f"{web}/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "username": "admin",
                "password": "admin",
                "next": "/admin/",
            },
            headers={"Origin": web, "Referer": f"{web}/admin/login/"},
            timeout=15,
        )
        assert r.status_code == 200, r.text[:300]
        assert r.url == f"{web}/admin/", "admin/admin was not let in"
        assert "Site administration" in r.text


def test_make_test_django_as_the_developer(dev):
    """`make test-django`, the README's other command, as the same developer: the Django suite
    runs in its image against its own PostgreSQL and Redis (no host Python tools installed) and
    its verdict is a full pass with at least the expected number of tests."""
    start = time.monotonic()
    done = dev.make("test-django", timeout=TEST_DJANGO_TIMEOUT)
    took = time.monotonic() - start
    assert done.returncode == 0, f"make test-django failed:\n{done.stdout[-6000:]}"
    verdict = re.findall(r"^(\d+) passed, (\d+) failed", done.stdout, re.MULTILINE)
    assert verdict, f"no verdict line:\n{done.stdout[-3000:]}"
    passed, failed = map(int, verdict[-1])
    assert passed > 0, verdict
    assert failed == 0, verdict
    assert "installing host test tools" not in done.stdout
    junit = dev.root / ".cache" / "test-results" / "django.xml"
    assert junit.is_file(), f"{junit} missing"
    who = DEVELOPER if os.geteuid() == 0 else f"uid {os.geteuid()}"
    record_timing(f"dev: make test-django as {who}: {passed} passed in {took:.0f} s")


def wait_for(what: str, probe, timeout: float):
    """Poll `probe` (returns a truthy value when done) once a second, bounded."""
    deadline = time.monotonic() + timeout
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        found = probe()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not seen within {timeout} s ({tries} checks)")


def export_csv(web: str, auth: str) -> str:
    """Ask for a CSV export of the demo user's posts, wait until it is done, download it."""
    headers = {"Authorization": f"Token {auth}"}
    r = requests.post(f"{web}/api/exports/", json={"format": "csv"}, headers=headers, timeout=15)
    assert r.status_code == 202, r.text[:300]
    url = f"{web}/api/exports/{r.json()['id']}/"

    def done():
        status = requests.get(url, headers=headers, timeout=15).json()["status"]
        assert status != "failed"
        return status == "done"

    wait_for(f"export {url} done", done, EXPORT_TIMEOUT)
    r = requests.get(f"{url}download/", headers=headers, timeout=15)
    assert r.status_code == 200, r.text[:300]
    return r.text


def runserver_reloaded(dev: DevStack, web: str, before: set[int]) -> None:
    """Wait until runserver has replaced its serving process (its autoreloader, in place: the
    parent stays, the child is new) and the new one answers."""

    def reloaded():
        now = dev.pids("web", "manage.py")
        if not (now - before and before - now):
            return False
        try:
            return requests.get(f"{web}/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:  # the new process is not listening yet
            return False

    wait_for("runserver's reload", reloaded, RELOAD_TIMEOUT)
    assert before & dev.pids("web", "manage.py"), "runserver's autoreloader itself was replaced"


def test_code_change_restarts_worker_and_beat(dev):
    """Saving a .py file restarts the Celery worker and beat processes (watchfiles; the
    containers themselves stay up), and the next task runs the new code."""
    web = f"http://127.0.0.1:{dev.ports['DEV_WEB_PORT']}"
    auth = token(web, "demo", "demo")
    marker = f"devtest-{uuid.uuid4().hex}"
    before = {s: (dev.state(s), dev.pids(s, "celery")) for s in ("worker", "beat")}
    for service, (_, pids) in before.items():
        assert pids, f"no celery process in {service}: {dev.processes(service)}"
    watchers = {s: dev.pids(s, "watchfiles") for s in before}
    assert all(watchers.values()), watchers
    assert export_csv(web, auth).startswith("id,title,"), "an export before the change"
    runserver = dev.pids("web", "manage.py")

    services_py = dev.root / "services" / "web" / "apps" / "exports" / "services.py"
    assert "def _write_rows(" in services_py.read_text(), "the export writer moved: update me"
    start = time.monotonic()
    dev.edit(
        "apps/exports/services.py",
        f"\n\n_devtest_write_rows = _write_rows\n\n\n"
        f"def _write_rows(export, handle):\n"
        f"    handle.write('# {marker}\\n')\n"
        f"    return _devtest_write_rows(export, handle)\n",
    )
    for service, (_, pids) in before.items():
        # New celery processes, and none of the old ones left.
        wait_for(
            f"{service}'s celery restarted",
            lambda s=service, old=pids: (new := dev.pids(s, "celery")) and not new & old,
            RELOAD_TIMEOUT,
        )
    record_timing(f"dev: worker and beat restarted {time.monotonic() - start:.1f} s after a save")
    runserver_reloaded(dev, web, runserver)  # the API imports the module too
    # Queued after the restart, so only the new worker process can run it.
    csv = export_csv(web, auth)
    assert csv.startswith(f"# {marker}\nid,title,"), csv[:200]
    for service, (state, _) in before.items():
        assert dev.state(service) == state, f"{service}'s container restarted"
        assert dev.pids(service, "watchfiles") == watchers[service], "the watcher restarted"


def test_code_change_reloads_web(dev):
    """Saving a .py file reloads runserver in place: the next request runs the new code, the
    web container is not restarted."""
    web = f"http://127.0.0.1:{dev.ports['DEV_WEB_PORT']}"
    marker = f"devtest-{uuid.uuid4().hex}"
    url = f"{web}/{marker}"
    state = dev.state("web")
    runserver = dev.pids("web", "manage.py")
    assert len(runserver) == 2, dev.processes("web")  # the autoreloader and its server
    assert requests.get(url, timeout=15).status_code == 404

    start = time.monotonic()
    dev.edit(
        "config/urls.py",
        "\n\nfrom django.http import HttpResponse as _DevTestResponse  # noqa: E402\n\n"
        f"urlpatterns += [path({marker!r}, lambda request: _DevTestResponse({marker!r}))]\n",
    )
    runserver_reloaded(dev, web, runserver)
    record_timing(f"dev: runserver reloaded {time.monotonic() - start:.1f} s after a save")
    r = requests.get(url, timeout=15)
    assert (r.status_code, r.text) == (200, marker)
    assert dev.state("web") == state, "the web container restarted"
