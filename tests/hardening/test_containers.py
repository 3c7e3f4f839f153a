"""Every running prod container, asserted with `docker inspect` (and /proc inside it)."""

import json
import subprocess

import pytest

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


def proc_status(cid: str) -> dict[str, str]:
    out = subprocess.run(
        ["docker", "exec", cid, "cat", "/proc/1/status"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_every_container_is_hardened(stack):
    problems = []
    for service, c in running(stack):
        host, cid = c["HostConfig"], c["Id"]
        status = proc_status(cid)
        checks = {
            "non-root user": c["Config"]["User"] not in ("", "0", "root", "0:0")
            and status["Uid"].split()[0] != "0",
            "read-only root filesystem": host["ReadonlyRootfs"] is True,
            "cap_drop ALL": host["CapDrop"] == ["ALL"],
            "no unexplained added capabilities": set(host["CapAdd"] or []) <= set(ALLOWED_CAP_ADD),
            "no capabilities in effect": int(status["CapEff"], 16) == 0,
            "no-new-privileges set": any(
                o.startswith("no-new-privileges") for o in host["SecurityOpt"] or []
            ),
            "no-new-privileges effective": status["NoNewPrivs"].strip() == "1",
            "memory limit": host["Memory"] > 0,
            "pids limit": (host["PidsLimit"] or 0) > 0,
            "restart policy": host["RestartPolicy"]["Name"] in RESTART_POLICIES,
            "health check": bool(c["Config"].get("Healthcheck", {}).get("Test"))
            and c["Config"]["Healthcheck"]["Test"][0] != "NONE",
            "healthy": c["State"].get("Health", {}).get("Status") == "healthy",
            "rotated logs": host["LogConfig"]["Type"] in ("json-file", "local")
            and bool(host["LogConfig"]["Config"].get("max-size"))
            and bool(host["LogConfig"]["Config"].get("max-file")),
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
