"""Every running prod container, asserted with `docker inspect` (and /proc inside it)."""

import json
import subprocess

import pytest
from hardeninglib import container_checks, proc_status

# Capabilities a service adds back after cap_drop ALL, and why. None needs any.
ALLOWED_CAP_ADD: dict[str, str] = {}
RESTART_POLICIES = {"unless-stopped", "always", "on-failure"}


def running(stack) -> list[tuple[str, dict]]:
    """Every running container of the stack: at least one for each long-running service of the
    prod configuration (all but one-shot ones such as migrate), so no service goes unchecked."""
    config = json.loads(stack.compose("config", "--format", "json"))
    expected = {name for name, s in config["services"].items() if s.get("restart", "no") != "no"}
    containers = [stack.inspect(c) for c in stack.compose("ps", "-q").split()]
    found = [(c["Config"]["Labels"]["com.docker.compose.service"], c) for c in containers]
    missing = expected - {service for service, _ in found}
    assert expected, "the prod configuration has no long-running service"
    assert not missing, f"not running: {sorted(missing)}"
    return found


def status_of(cid: str) -> dict[str, str]:
    out = subprocess.run(
        ["docker", "exec", cid, "cat", "/proc/1/status"], capture_output=True, text=True, check=True
    ).stdout
    return proc_status(out)


def test_every_container_is_hardened(stack):
    """hardeninglib's rules (those a swarm task keeps too), and compose's own: all capabilities
    dropped, none added back unexplained, no-new-privileges set and in effect, a restart
    policy."""
    problems = []
    for service, c in running(stack):
        host = c["HostConfig"]
        status = status_of(c["Id"])
        checks = {
            **container_checks(c, status),
            "cap_drop ALL": host["CapDrop"] == ["ALL"],
            "no unexplained added capabilities": set(host["CapAdd"] or []) <= set(ALLOWED_CAP_ADD),
            "no-new-privileges set": any(
                o.startswith("no-new-privileges") for o in host["SecurityOpt"] or []
            ),
            "no-new-privileges effective": status["NoNewPrivs"].strip() == "1",
            "restart policy": host["RestartPolicy"]["Name"] in RESTART_POLICIES,
        }
        problems += [f"{service}: {name}" for name, ok in checks.items() if not ok]
    assert not problems, problems


def test_a_root_filesystem_write_is_refused(stack):
    """Refused because the root is read-only (not for want of a shell), while /tmp is written."""
    for service, c in running(stack):
        done = subprocess.run(
            ["docker", "exec", c["Id"], "sh", "-c",
             "echo x > /tmp/hardening-probe && rm /tmp/hardening-probe"
             " && echo x > /hardening-probe"],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode != 0, f"{service} could write to /"
        assert "Read-only file system" in done.stderr, (service, done.stderr)


def test_only_nginx_publishes_ports(stack):
    for service, c in running(stack):  # nginx among them
        published = {k: v for k, v in (c["NetworkSettings"]["Ports"] or {}).items() if v}
        if service == "nginx":
            assert published, "nginx publishes no port"
            assert all(b["HostIp"] == "127.0.0.1" for v in published.values() for b in v), (
                f"nginx publishes on an address other than 127.0.0.1: {published}"
            )
        else:
            assert not published, (service, published)


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_data_services_are_only_on_the_internal_network(stack, service):
    ids = stack.container_ids(service)
    assert ids, f"no running {service} container to check"
    for cid in ids:
        assert list(stack.inspect(cid)["NetworkSettings"]["Networks"]) == [
            f"{stack.project}_backend"
        ]
