"""Helpers for the image tests: the docker CLI, containers and volumes that are
always removed afterwards (see conftest.py), waiting for health and exits.

Everything goes through the docker CLI (no SDK). Image tags come from
DRS_POSTGRES_IMAGE / DRS_REDIS_IMAGE (defaults drs/postgres:latest and
drs/redis:latest); a tag that does not exist is built from services/<name>.
No host port is published: clients run in containers on the same network.

Containers are created with --health-interval 1s: Docker runs each image's own health check
and reports its verdicts, every second rather than every 5 s as the images ask, so a wait for
"healthy" ends within a second of the check passing. What is checked and when it fails are the
image's own; only the spacing between checks, which no test asserts, is shorter.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = "drs-imgtest"
HEALTH_INTERVAL = ("--health-interval", "1s")  # see the module's docstring


class DockerError(AssertionError):
    pass


def docker(
    *args: str,
    timeout: float = 60,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS`, returning the completed process (text mode)."""
    proc = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **env} if env else None,
    )
    if check and proc.returncode != 0:
        raise DockerError(
            f"docker {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def unique(kind: str) -> str:
    return f"{PREFIX}-{kind}-{uuid.uuid4().hex[:10]}"


def ensure_image(tag: str, context: Path) -> str:
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    build = ["build", "-t", tag, str(context)]
    proc = docker(*build, timeout=900, check=False, env={"DOCKER_BUILDKIT": "1"})
    if proc.returncode != 0 and "buildx" in proc.stderr:
        # A docker CLI without the buildx plugin cannot use BuildKit; the
        # Dockerfiles need nothing beyond the classic builder.
        proc = docker(*build, timeout=900, check=False, env={"DOCKER_BUILDKIT": "0"})
    if proc.returncode != 0:
        raise DockerError(
            f"building {tag} from {context} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return tag


class Containers:
    """Creates containers and volumes on the test network and removes them all."""

    def __init__(self, network: str) -> None:
        self.network = network
        self.names: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = unique("vol")
        docker("volume", "create", "--label", f"{PREFIX}=1", name)
        self.volumes.append(name)
        return name

    def create(
        self,
        image: str,
        *cmd: str,
        env: dict[str, str] | None = None,
        opts: tuple[str, ...] = (),
        name: str | None = None,
    ) -> str:
        """`docker create` a container (not started) on the test network."""
        name = name or unique("ctr")
        args = ["create", "--name", name, "--network", self.network, "--label", f"{PREFIX}=1",
                *HEALTH_INTERVAL]  # fmt: skip
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        args += [*opts, image, *cmd]
        self.names.append(name)
        docker(*args)
        return name

    def run(self, image: str, *cmd: str, **kwargs) -> str:
        """Create and start a container in the background."""
        name = self.create(image, *cmd, **kwargs)
        docker("start", name)
        return name

    def run_to_exit(self, image: str, *cmd: str, timeout: float = 90, **kwargs) -> tuple[int, str]:
        """Run a container until it exits; return (exit code, combined log)."""
        name = self.run(image, *cmd, **kwargs)
        return wait_exit(name, timeout), logs(name)

    def client(
        self, image: str, *cmd: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a one-off client container (`docker run --rm`) on the test network."""
        name = unique("client")
        self.names.append(name)  # removed at cleanup should the run time out
        args = ["run", "--rm", "--name", name, "--network", self.network]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        return docker(*args, image, *cmd, timeout=timeout, check=False)

    def cleanup(self) -> None:
        if self.names:
            docker("rm", "-fv", *self.names, check=False, timeout=120)
        for vol in self.volumes:
            docker("volume", "rm", "-f", vol, check=False)


def logs(name: str, since: str | None = None) -> str:
    args = ["logs"] + (["--since", since] if since else []) + [name]
    proc = docker(*args, check=False)
    return proc.stdout + proc.stderr


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def wait_exit(name: str, timeout: float) -> int:
    proc = docker("wait", name, timeout=timeout)
    return int(proc.stdout.strip())


def wait_healthy(name: str, timeout: float = 90) -> None:
    """Wait until Docker reports the container healthy; fail if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = inspect(name)["State"]
        if not state["Running"]:
            raise AssertionError(
                f"{name} exited ({state['ExitCode']}) before becoming healthy:\n{logs(name)}"
            )
        if state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} not healthy after {timeout}s:\n{logs(name)}")


def wait_for_log(name: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in logs(name):
            return
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in the log of {name} after {timeout}s:\n{logs(name)}")


def copy_into(name: str, src: Path, dest: str) -> None:
    """docker cp a host file or directory's contents into a created container."""
    docker("cp", f"{src}/." if src.is_dir() else str(src), f"{name}:{dest}")


def pid1(name: str) -> tuple[str, int, int]:
    """(command name, real uid, real gid) of PID 1 inside the container."""
    out = docker("exec", name, "cat", "/proc/1/comm", "/proc/1/status").stdout
    comm = out.splitlines()[0].strip()
    fields = dict(line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    return comm, int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


HARDENED = (
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--tmpfs",
    "/tmp",
)
