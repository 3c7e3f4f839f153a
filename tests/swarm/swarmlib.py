"""Helpers of the swarm suite. The prod stack on a single-node Docker Swarm (docs/swarm.md), made
by the suite: the host's
Docker becomes a swarm manager (`make swarm-init`), the stack is deployed (`make swarm-deploy`:
secrets, Postgres and Redis, the migrations job, the rest), and at the end the stack, its
volumes, secrets and test images are removed and the swarm is left (`docker swarm leave
--force`), also on failure. scripts/test.sh (stage swarm) writes the env file and certificates:
SWARM_STACK, SWARM_ENV_FILE, E2E_CA_BUNDLE."""

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from conftest import ROOT, record_timing

# deploylib's request load, nginx log follower and retry evidence (tests/deploy), and
# hardeninglib's rules for every container (tests/hardening).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))
from deploylib import (
    Load,
    NginxLogs,
    User,
    evidence_problems,
    retry_summary,
    wait_exports_done,
)
from hardeninglib import container_checks, proc_status

MAX_RETRIES = 10  # as tests/deploy: nginx reloads as web tasks come and go

SWARM = str(Path(ROOT, "scripts", "swarm.sh"))
DEPLOY_TIMEOUT = (
    900  # hang guard for `scripts/swarm.sh deploy` (2 shared cores), never a speed check
)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class SwarmStack:
    """The stack under test, driven with scripts/swarm.sh and docker."""

    def __init__(self, name: str, env_file: str, tag: str):
        self.name, self.project, self.env_file, self.tag = name, name, env_file, tag

    @property
    def environ(self) -> dict:
        return {
            **os.environ,
            "SWARM_STACK": self.name,
            "PROD_ENV": self.env_file,
            "DRS_TAG": self.tag,
            "SWARM_ADVERTISE_ADDR": "127.0.0.1",
            "SWARM_LISTEN_ADDR": "127.0.0.1:2377",  # the manager's port on loopback only
            "SWARM_TEST_NETWORK": self.client_network,
        }

    @property
    def client_network(self) -> str:
        """The attachable overlay network the suite makes: nginx joins it instead of publishing
        a port on the node, the relay (the suite's client) reaches nginx there."""
        return f"{self.name}_clients"

    @property
    def relay(self) -> str:
        return f"{self.name}-relay"

    def start_relay(self) -> int:
        """The relay container (tests/swarm/relay.py): published on 127.0.0.1 only, joined to the
        client network; returns its port on the host."""
        relay_py = str(Path(__file__).with_name("relay.py"))
        docker(
            "run", "-d", "--name", self.relay, "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "-p", "127.0.0.1::8443",
            "-v", f"{relay_py}:/relay.py:ro", "--entrypoint", "python",
            f"drs/web:{self.tag}", "/relay.py", self.service("nginx"),
        )  # fmt: skip
        docker("network", "connect", self.client_network, self.relay)
        out = docker("port", self.relay, "8443/tcp")
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def relay_address(self) -> str:
        """The relay's own address on the client network: the client address nginx sees."""
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.client_network}").IPAddress}}}}'
        return docker("inspect", "--format", fmt, self.relay).strip()

    def swarm(self, *args: str, timeout: float = DEPLOY_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SWARM, *args], cwd=ROOT, env=self.environ, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def env_values(self) -> dict[str, str]:
        with Path(self.env_file).open(encoding="utf-8") as handle:
            return dict(
                line.rstrip("\n").split("=", 1) for line in handle if "=" in line and line[0] != "#"
            )

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def container_ids(self, service: str) -> list[str]:
        """The running containers of a service's tasks (one node: all are local)."""
        out = docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(service)}"
        )
        return out.split()

    def all_container_ids(self) -> list[str]:
        return docker(
            "ps", "-q", "--filter", f"label=com.docker.stack.namespace={self.name}"
        ).split()

    def manage(self, code: str) -> str:
        cid = self.container_ids("web")[0]
        return docker("exec", cid, "python", "manage.py", "shell", "-c", code, timeout=120)

    def service_inspect(self, service: str) -> dict:
        return json.loads(docker("service", "inspect", self.service(service)))[0]

    def update_state(self, service: str) -> str:
        status = self.service_inspect(service).get("UpdateStatus") or {}
        return status.get("State", "")

    def running_images(self, service: str) -> set[str]:
        out = docker(
            "service", "ps", "--filter", "desired-state=running", "--format", "{{.Image}}",
            self.service(service),
        )  # fmt: skip
        return set(out.split())

    def replicas(self, service: str) -> str:
        out = docker("service", "ls", "--filter", f"name={self.service(service)}", "--format",
                     "{{.Name}} {{.Replicas}}")  # fmt: skip
        return dict(line.split() for line in out.splitlines()).get(self.service(service), "")

    def wait_converged(self, service: str, want: int, timeout: float = 600) -> None:
        """Until the service runs `want` healthy tasks and no update or rollback is under way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.update_state(service)
            running = len(self.container_ids(service))
            settled = state not in ("updating", "rollback_started")
            if self.replicas(service) == f"{want}/{want}" and running == want and settled:
                return
            time.sleep(1)
        raise AssertionError(
            f"{service}: not {want}/{want} after {timeout}s ({self.replicas(service)})"
        )

    def teardown(self) -> None:
        docker("rm", "-f", self.relay, check=False)
        docker("stack", "rm", self.name, check=False)
        deadline = time.monotonic() + 180
        # Until every task's container is gone, stopped ones too: they hold the volumes.
        while time.monotonic() < deadline and docker(
            "ps", "-a", "-q", "--filter", f"label=com.docker.stack.namespace={self.name}",
            check=False,
        ).split():  # fmt: skip
            time.sleep(2)
        for volume in docker(
            "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={self.name}",
            check=False,
        ).split():  # fmt: skip
            docker("volume", "rm", "-f", volume, check=False)
        for secret in docker(
            "secret", "ls", "-q", "--filter", f"label=drs.stack={self.name}", check=False
        ).split():
            docker("secret", "rm", secret, check=False)
        docker("network", "rm", self.client_network, check=False)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def build_test_image(tag: str, dockerfile: str) -> None:
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True,
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip


def smoke_write_read_export(user, title: str, timeout: float) -> None:
    """The stack's smoke path through nginx, as a user: a post written and read back, and a CSV
    export written by the worker into the media folder and served by nginx (X-Accel-Redirect)
    with that post in it."""
    r = user.post("/api/posts/", json={"title": title, "body": "b"})
    assert r.status_code == 201, r.text
    assert user.get(f"/api/posts/{r.json()['id']}/").json()["title"] == title
    r = user.post("/api/exports/", json={"format": "csv"})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = user.get(f"/api/exports/{export_id}/").json()
        if export["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert export["status"] == "done", export
    r = user.get(f"/api/exports/{export_id}/download/", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert title in r.text


def run_load(stack, base_url, load_users: list[User], exporter: User, label: str, action) -> Load:
    """action() under the read/write load of tests/deploy (every request sent once, the only
    retry one that provably never reached nginx); records the figures, and asserts the load sent
    requests, its retries are bounded and unseen by nginx, and every export finished. Failed
    requests are the caller's to assert (0, or counted)."""
    logs = NginxLogs(stack)
    load = Load(base_url, load_users, exporter, prefix=f"{label} {uuid.uuid4().hex[:6]}")
    started = time.time()
    with load:
        time.sleep(3)
        action()
        time.sleep(3)
    entries = logs.collect()
    exports = wait_exports_done(base_url, exporter, load.export_ids)
    record_timing(
        f"{label}: {time.time() - started:.0f}s, {len(load.done)} requests ok, "
        f"{len(load.failures)} failed, {retry_summary(load)}, {len(exports)} exports"
    )
    assert load.done, "the load sent nothing"
    assert len(load.retries) <= MAX_RETRIES, [vars(r) for r in load.retries]
    assert evidence_problems(load, entries) == []
    assert set(exports.values()) <= {"done"}, exports
    return load


def seeded_user(make_user, name: str, prefix: str) -> User:
    """A load user: made through the stack, with one post of its own."""
    c = make_user(name)
    r = c.post("/api/posts/", json={"title": f"{prefix} seed {uuid.uuid4().hex}", "body": "x"})
    assert r.status_code == 201, r.text
    return User(c.username, c.headers["Authorization"].split(" ", 1)[1], r.json()["id"])


def task_hardening_problems(
    docker_call: Callable[..., str], cid: str, no_new_privileges: bool
) -> tuple[str, list[str]]:
    """tests/hardening's rules (hardeninglib) for a swarm task's container: (service, the rules
    it breaks). no-new-privileges is the daemon's setting on a swarm (stack deploy drops
    security_opt): checked where the suite's daemons have it (tests/cluster)."""
    c = json.loads(docker_call("inspect", cid))[0]
    status = proc_status(docker_call("exec", cid, "cat", "/proc/1/status"))
    checks = container_checks(c, status)
    if no_new_privileges:
        checks["no-new-privileges (the daemon's)"] = status["NoNewPrivs"].strip() == "1"
    service = c["Config"]["Labels"]["com.docker.swarm.service.name"]
    return service, [name for name, ok in checks.items() if not ok]
