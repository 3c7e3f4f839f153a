"""The hardening rules every long-running container of the stack keeps, read from `docker
inspect` and /proc/1/status inside it: one table for the compose stack (test_containers.py)
and for a swarm's tasks (tests/swarm/swarmlib.py). Each caller adds the rules that only hold
where it runs (restart policies and security_opt are compose's; on a swarm no-new-privileges
is the daemon's setting, docs/swarm.md)."""


def proc_status(text: str) -> dict[str, str]:
    """/proc/<pid>/status as a dict ("Uid" -> "10001\t10001\t...")."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def container_checks(c: dict, status: dict[str, str]) -> dict[str, bool]:
    """Rule -> kept, for the container `c` (`docker inspect`) whose process 1 has `status`."""
    host, health = c["HostConfig"], c["Config"].get("Healthcheck") or {}
    logs = host["LogConfig"]
    return {
        "non-root user": c["Config"]["User"] not in ("", "0", "root", "0:0")
        and status["Uid"].split()[0] != "0",
        "read-only root filesystem": host["ReadonlyRootfs"] is True,
        "no capabilities in effect": int(status["CapEff"], 16) == 0,
        "memory limit": host["Memory"] > 0,
        "pids limit": (host["PidsLimit"] or 0) > 0,
        "health check": bool(health.get("Test")) and health["Test"][0] != "NONE",
        "healthy": c["State"].get("Health", {}).get("Status") == "healthy",
        "rotated logs": logs["Type"] in ("json-file", "local")
        and bool(logs["Config"].get("max-size"))
        and bool(logs["Config"].get("max-file")),
    }
