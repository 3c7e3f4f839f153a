"""`python -m bench`: one benchmark run, start to end (see bench/__init__.py)."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

from bench import config, report
from bench.builds import builds
from bench.console import fail, log
from bench.data import deep_cursor_path, seed, static_path
from bench.resources import idle_ram, image_sizes, machine
from bench.scenarios import DEEP_PAGE, SCENARIO_ORDER, SETUP_ORDER, run_rounds, start_setup, unknown_names
from bench.stack import Stack, make_env_file
from bench.variants import VARIANT_ORDER, run_variants, unknown_variants
from bench.worker import exports


def measure_stack(data: dict) -> list:
    """Up, idle RAM, seed, every set-up and scenario, the worker; always down. Returns the wrk runs."""
    env_file = make_env_file()
    stack = Stack(env_file)
    stack.down()
    log("building the wrk image (bench/wrk)")
    stack.compose("build", "wrk", timeout=600)
    try:
        log("prod stack: up, waiting until every service is healthy (fresh volumes)")
        start = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=400)
        data["up_to_healthy_s"] = round(time.monotonic() - start, 1)
        log(f"prod stack healthy in {data['up_to_healthy_s']}s; idle RAM after 10s")
        time.sleep(10)
        data["idle_ram_mib"] = idle_ram(stack)
        log("idle RAM (MiB): " + ", ".join(f"{k} {v}" for k, v in data["idle_ram_mib"].items()))
        seeded = seed(stack)
        data["seed_s"] = seeded["seconds"]
        seeded["static_path"] = static_path(stack)
        data["static_path"] = seeded["static_path"]
        prepare_baselines(stack, seeded, data)
        results = run_rounds(stack, seeded, each_round=run_variants)
        data["runs"] = results
        # Back to ours for the worker measurements.
        start_setup(stack, "O")
        data["worker"] = exports(stack)
    finally:
        log("prod stack: down (volumes removed)")
        stack.down()
        env_file.unlink(missing_ok=True)
    return results


def prepare_baselines(stack: Stack, seeded: dict, data: dict) -> None:
    """The stock nginx of N beside the stack's, and the cursor of S4c's deep page."""
    if "N" in SCENARIO_ORDER:
        log("baseline N: stock nginx (bench/nginx-stock.conf) beside the stack's")
        stack.start_stock_nginx()
    if "S4c" in SCENARIO_ORDER:
        nginx = f"http://{stack.port('nginx', 8080)}"
        seeded["cursor_path"] = deep_cursor_path(nginx, seeded["tokens"][0], DEEP_PAGE)
        data["cursor_path"] = seeded["cursor_path"]
        log(f"S4c: page {DEEP_PAGE} by cursor is {seeded['cursor_path']}")


def main() -> int:
    os.chdir(config.ROOT)
    if unknown := unknown_names() + unknown_variants():
        fail(f"unknown set-up or scenario: {', '.join(unknown)}")
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = config.OUT
    out.mkdir(parents=True, exist_ok=True)
    kind = "quick run (harness check)" if config.QUICK else "full run"
    log(f"{kind}: project {config.PROJECT}, results in {out}")
    data: dict = {
        "timestamp": timestamp,
        "machine": machine(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "quick": config.QUICK,
        "config": {
            "duration_s": config.DURATION,
            "warmup_s": config.WARMUP,
            "rounds": config.ROUNDS,
            "posts": config.POSTS,
            "users": config.USERS,
            "connections": config.CONNECTIONS,
            "setups": SETUP_ORDER,
            "scenarios": SCENARIO_ORDER,
            "variants": VARIANT_ORDER,
        },
    }
    data["image_sizes_mb"] = image_sizes()
    log("image sizes (MB): " + ", ".join(f"{k} {v}" for k, v in data["image_sizes_mb"].items()))
    results = measure_stack(data)
    if config.BUILD:
        data["builds"] = builds(make_env_file())
        (config.ROOT / ".cache" / "bench" / f"{config.PROJECT}.env").unlink(missing_ok=True)
    empty = [f"{r['setup']} {r['scenario']} c={r['connections']}" for r in results if not r["requests"]]
    if empty and not config.QUICK:  # quick_check() reports them, after the results are written
        fail(f"wrk completed no request in: {', '.join(empty)}")
    data["summary"] = report.aggregate(results)
    data["targets"] = report.targets(data["summary"], data)
    if config.QUICK:
        data["quick_check"] = report.quick_check(results, data.get("worker", {}))
    text = report.write(out, data)
    print()
    print(text)
    if config.QUICK:
        if data["quick_check"]:
            fail("the harness check (BENCH_QUICK) failed:\n  " + "\n  ".join(data["quick_check"]))
        log(f"harness check passed: {len(results)} wrk runs, each answered 2xx only")
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
