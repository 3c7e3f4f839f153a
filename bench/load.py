"""Load: one wrk run from the wrk container, and the wait for TIME_WAIT sockets to drain
before the next (leftover sockets from one run would slow the next)."""

from __future__ import annotations

import json
import re
import time

from bench.config import DRAIN_THRESHOLD, HOST, QUICK
from bench.console import fail, run
from bench.stack import Stack


def wrk(
    stack: Stack, url: str, mode: str, path: str | None, connections: int, seconds: int, data: dict
) -> dict:
    """One wrk run from the wrk container on the stack's frontend network (compose/bench.yml)."""
    env = {
        "BENCH_HOST": HOST,
        "BENCH_MODE": mode,
        "BENCH_PATH": path or "/",
        "BENCH_TOKENS": ",".join(data["tokens"]) if mode != "static" else "",
        "BENCH_ID_MIN": str(data["id_min"]),
        "BENCH_ID_MAX": str(data["id_max"]),
    }
    target = url + (path if mode == "static" and path else "/")
    # BENCH_QUICK: wrk also counts responses by status, for report.quick_check().
    count = ["-e", "BENCH_COUNT_STATUS=1"] if QUICK else []
    # wrk runs under sh, whose `times` then prints the CPU wrk used (user and system): the
    # load generator shares the machine with the stack, and the report says how much it took.
    result = stack.compose(
        "run", "--rm", "--no-deps", "-T", *count, "--entrypoint", "sh", "wrk",
        "-c", 'wrk "$@"; status=$?; times; exit $status', "wrk",
        "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", "/bench/report.lua", target,
        env=env,
        timeout=seconds + 60,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        fail(f"wrk printed no result for {target}:\n{result.stdout}\n{result.stderr}")
    row = json.loads(lines[-1])
    row["wrk_cpu_s"] = wrk_cpu_seconds(result.stdout)
    return row


# `times` prints two lines, the shell's own CPU and its children's: "0m0.190000s 0m1.630000s".
_TIMES = re.compile(r"^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$")


def wrk_cpu_seconds(stdout: str) -> float | None:
    """wrk's CPU time (user + system, seconds) from sh's `times` after it (its last line)."""
    found = [m for line in stdout.splitlines() if (m := _TIMES.match(line.strip()))]
    if not found:
        return None
    m = found[-1]
    return round(int(m[1]) * 60 + float(m[2]) + int(m[3]) * 60 + float(m[4]), 2)


def cpu_ns(container: str) -> int | None:
    """The container's CPU time so far (ns), from its cgroup: cpuacct.usage (cgroup v1, as
    Docker 20.10 mounts it here) or cpu.stat's usage_usec (cgroup v2)."""
    v1 = run(["docker", "exec", container, "cat", "/sys/fs/cgroup/cpuacct/cpuacct.usage"], check=False)
    if v1.returncode == 0 and v1.stdout.strip().isdigit():
        return int(v1.stdout.strip())
    v2 = run(["docker", "exec", container, "cat", "/sys/fs/cgroup/cpu.stat"], check=False)
    for line in v2.stdout.splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) * 1000
    return None


def time_wait_host() -> int:
    out = run(["ss", "-Htan", "state", "time-wait"], check=False).stdout
    return len([line for line in out.splitlines() if line.strip()])


def time_wait_container(container: str) -> int:
    out = run(["docker", "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6"], check=False).stdout
    return sum(1 for line in out.splitlines()[1:] if len(line.split()) > 3 and line.split()[3] == "06")


def drain_time_wait(limit: float, containers: list[str]) -> dict:
    """Wait (at most `limit` s) until TIME_WAIT sockets on the host and in the containers'
    namespaces are below DRAIN_THRESHOLD. Returns the counts seen first and last."""

    def count() -> int:
        return time_wait_host() + sum(time_wait_container(c) for c in containers)

    start = time.monotonic()
    first = last = count()
    while last >= DRAIN_THRESHOLD and time.monotonic() - start < limit:
        time.sleep(1)
        last = count()
    return {"time_wait_before": first, "time_wait_after": last, "drain_s": round(time.monotonic() - start, 1)}
