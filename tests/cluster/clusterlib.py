"""Helpers of the cluster suite (make test-swarm-cluster): a 3-node Docker Swarm on this machine.

Each node is a container with every privilege (node_privileges) built from tests/cluster/node
(Debian trixie's docker.io, its own /var/lib/docker volume, `no-new-privileges` in its daemon's
settings) on a bridge network the suite makes; the registry is `make swarm-registry`'s service
(services/registry: Debian's docker-registry) on the manager, its port in host mode there (this
machine's kernel has no IPVS for the routing mesh): the host pushes through the manager
container's port on 127.0.0.1, the nodes pull as `registry:5000` (the manager's alias on the
network, an insecure registry in their daemons' settings). The manager's Docker is reached
through a socket in a folder bind-mounted from the host (DOCKER_HOST for scripts/swarm.sh and
the suite's docker calls); nginx publishes its HTTPS port in host mode on the manager, whose
container publishes it on 127.0.0.1 only. Everything carries the label drs.cluster=NAME and is
removed at the end, also on failure."""

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "swarm"))
from swarmlib import SwarmStack

NODES = ("node1", "node2", "node3")  # node1: the manager, labelled drs.data and drs.media
REGISTRY_ALIAS = "registry"  # the manager's alias on the nodes' network
REGISTRY_PORT = 5000  # REGISTRY_PORT of make swarm-registry, host mode on the manager
NODE_HTTPS_PORT = 8443  # HTTPS_PORT in the suite's env file: nginx's host-mode port on node1
MEDIA_DIR = "/srv/drs-media"  # SWARM_MEDIA_DIR: one host folder, mounted on every node
# Linux capabilities by number (linux/capability.h), to name those this machine lacks.
CAPABILITIES = "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP \
LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE \
SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME \
SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG \
WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"


def node_privileges() -> list[str]:
    """What --privileged gives, spelled out, less the capabilities this machine's own bounding
    set lacks: where one is missing (CAP_SYS_RESOURCE on the test VM), Docker cannot start a
    --privileged container at all ("unable to apply caps")."""
    line = next(
        x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapBnd")
    )
    bounding = int(line.split()[1], 16)
    missing = [name for bit, name in enumerate(CAPABILITIES.split()) if not bounding >> bit & 1]
    return [
        "--cap-add", "ALL", *[a for name in missing for a in ("--cap-drop", name)],
        "--security-opt", "apparmor=unconfined", "--security-opt", "seccomp=unconfined",
        "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
    ]  # fmt: skip


def host_docker(*args: str, check: bool = True, timeout: float = 300, stdin: str = "") -> str:
    """docker on this machine's own daemon (never the manager's: DOCKER_HOST is dropped)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, env=env,
        input=stdin or None,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


class Cluster:
    """The node containers, their network, the registry and the host folders they share."""

    def __init__(self, name: str, tag: str, workdir: Path):
        self.name, self.tag, self.workdir = name, tag, workdir
        self.network = f"{name}-net"
        self.socket_dir = workdir / "manager-socket"
        self.media_dir = workdir / "media"
        self.label = f"drs.cluster={name}"
        self.registry_port = 0
        self.https_port = 0

    def container(self, node: str) -> str:
        return f"{self.name}-{node}"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_dir}/docker.sock"

    def build_images(self) -> None:
        base = os.environ.get("BASE_IMAGE", "debian:trixie-slim")
        for image, context in (
            (f"drs/swarm-node:{self.tag}", Path(__file__).with_name("node")),
            (f"drs/registry:{self.tag}", Path(ROOT, "services", "registry")),
        ):
            host_docker("build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", image,
                        str(context), timeout=1200)  # fmt: skip

    def start(self, certs_dir: str) -> None:
        self.socket_dir.mkdir(parents=True)
        self.media_dir.mkdir(parents=True)
        os.chown(self.media_dir, 10001, 10001)  # the app's uid writes exports there
        self.media_dir.chmod(0o755)
        host_docker("network", "create", "--label", self.label, self.network)
        for node in NODES:
            manager = node == NODES[0]
            args = [
                "run", "-d", *node_privileges(), "--name", self.container(node), "--hostname", node,
                "--label", self.label, "--network", self.network,
                "-v", f"{self.container(node)}-docker:/var/lib/docker",
                "-v", f"{certs_dir}:{certs_dir}:ro", "-v", f"{self.media_dir}:{MEDIA_DIR}",
            ]  # fmt: skip
            if manager:  # its socket for the host; nginx's and the registry's ports on 127.0.0.1
                args += ["-v", f"{self.socket_dir}:/run/outer", "--network-alias", REGISTRY_ALIAS]
                args += ["-p", f"127.0.0.1::{NODE_HTTPS_PORT}", "-p", f"127.0.0.1::{REGISTRY_PORT}"]
            args += [f"drs/swarm-node:{self.tag}", "--insecure-registry", f"{REGISTRY_ALIAS}:5000"]
            if manager:
                args += ["-H", "unix:///var/run/docker.sock", "-H", "unix:///run/outer/docker.sock"]
            host_docker(*args)
        for node in NODES:
            self.wait_dockerd(node)
        self.https_port = self.published(self.container(NODES[0]), f"{NODE_HTTPS_PORT}/tcp")
        self.registry_port = self.published(self.container(NODES[0]), f"{REGISTRY_PORT}/tcp")

    def load_image(self, node: str, image: str) -> None:
        """An image of this machine's Docker into a node's (docker save | docker load)."""
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=env)
        load = subprocess.run(
            ["docker", "exec", "-i", self.container(node), "docker", "load", "-q"],
            stdin=save.stdout, capture_output=True, text=True, timeout=600, check=False, env=env,
        )  # fmt: skip
        save.stdout.close()
        assert save.wait(timeout=60) == 0, f"docker save {image} failed"
        assert load.returncode == 0, load.stderr

    def published(self, container: str, port: str) -> int:
        out = host_docker("port", container, port)
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def node_docker(self, node: str, *args: str, check: bool = True, timeout: float = 300) -> str:
        """docker inside a node (its own daemon)."""
        return host_docker("exec", self.container(node), "docker", *args, check=check,
                           timeout=timeout)  # fmt: skip

    def wait_dockerd(self, node: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = self.node_docker(node, "info", "--format", "{{.ServerVersion}}", check=False)
            if version.strip():
                return
            time.sleep(1)
        logs = host_docker("logs", "--tail", "30", self.container(node), check=False)
        raise AssertionError(f"dockerd in {node} did not start within {timeout}s: {logs}")

    def address(self, node: str) -> str:
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return host_docker("inspect", "--format", fmt, self.container(node)).strip()

    def join_workers(self) -> None:
        token = self.node_docker(NODES[0], "swarm", "join-token", "-q", "worker").strip()
        manager = f"{self.address(NODES[0])}:2377"
        for node in NODES[1:]:
            self.node_docker(node, "swarm", "join", "--token", token,
                             "--advertise-addr", self.address(node), manager)  # fmt: skip

    def teardown(self) -> None:
        """Every container, volume and network with the suite's label (nodes first: the images
        and volumes inside them go with their /var/lib/docker volumes)."""
        ids = host_docker("ps", "-aq", "--filter", f"label={self.label}", check=False).split()
        if ids:
            host_docker("rm", "-f", "-v", *ids, check=False)
        for node in NODES:
            host_docker("volume", "rm", "-f", f"{self.container(node)}-docker", check=False)
        host_docker("network", "rm", self.network, check=False)


class ClusterStack(SwarmStack):
    """The stack on the cluster: scripts/swarm.sh and docker talk to the manager (DOCKER_HOST);
    images come from the registry; media is one shared folder (SWARM_MEDIA_DIR)."""

    def __init__(self, name: str, env_file: str, tag: str, cluster: Cluster):
        super().__init__(name, env_file, tag)
        self.cluster = cluster

    @property
    def environ(self) -> dict:
        env = {
            **os.environ, "SWARM_STACK": self.name, "PROD_ENV": self.env_file, "DRS_TAG": self.tag,
            "DOCKER_HOST": self.cluster.docker_host, "REGISTRY": f"{REGISTRY_ALIAS}:5000",
            "SWARM_PUSH": "0", "SWARM_MEDIA_DIR": MEDIA_DIR, "REGISTRY_PUBLISH": "host",
            "REGISTRY_PORT": str(REGISTRY_PORT),
            "SWARM_ADVERTISE_ADDR": self.cluster.address(NODES[0]),
        }  # fmt: skip
        env.pop("SWARM_TEST_NETWORK", None)
        return env

    def push_images(self) -> subprocess.CompletedProcess:
        """scripts/swarm.sh push from this machine's Docker, through 127.0.0.1."""
        env = {k: v for k, v in self.environ.items() if k != "DOCKER_HOST"}
        env["REGISTRY_PUSH"] = f"127.0.0.1:{self.cluster.registry_port}"
        return subprocess.run(
            [str(Path(ROOT, "scripts", "swarm.sh")), "push"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip

    def tasks(self, service: str) -> list[tuple[str, str]]:
        """(node, task id) of each task of a service the manager reports running."""
        out = host_docker(
            "--host", self.cluster.docker_host, "service", "ps", "--no-trunc",
            "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}} {{.ID}}",
            self.service(service),
        )  # fmt: skip
        return [(f[0], f[-1]) for f in map(str.split, out.splitlines()) if f[1] == "Running"]

    def task_nodes(self, service: str) -> list[str]:
        return [node for node, _ in self.tasks(service)]

    def containers(self, service: str) -> list[tuple[str, str]]:
        """(node, container id) of each running task's container (a stopped node has none)."""
        found = []
        for node, task in self.tasks(service):
            cid = self.cluster.node_docker(
                node, "ps", "-q", "--filter", f"label=com.docker.swarm.task.id={task}", check=False
            ).strip()
            if cid:
                found.append((node, cid))
        return found

    def container_ids(self, service: str) -> list[str]:
        """The running containers of a service's tasks, on every node."""
        return [cid for _, cid in self.containers(service)]

    def manage(self, code: str) -> str:
        node, cid = self.containers("web")[0]
        return self.cluster.node_docker(
            node, "exec", cid, "python", "manage.py", "shell", "-c", code, timeout=120
        )
