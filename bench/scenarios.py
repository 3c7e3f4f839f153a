"""What is measured: the web service's set-ups (A, B, O, and M: ours with the app's metrics off)
and the scenarios (S1-S7), and running every scenario of one set-up on fresh web and nginx
containers."""

from __future__ import annotations

import os

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
from bench.console import log
from bench.load import drain_time_wait, wrk
from bench.stack import Stack, wait_answered, wait_http

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
    # The price of the app's Prometheus metrics (on in O, the default): O with DJANGO_METRICS=0.
    "M": {
        "label": "M ours, metrics off",
        "command": "gunicorn",
        "conn_max_age": "60",
        "metrics": "0",
        "what": "ours with the app's metrics off (DJANGO_METRICS=0): S3 only, beside O's S3",
    },
}

# name: (description, target, wrk mode, path). target "nginx", "direct" (gunicorn's port).
SCENARIOS = {
    "S1": ("static file ~1 KB from nginx", "nginx", "static", None),
    "S2n": ("/healthz through nginx", "nginx", "static", "/healthz"),
    "S2d": ("/healthz direct to the web port", "direct", "static", "/healthz"),
    "S3": ("GET /api/posts/ (page of 20, authenticated)", "nginx", "list", "/api/posts/"),
    "S4": ("GET /api/posts/?page=200", "nginx", "page", "/api/posts/?page=200"),
    "S5": ("GET /api/posts/{id}/", "nginx", "detail", None),
    "S6": ("POST /api/posts/", "nginx", "create", None),
    "S7": ("bare Django JSON view, same 20 rows", "nginx", "list", "/api/bench/posts/"),
}
# Where wrk sends its load, from its container on the stack's frontend network.
TARGETS = {"nginx": "http://nginx:8080", "direct": "http://web:8000"}
# S1 does not touch the web service: measured with set-up O only.
NGINX_ONLY = {"S1"}
# Set-up M measures only these (the metrics' cost on the main API scenario).
METRICS_OFF_SCENARIOS = {"S3"}
SETUP_ORDER = [s for s in os.environ.get("BENCH_SETUPS", "A,B,O,M").split(",") if s]
SCENARIO_ORDER = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]


def unknown_names() -> list[str]:
    """Set-ups and scenarios asked for (BENCH_SETUPS, BENCH_SCENARIOS) that do not exist."""
    return [s for s in SETUP_ORDER if s not in SETUPS] + [s for s in SCENARIO_ORDER if s not in SCENARIOS]


def start_setup(stack: Stack, key: str) -> dict:
    """Fresh web and nginx containers running set-up `key`; returns its URLs."""
    setup = SETUPS[key]
    stack.setup_env = {
        "BENCH_WEB_COMMAND": setup["command"],
        "BENCH_CONN_MAX_AGE": setup["conn_max_age"],
        "BENCH_METRICS": setup.get("metrics", "1"),
    }
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "web")
    direct = f"http://{stack.port('web', 8000)}"
    wait_http(direct + "/healthz", "web")
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "nginx")
    nginx = f"http://{stack.port('nginx', 8080)}"
    wait_http(nginx + "/api/bench/posts/", "nginx -> web")
    return {
        "nginx": nginx,
        "direct": direct,
        "containers": [stack.container("web"), stack.container("nginx")],
    }


def run_rounds(stack: Stack, seeded: dict) -> list:
    """ROUNDS rounds of every set-up, alternating: each round starts with the next set-up."""
    results: list = []
    for round_no in range(1, ROUNDS + 1):
        shift = (round_no - 1) % len(SETUP_ORDER)
        order = SETUP_ORDER[shift:] + SETUP_ORDER[:shift]
        for key in order:
            run_setup(stack, key, seeded, results, round_no)
    return results


def run_setup(stack: Stack, key: str, data: dict, results: list, round_no: int) -> None:
    log(f"round {round_no}/{ROUNDS}: set-up {SETUPS[key]['label']}: fresh web + nginx containers")
    drained = drain_time_wait(DRAIN_SETUP_MAX, [])
    urls = start_setup(stack, key)
    log(
        f"  TIME_WAIT {drained['time_wait_before']} -> {drained['time_wait_after']} "
        f"(waited {drained['drain_s']}s); warming up {WARMUP}s"
    )
    wrk(stack, TARGETS["nginx"], "list", "/api/posts/", CONNECTIONS[0], WARMUP, data)
    for name in SCENARIO_ORDER:
        if name in NGINX_ONLY and key != "O":
            continue
        if key == "M" and name not in METRICS_OFF_SCENARIOS:
            continue
        _, target, mode, path = SCENARIOS[name]
        if name == "S1":
            path = data["static_path"]
        elif name == "S4":
            # Page 200 of the full dataset; a page that exists on a small (BENCH_QUICK) one.
            path = f"/api/posts/?page={min(200, max(1, POSTS // 20))}"
        for connections in CONNECTIONS:
            drain = drain_time_wait(DRAIN_RUN_MAX, urls["containers"])
            row = wrk(stack, TARGETS[target], mode, path, connections, DURATION, data)
            if QUICK and not row["requests"]:
                # Nothing completed within DURATION says only that the machine is slow (speed
                # is never the quick check's business). Once web has worked through what the
                # run left queued, once more with 2 connections (wrk's least for 2 threads).
                log(f"  {name} c={connections}: no request completed in {DURATION}s; once more")
                wait_answered(urls["nginx"] + "/healthz", QUICK_SLOW_RERUN_S * 8)
                row = wrk(stack, TARGETS[target], mode, path, 2, QUICK_SLOW_RERUN_S, data)
                row["slow_rerun_connections"] = 2
            row.update(setup=key, scenario=name, connections=connections, round=round_no, **drain)
            results.append(row)
            errors = row["connect_errors"] + row["read_errors"] + row["write_errors"] + row["timeouts"]
            log(
                f"  {name:<4} c={connections:<3} {row['rps']:>9.1f} req/s  p50 {row['p50_ms']:7.1f} ms"
                f"  p99 {row['p99_ms']:7.1f} ms  non-2xx {row['non2xx']}  socket errors {errors}"
            )
