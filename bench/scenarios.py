"""What is measured: the web service's set-ups (A, B, O) and the scenarios (N, S1-S7), and
running every scenario of one set-up on fresh web and nginx containers."""

from __future__ import annotations

import os
from collections.abc import Callable

from bench.config import (
    CONNECTIONS,
    DRAIN_RUN_MAX,
    DRAIN_SETUP_MAX,
    DURATION,
    POSTS,
    QUICK,
    QUICK_SLOW_RERUN_S,
    ROUNDS,
    WARMUP,
)
from bench.console import fail, log
from bench.load import cpu_ns, drain_time_wait, wrk
from bench.stack import Stack, http_status, wait_answered, wait_http

SETUPS = {
    "A": {
        "label": "A runserver",
        "command": "runserver",
        "conn_max_age": "0",
        "what": "manage.py runserver 0.0.0.0:8000 (the tutorial default), CONN_MAX_AGE=0",
    },
    "B": {
        "label": "B gunicorn defaults",
        "command": "gunicorn config.wsgi:application --bind 0.0.0.0:8000",
        "conn_max_age": "0",
        "what": "gunicorn with bare defaults (1 sync worker), CONN_MAX_AGE=0",
    },
    "O": {
        "label": "O ours",
        "command": "gunicorn",
        "conn_max_age": "60",
        "what": "ours: gunicorn config/gunicorn.conf.py (gthread, WEB_CONCURRENCY x GUNICORN_THREADS), "
        "CONN_MAX_AGE=60",
    },
}

# name: (description, target, wrk mode, path). target "nginx", "direct" (gunicorn's port),
# "stock" (bench/nginx-stock.conf). A path of None is filled in per run (scenario_path).
SCENARIOS = {
    "N": ("the same static file from a stock nginx (baseline)", "stock", "static", None),
    "S1": ("static file ~1 KB from nginx", "nginx", "static", None),
    "S2n": ("/healthz through nginx", "nginx", "static", "/healthz"),
    "S2d": ("/healthz direct to the web port", "direct", "static", "/healthz"),
    "S3": ("GET /api/posts/ (page of 20, authenticated)", "nginx", "list", "/api/posts/"),
    "S4": ("GET /api/posts/?page=200", "nginx", "page", None),
    "S4c": ("the same page 200 by cursor (?cursor=)", "nginx", "page", None),
    "S5": ("GET /api/posts/{id}/", "nginx", "detail", None),
    "S6": ("POST /api/posts/", "nginx", "create", None),
    "S7": ("bare Django JSON view, same 20 rows", "nginx", "list", "/api/bench/posts/"),
}
# Where wrk sends its load, from its container on the stack's frontend network: (service, port).
# By address, not name (stack.address): Docker 20.10's DNS has lost a container's name there
# in the middle of a run ("unable to resolve nginx:8080").
TARGETS = {"nginx": ("nginx", 8080), "direct": ("web", 8000), "stock": ("nginx-stock", 8080)}
# Measured with set-up O only: N and S1 do not touch the web service; S4c is the option our
# API offers (the page-number S4 runs on every set-up).
OURS_ONLY = {"N", "S1", "S4c"}
# The deep page of S4 and S4c: page 200 of the full dataset; a page that exists on a small
# (BENCH_QUICK) one.
DEEP_PAGE = min(200, max(1, POSTS // 20))
SETUP_ORDER = [s for s in os.environ.get("BENCH_SETUPS", "A,B,O").split(",") if s]
SCENARIO_ORDER = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]


def unknown_names() -> list[str]:
    """Set-ups and scenarios asked for (BENCH_SETUPS, BENCH_SCENARIOS) that do not exist."""
    return [s for s in SETUP_ORDER if s not in SETUPS] + [s for s in SCENARIO_ORDER if s not in SCENARIOS]


def start_setup(stack: Stack, key: str, setup: dict | None = None) -> dict:
    """Fresh web and nginx containers running set-up `key` (or `setup`, a dict shaped like
    those of SETUPS, with an optional "env" for compose/bench.yml); returns its URLs."""
    setup = setup or SETUPS[key]
    stack.setup_env = {
        "BENCH_WEB_COMMAND": setup["command"],
        "BENCH_CONN_MAX_AGE": setup["conn_max_age"],
        **setup.get("env", {}),
    }
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "web")
    direct = f"http://{stack.port('web', 8000)}"
    wait_http(direct + "/healthz", "web")
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "nginx")
    nginx = f"http://{stack.port('nginx', 8080)}"
    wait_http(nginx + "/api/bench/posts/", "nginx -> web")
    targets = {
        name: stack.address(service, port)
        for name, (service, port) in TARGETS.items()
        if name != "stock" or "N" in SCENARIO_ORDER
    }
    return {
        "nginx": nginx,
        "direct": direct,
        "targets": targets,
        "containers": [stack.container("web"), stack.container("nginx")],
    }


def scenario_path(name: str, data: dict) -> str:
    """The paths that depend on the run: the static file, the deep page and its cursor."""
    if name in {"N", "S1"}:
        return data["static_path"]
    if name == "S4c":
        return data["cursor_path"]
    return f"/api/posts/?page={DEEP_PAGE}"


def check_static(nginx: str, path: str) -> None:
    """S1 measures what a client gets: the file itself (200), not a redirect to HTTPS (what
    port 8080 answers when TLS is configured) or an error."""
    status = http_status(nginx + path)
    if status != 200:
        fail(f"S1: {nginx}{path} answered {status}, not 200 with the file; S1 would measure that")


def run_rounds(stack: Stack, seeded: dict, each_round: Callable | None = None) -> list:
    """ROUNDS rounds of every set-up, alternating: each round starts with the next set-up;
    then `each_round(stack, seeded, results, round_no)` (more runs in the same round)."""
    results: list = []
    for round_no in range(1, ROUNDS + 1):
        shift = (round_no - 1) % len(SETUP_ORDER)
        order = SETUP_ORDER[shift:] + SETUP_ORDER[:shift]
        for key in order:
            run_setup(stack, key, seeded, results, round_no)
        if each_round:
            each_round(stack, seeded, results, round_no)
    return results


def run_setup(stack: Stack, key: str, data: dict, results: list, round_no: int) -> None:
    log(f"round {round_no}/{ROUNDS}: set-up {SETUPS[key]['label']}: fresh web + nginx containers")
    drained = drain_time_wait(DRAIN_SETUP_MAX, [])
    urls = start_setup(stack, key)
    log(
        f"  TIME_WAIT {drained['time_wait_before']} -> {drained['time_wait_after']} "
        f"(waited {drained['drain_s']}s); warming up {WARMUP}s"
    )
    wrk(stack, urls["targets"]["nginx"], "list", "/api/posts/", CONNECTIONS[0], WARMUP, data)
    if key == "O" and "S1" in SCENARIO_ORDER:
        check_static(urls["nginx"], data["static_path"])
    for name in SCENARIO_ORDER:
        if name in OURS_ONLY and key != "O":
            continue
        path = SCENARIOS[name][3] or scenario_path(name, data)
        for connections in CONNECTIONS:
            results.append(measure(stack, urls, key, name, connections, path, data, round_no))


def measure(
    stack: Stack, urls: dict, key: str, name: str, connections: int, path: str, data: dict, round_no: int
) -> dict:
    """One wrk run of scenario `name` on set-up `key`, after TIME_WAIT drained; its row."""
    _, target, mode, _ = SCENARIOS[name]
    drain = drain_time_wait(DRAIN_RUN_MAX, urls["containers"])
    web_before = cpu_ns(urls["containers"][0])
    row = wrk(stack, urls["targets"][target], mode, path, connections, DURATION, data)
    web_after = cpu_ns(urls["containers"][0])
    # web's CPU per request answered (its cgroup, over the run and wrk's start and stop): the
    # price of a setting, steadier than req/s on a machine the load generator shares.
    row["web_cpu_ms_per_req"] = (
        round((web_after - web_before) / 1e6 / row["requests"], 3)
        if web_before is not None and web_after is not None and row["requests"]
        else None
    )
    if QUICK and not row["requests"]:
        # Nothing completed within DURATION says only that the machine is slow (speed
        # is never the quick check's business). Once web has worked through what the
        # run left queued, once more with 2 connections (wrk's least for 2 threads).
        log(f"  {name} c={connections}: no request completed in {DURATION}s; once more")
        wait_answered(urls["nginx"] + "/healthz", QUICK_SLOW_RERUN_S * 8)
        row = wrk(stack, urls["targets"][target], mode, path, 2, QUICK_SLOW_RERUN_S, data)
        row["slow_rerun_connections"] = 2
    row.update(setup=key, scenario=name, connections=connections, round=round_no, **drain)
    errors = row["connect_errors"] + row["read_errors"] + row["write_errors"] + row["timeouts"]
    log(
        f"  {name:<4} c={connections:<3} {row['rps']:>9.1f} req/s  p50 {row['p50_ms']:7.1f} ms"
        f"  p99 {row['p99_ms']:7.1f} ms  non-2xx {row['non2xx']}  socket errors {errors}"
        f"  wrk CPU {row['wrk_cpu_s']} s  web CPU {row['web_cpu_ms_per_req']} ms/request"
    )
    return row
