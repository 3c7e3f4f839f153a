"""Options a user can run, priced against ours in the same run: each a user-facing setting of
the web service, measured on S3 at the first connection count on fresh web and nginx
containers, every round after the set-ups, in an order that shifts each round. Their yardstick
is C, ours unchanged measured the same way: set-up O's S3 runs after the static and health
check scenarios on the same containers, and once read ~15% below C in the same run.
M (the app's metrics off) prices the metrics: C / M is issue 15's "within 3%". Reported with
req/s, p50 and p99 (report.variants_table).

Not a variant: nginx holding requests in its own queue when every upstream slot is busy
(`server ... max_conns=N` with `queue`). Open-source nginx has `max_conns` but not `queue`
(NGINX Plus only): without it a request over the limit is answered 502 at once, not queued."""

from __future__ import annotations

import os

from bench.config import CONNECTIONS, DRAIN_SETUP_MAX, WARMUP
from bench.console import log
from bench.load import drain_time_wait, wrk
from bench.scenarios import SETUPS, measure, start_setup
from bench.stack import Stack

_OURS = SETUPS["O"]


def _variant(what: str, args: str = "", env: dict | None = None) -> dict:
    return {
        "label": what,
        "command": f"gunicorn {args}".strip(),
        "conn_max_age": _OURS["conn_max_age"],
        "env": env or {},
        "what": what,
    }


# Ours is 2 workers x 4 threads (WEB_CONCURRENCY, GUNICORN_THREADS), recycled every 50,000
# requests (GUNICORN_MAX_REQUESTS, jitter 5,000), GC threshold 20,000 (GUNICORN_GC_THRESHOLD).
VARIANTS = {
    "C": _variant("ours unchanged: the yardstick of the others"),
    "M": _variant("the app's metrics off (DJANGO_METRICS=0)", env={"BENCH_METRICS": "0"}),
    "W2x2": _variant("2 workers x 2 threads (WEB_CONCURRENCY=2, GUNICORN_THREADS=2)", "--threads 2"),
    "W2x1": _variant("2 workers x 1 thread (WEB_CONCURRENCY=2, GUNICORN_THREADS=1)", "--threads 1"),
    "W3x1": _variant(
        "3 workers x 1 thread (WEB_CONCURRENCY=3, GUNICORN_THREADS=1)", "--workers 3 --threads 1"
    ),
    "Sy3": _variant(
        "3 sync workers (GUNICORN_WORKER_CLASS=sync, WEB_CONCURRENCY=3)",
        "--worker-class sync --workers 3",
    ),
    "W4x2": _variant(
        "4 workers x 2 threads (WEB_CONCURRENCY=4, GUNICORN_THREADS=2)", "--workers 4 --threads 2"
    ),
    "R1k": _variant(
        "recycled every 1,000 requests, jitter 100 (GUNICORN_MAX_REQUESTS=1000, "
        "GUNICORN_MAX_REQUESTS_JITTER=100)",
        "--max-requests 1000 --max-requests-jitter 100",
    ),
    "GC700": _variant(
        "Python's default GC threshold (GUNICORN_GC_THRESHOLD=700)", env={"BENCH_GC_THRESHOLD": "700"}
    ),
}
VARIANT_ORDER = [v for v in os.environ.get("BENCH_VARIANTS", ",".join(VARIANTS)).split(",") if v]
VARIANT_SCENARIO = "S3"


def unknown_variants() -> list[str]:
    return [v for v in VARIANT_ORDER if v not in VARIANTS]


def run_variants(stack: Stack, data: dict, results: list, round_no: int) -> None:
    """Every variant once (round `round_no`), in an order that shifts each round."""
    if not VARIANT_ORDER:
        return
    shift = (round_no - 1) % len(VARIANT_ORDER)
    for key in VARIANT_ORDER[shift:] + VARIANT_ORDER[:shift]:
        log(f"round {round_no}: variant {key}: {VARIANTS[key]['what']}")
        drain_time_wait(DRAIN_SETUP_MAX, [])
        urls = start_setup(stack, key, VARIANTS[key])
        wrk(stack, urls["targets"]["nginx"], "list", "/api/posts/", CONNECTIONS[0], WARMUP, data)
        results.append(
            measure(stack, urls, key, VARIANT_SCENARIO, CONNECTIONS[0], "/api/posts/", data, round_no)
        )
