"""The harness's settings, read once from the environment (docs/benchmarks.md, Settings)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK", "") == "1"


def _env_int(name: str, full: int, quick: int) -> int:
    return int(os.environ.get(name) or (quick if QUICK else full))


PROJECT = os.environ.get("BENCH_PROJECT", "drs-bench")
TAG = os.environ.get("DRS_TAG", "latest")
DURATION = _env_int("BENCH_DURATION", 4, 1)
WARMUP = _env_int("BENCH_WARMUP", 3, 1)
ROUNDS = _env_int("BENCH_ROUNDS", 3, 1)
POSTS = _env_int("BENCH_POSTS", 100_000, 2_000)
USERS = _env_int("BENCH_USERS", 100, 10)
SMALL_EXPORTS = _env_int("BENCH_SMALL_EXPORTS", 1000, 20)
BUILD = _env_int("BENCH_BUILD", 1, 0) == 1
# Longest wait for TIME_WAIT sockets to drain: before a set-up, and between its scenarios.
DRAIN_SETUP_MAX = _env_int("BENCH_DRAIN_MAX", 60, 5)
DRAIN_RUN_MAX = _env_int("BENCH_DRAIN_RUN_MAX", 5, 1)
DRAIN_THRESHOLD = 200
# BENCH_QUICK: how long the one rerun of a run that completed no request lasts (a generous hang
# guard: on a machine loaded by other work, single requests have taken over 5 s).
QUICK_SLOW_RERUN_S = 15
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "32,64").split(",")]
# Where a run is written (overwriting the previous one): bench/results/ is committed, so its
# history is git's; quick runs go to the cache.
OUT = Path(os.environ.get("BENCH_OUT") or ROOT / (".cache/bench-results" if QUICK else "bench/results"))
# The Host header of every request (nginx serves only its server_name).
HOST = "localhost"
