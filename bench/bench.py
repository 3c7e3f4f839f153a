#!/usr/bin/env python3
"""The benchmark harness behind `make bench` (run through scripts/bench.sh).

Brings up the prod stack under its own compose project, seeds a fixed dataset, and measures
with wrk (in a container on the stack's own network) each scenario for three set-ups of the
web service on the same app, data and machine: (A) `manage.py runserver`, (B) gunicorn with
bare defaults and CONN_MAX_AGE=0, (O) ours. Set-ups alternate and repeat (rounds; the median
is reported), each from fresh web and nginx containers after TIME_WAIT sockets have drained.
Also measures image sizes, idle RAM, time to healthy, worker throughput and build times. Writes
<out>/<UTC timestamp>/{results.json,report.md,*.png} and prints a table.

Configuration (environment): BENCH_QUICK=1 (seconds per scenario, small dataset: checks the
harness works), BENCH_DURATION, BENCH_ROUNDS, BENCH_POSTS, BENCH_USERS, BENCH_SETUPS (e.g. "O"),
BENCH_SCENARIOS (e.g. "S3,S7"), BENCH_CONNECTIONS ("32,64"), BENCH_SMALL_EXPORTS, BENCH_BUILD
(1/0: cold build and rebuild timing), BENCH_OUT (results folder), BENCH_PROJECT (drs-bench).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK", "") == "1"


def _env_int(name: str, full: int, quick: int) -> int:
    return int(os.environ.get(name) or (quick if QUICK else full))


PROJECT = os.environ.get("BENCH_PROJECT", "drs-bench")
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
OUT = Path(os.environ.get("BENCH_OUT") or ROOT / (".cache/bench-results" if QUICK else "bench/results"))
HOST = "localhost"
HTTP_TIMEOUT = 5

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
SETUP_ORDER = [s for s in os.environ.get("BENCH_SETUPS", "A,B,O").split(",") if s]
SCENARIO_ORDER = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]

STARTED = time.monotonic()


# ---- output -------------------------------------------------------------------------------------
def log(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[bench {elapsed // 60:2d}:{elapsed % 60:02d}] {message}", flush=True)


def fail(message: str) -> None:
    print(f"bench: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# ---- commands -----------------------------------------------------------------------------------
def run(
    cmd: list[str],
    *,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        check=False,
    )
    if check and result.returncode != 0:
        fail(f"{' '.join(cmd[:6])}... exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result


class Stack:
    """The bench stack: docker compose with the prod files and compose/bench.yml."""

    def __init__(self, env_file: Path):
        self.env_file = env_file
        self.setup_env = {"BENCH_WEB_COMMAND": "gunicorn", "BENCH_CONN_MAX_AGE": "60"}

    def compose(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        input_text: str | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        cmd = [
            "docker",
            "compose",
            "-p",
            PROJECT,
            "--env-file",
            str(self.env_file),
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.prod.yml",
            "-f",
            "compose/bench.yml",
            *args,
        ]
        return run(
            cmd,
            env={
                "DRS_ENV_FILE": str(self.env_file),
                "COMPOSE_BAKE": "false",
                **self.setup_env,
                **(env or {}),
            },
            check=check,
            timeout=timeout,
            input_text=input_text,
        )

    def port(self, service: str, port: int) -> str:
        out = self.compose("port", service, str(port)).stdout.strip()
        if not out:
            fail(f"{service} publishes no port {port}")
        return out.splitlines()[0]

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        if not ids:
            fail(f"no running {service} container")
        return ids[0]

    def psql(self, sql: str, timeout: float = 600) -> str:
        return self.compose(
            "exec",
            "-T",
            "postgres",
            "sh",
            "-c",
            'psql -X -q -t -A -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" "$POSTGRES_DB"',
            input_text=sql,
            timeout=timeout,
        ).stdout.strip()

    def manage_shell(self, code: str, timeout: float = 600) -> str:
        return self.compose(
            "exec", "-T", "-e", "DJANGO_DB_STATEMENT_TIMEOUT_MS=0", "web",
            "python", "manage.py", "shell", "-c", code, timeout=timeout
        ).stdout.strip()

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)


def http_ok(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Host": HOST})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_answered(url: str, limit: float) -> None:
    """One request, allowed `limit` seconds to wait its turn behind queued ones (a hang guard)."""
    request = urllib.request.Request(url, headers={"Host": HOST})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=limit):
            log(f"  {url} answered after {time.monotonic() - start:.1f}s")
    except (urllib.error.URLError, OSError) as exc:
        log(f"  {url} not answered within {limit:.0f}s: {exc}")


def wait_http(url: str, what: str, limit: float = 90) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if http_ok(url):
            return time.monotonic() - start
        time.sleep(0.2)
    fail(f"{what} did not answer {url} within {limit:.0f}s")
    return limit


# ---- TIME_WAIT ----------------------------------------------------------------------------------
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


# ---- set-up ------------------------------------------------------------------------------------
def make_env_file() -> Path:
    folder = ROOT / ".cache" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    env_file = folder / f"{PROJECT}.env"
    env_file.unlink(missing_ok=True)
    run([str(ROOT / "scripts" / "prod-env.sh"), str(env_file)])
    text = env_file.read_text()
    text = re.sub(r"(?m)^HTTP_PORT=.*$", "HTTP_PORT=", text)
    text = re.sub(r"(?m)^HTTPS_PORT=.*$", "HTTPS_PORT=", text)
    text = re.sub(r"(?m)^HTTP_BIND=.*$", "HTTP_BIND=127.0.0.1", text)
    # Plain HTTP: the benchmark prices the app server, not TLS. An empty certificate folder
    # makes nginx serve HTTP only; Django then must not redirect to HTTPS.
    certs = folder / "no-certs"
    certs.mkdir(exist_ok=True)
    overrides = {
        "TLS_CERTS_DIR": str(certs),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_HSTS_SECONDS": "0",
        "NGINX_HSTS_SECONDS": "0",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "http://localhost",
        # wrk is one client address with up to 64 connections; a site's users are many
        # addresses, each under nginx's per-address limit (NGINX_CONN_PER_IP, default 32).
        "NGINX_CONN_PER_IP": "256",
    }
    for name, value in overrides.items():
        text = re.sub(rf"(?m)^{name}=.*\n", "", text) + f"{name}={value}\n"
    # Requests rotate over the seeded users' tokens, so the per-user throttle (default
    # 1000/min) is exercised on every request but not hit.
    env_file.write_text(text)
    return env_file


def image_sizes() -> dict:
    tag = os.environ.get("DRS_TAG", "latest")
    sizes = {}
    for name in [
        "debian:trixie-slim",
        *(f"drs/{i}:{tag}" for i in ("web", "worker", "nginx", "redis", "postgres")),
    ]:
        out = run(["docker", "image", "inspect", "-f", "{{.Size}}", name], check=False).stdout.strip()
        sizes[name] = round(int(out) / 1e6, 1) if out.isdigit() else None
    return sizes


def _mib(text: str) -> float:
    number, unit = re.match(r"([\d.]+)\s*([A-Za-z]+)", text).groups()
    factor = {
        "B": 1 / 2**20,
        "KiB": 1 / 1024,
        "MiB": 1,
        "GiB": 1024,
        "kB": 1e3 / 2**20,
        "MB": 1e6 / 2**20,
        "GB": 1e9 / 2**20,
    }[unit]
    return round(float(number) * factor, 1)


def idle_ram(stack: Stack) -> dict:
    ids = stack.compose("ps", "-q").stdout.split()
    out = run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids]).stdout
    ram = {}
    for line in out.splitlines():
        row = json.loads(line)
        service = re.sub(rf"^{re.escape(PROJECT)}[-_]", "", row["Name"])
        ram[service] = _mib(row["MemUsage"].split("/")[0])
    ram["total"] = round(sum(ram.values()), 1)
    return ram


def seed(stack: Stack) -> dict:
    """USERS users with API tokens and POSTS posts, straight into PostgreSQL in batches of
    10,000 rows (INSERT ... SELECT generate_series): ~100,000 posts in seconds."""
    start = time.monotonic()
    stack.psql(f"""
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        SELECT '!', false, 'bench' || lpad(i::text, 3, '0'), '', '', '', false, true, now()
        FROM generate_series(1, {USERS}) AS i;
    """)
    # API tokens as knox stores them (apps/accounts): the SHA-512 digest and the first 15
    # characters; the tokens themselves stay here, for the load generator.
    ids = stack.psql(
        "SELECT id FROM auth_user WHERE username LIKE 'bench%' ORDER BY id;"
    ).split()
    tokens = [secrets.token_hex(32) for _ in ids]
    rows = ", ".join(
        f"('{hashlib.sha512(t.encode()).hexdigest()}', '{t[:15]}', {int(i)}, now())"
        for t, i in zip(tokens, ids, strict=True)
    )
    stack.psql(f"INSERT INTO knox_authtoken (digest, token_key, user_id, created) VALUES {rows};")
    batch = 10_000
    for low in range(1, POSTS + 1, batch):
        high = min(low + batch - 1, POSTS)
        stack.psql(f"""
            INSERT INTO posts_post (author_id, title, body, created_at, updated_at)
            SELECT u.ids[1 + i % {USERS}],
                   'Benchmark post number ' || i,
                   'Post ' || i || ' of the benchmark dataset. ' ||
                   repeat('Django REST stack behind nginx with PostgreSQL and Redis. ', 5),
                   now() - ({POSTS} - i) * interval '1 second',
                   now() - ({POSTS} - i) * interval '1 second'
            FROM generate_series({low}, {high}) AS i,
                 (SELECT array_agg(id ORDER BY id) AS ids FROM auth_user
                  WHERE username LIKE 'bench%') AS u;
        """)
        log(f"seed: posts {high:,}/{POSTS:,}")
    stack.psql("VACUUM ANALYZE;")
    low, high = stack.psql("SELECT min(id) || ' ' || max(id) FROM posts_post;").split()
    seconds = round(time.monotonic() - start, 1)
    log(f"seed: {USERS} users, {POSTS:,} posts in {seconds}s")
    return {"tokens": tokens, "id_min": int(low), "id_max": int(high), "seconds": seconds}


def start_setup(stack: Stack, key: str) -> dict:
    """Fresh web and nginx containers running set-up `key`; returns its URLs."""
    setup = SETUPS[key]
    stack.setup_env = {"BENCH_WEB_COMMAND": setup["command"], "BENCH_CONN_MAX_AGE": setup["conn_max_age"]}
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


# ---- wrk ----------------------------------------------------------------------------------------
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
    # BENCH_QUICK: wrk also counts responses by status, for quick_check().
    count = ["-e", "BENCH_COUNT_STATUS=1"] if QUICK else []
    result = stack.compose(
        "run", "--rm", "--no-deps", "-T", *count, "wrk",
        "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", "/bench/report.lua", target,
        env=env,
        timeout=seconds + 60,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        fail(f"wrk printed no result for {target}:\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1])


def static_path(stack: Stack) -> str:
    """A ~1 KB file collected into the nginx image."""
    out = stack.compose(
        "exec",
        "-T",
        "nginx",
        "sh",
        "-c",
        "find /srv/static -type f -name '*.svg' -size -1300c -size +700c | sort | head -1",
    ).stdout.strip()
    if not out:
        fail("no ~1 KB static file found in the nginx image")
    return out.replace("/srv/static/", "/static/", 1)


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


# ---- worker -------------------------------------------------------------------------------------
class WorkerSampler(threading.Thread):
    """Samples the worker container: peak RSS of its processes (VmHWM) and cgroup RSS."""

    def __init__(self, container: str):
        super().__init__(daemon=True)
        self.container = container
        self.stop = threading.Event()
        self.peak_process_mib = 0.0
        self.peak_cgroup_rss_mib = 0.0

    def sample(self) -> None:
        out = run(
            [
                "docker",
                "exec",
                self.container,
                "sh",
                "-c",
                "cat /proc/[0-9]*/status 2>/dev/null | grep VmHWM",
            ],
            check=False,
        ).stdout
        for kb in re.findall(r"VmHWM:\s+(\d+) kB", out):
            self.peak_process_mib = max(self.peak_process_mib, int(kb) / 1024)
        stat = Path(f"/sys/fs/cgroup/memory/docker/{self.container}/memory.stat")
        if stat.exists():
            match = re.search(r"(?m)^total_rss (\d+)$", stat.read_text())
            if match:
                self.peak_cgroup_rss_mib = max(self.peak_cgroup_rss_mib, int(match.group(1)) / 2**20)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.25)


def wait_exports(stack: Stack, owner: str, total: int, limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        done = int(
            stack.psql(
                "SELECT count(*) FROM exports_export e JOIN auth_user u ON u.id = e.owner_id "
                f"WHERE u.username = '{owner}' AND e.status IN ('done', 'failed');"
            )
        )
        if done >= total:
            return time.monotonic() - start
        time.sleep(0.5)
    fail(f"{owner}'s {total} exports not finished within {limit:.0f}s")
    return limit


def exports(stack: Stack) -> dict:
    """SMALL_EXPORTS small exports queued at once and drained; then one export of every post."""
    stack.psql("""
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        VALUES ('!', false, 'export-small', '', '', '', false, true, now()),
               ('!', false, 'export-all', '', '', '', false, true, now());
        INSERT INTO posts_post (author_id, title, body, created_at, updated_at)
        SELECT u.id, 'Small export post ' || i, 'A short post.', now(), now()
        FROM generate_series(1, 10) AS i, auth_user AS u WHERE u.username = 'export-small';
    """)
    log(f"worker: queueing {SMALL_EXPORTS} small exports (10 posts each)")
    start = time.monotonic()
    stack.manage_shell(
        "from django.contrib.auth import get_user_model\n"
        "from apps.exports import services\n"
        "user = get_user_model().objects.get(username='export-small')\n"
        f"for i in range({SMALL_EXPORTS}):\n"
        "    services.request_export(user, 'csv' if i % 2 else 'json')\n"
    )
    queued = time.monotonic() - start
    wait_exports(stack, "export-small", SMALL_EXPORTS, 600)
    drained = time.monotonic() - start
    failed = int(stack.psql("SELECT count(*) FROM exports_export WHERE status = 'failed';"))
    log(
        f"worker: {SMALL_EXPORTS} small exports queued in {queued:.1f}s, all finished after "
        f"{drained:.1f}s ({failed} failed)"
    )

    total = int(
        stack.psql(
            # The seeded posts only (not those S6 wrote): all of them, to one owner.
            "DELETE FROM posts_post WHERE title LIKE 'bench post %';"
            "UPDATE posts_post SET author_id = (SELECT id FROM auth_user WHERE username = 'export-all') "
            "WHERE author_id IN (SELECT id FROM auth_user WHERE username LIKE 'bench%');"
            "SELECT count(*) FROM posts_post p JOIN auth_user u ON u.id = p.author_id "
            "WHERE u.username = 'export-all';"
        ).splitlines()[-1]
    )
    stack.psql("VACUUM ANALYZE posts_post;")
    # Fresh worker: the peak RSS then belongs to this export alone.
    stack.compose("restart", "worker")
    stack.compose("up", "-d", "--no-deps", "--wait", "worker", timeout=180)
    worker = stack.container("worker")
    sampler = WorkerSampler(worker)
    sampler.sample()
    baseline = sampler.peak_process_mib
    sampler.start()
    log(f"worker: one CSV export of all {total:,} posts (worker peak RSS sampled every 0.25s)")
    start = time.monotonic()
    stack.manage_shell(
        "from django.contrib.auth import get_user_model\n"
        "from apps.exports import services\n"
        "services.request_export(get_user_model().objects.get(username='export-all'), 'csv')\n"
    )
    wait_exports(stack, "export-all", 1, 600)
    wall = time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    row = stack.psql(
        "SELECT e.status, coalesce(e.row_count, 0), extract(epoch FROM e.finished_at - e.started_at) "
        "FROM exports_export e JOIN auth_user u ON u.id = e.owner_id WHERE u.username = 'export-all';"
    )
    status, rows, run_s = row.split("|")
    log(
        f"worker: export of {int(rows):,} rows {status} in {wall:.1f}s (task {float(run_s):.1f}s), "
        f"peak process RSS {sampler.peak_process_mib:.0f} MiB (idle {baseline:.0f} MiB)"
    )
    return {
        "small_exports": SMALL_EXPORTS,
        "small_queued_s": round(queued, 1),
        "small_drained_s": round(drained, 1),
        "small_failed": failed,
        "big_rows": int(rows),
        "big_status": status,
        "big_wall_s": round(wall, 1),
        "big_task_s": round(float(run_s), 1),
        "worker_peak_rss_mib": round(sampler.peak_process_mib, 1),
        "worker_idle_rss_mib": round(baseline, 1),
        "worker_cgroup_peak_rss_mib": round(sampler.peak_cgroup_rss_mib, 1),
    }


# ---- builds -------------------------------------------------------------------------------------
def builds(env_file: Path) -> dict:
    """Cold build of the prod images (no layer cache; pip's download cache mount stays), then a
    rebuild after a one-line Python change. Both on a temporary copy of services/web, tagged
    bench-build, so the tree and the real images are never touched."""
    tag = "bench-build"
    with tempfile.TemporaryDirectory(prefix="drs-bench-build-") as tmp:
        web = Path(tmp) / "web"
        shutil.copytree(
            ROOT / "services" / "web",
            web,
            ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"),
        )
        fragment = Path(tmp) / "build.yml"
        fragment.write_text(
            f"services:\n  web:\n    build:\n      context: {web}\n"
            f"  migrate:\n    build:\n      context: {web}\n"
        )
        cmd = [
            "docker",
            "compose",
            "-p",
            f"{PROJECT}-build",
            "--env-file",
            str(env_file),
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.prod.yml",
            "-f",
            str(fragment),
            "build",
        ]
        env = {"DRS_TAG": tag, "COMPOSE_BAKE": "false"}
        log("build: cold build of the prod images (no layer cache), tag bench-build")
        start = time.monotonic()
        run([*cmd, "--no-cache", "postgres", "redis", "web", "worker", "nginx"], env=env, timeout=1800)
        cold = time.monotonic() - start
        log(f"build: cold {cold:.0f}s; now a one-line change in apps/posts/views.py")
        with (web / "apps" / "posts" / "views.py").open("a") as handle:
            handle.write("# benchmark: a one-line change\n")
        start = time.monotonic()
        run([*cmd, "web", "worker", "nginx"], env=env, timeout=900)
        rebuild = time.monotonic() - start
        log(f"build: rebuild after a one-line change {rebuild:.1f}s")
    images = [f"drs/{name}:{tag}" for name in ("web", "worker", "nginx", "redis", "postgres")]
    run(["docker", "image", "rm", *images], check=False)
    return {"cold_build_s": round(cold, 1), "rebuild_one_line_s": round(rebuild, 1)}


# ---- BENCH_QUICK: the harness works ---------------------------------------------------------------
def quick_check(results: list, worker: dict) -> list[str]:
    """What makes a quick run (BENCH_QUICK=1) fail: every wrk run was answered with 2xx and
    nothing else (no 3xx, 4xx or 5xx), with no connect or write error and no read error beyond
    those wrk counts for a server closing the connection to end a complete response (runserver's
    `Connection: close`); every export finished. Never speed: wrk's "timeouts" count responses
    slower than --timeout that still arrived (reported, not failed)."""
    problems = []
    for r in results:
        run = f"{r['setup']} {r['scenario']} c={r['connections']} round {r['round']}"
        if "status_2xx" not in r:
            problems.append(f"{run}: wrk reported no status counts (BENCH_COUNT_STATUS)")
            continue
        if r["status_2xx"] == 0:
            problems.append(f"{run}: no 2xx response")
        if r["status_other"] or r["non2xx"]:
            problems.append(f"{run}: {r['status_other']} responses not 2xx ({r['non2xx']} over 399)")
        if r["connect_errors"] or r["write_errors"]:
            problems.append(f"{run}: {r['connect_errors']} connect, {r['write_errors']} write errors")
        if r["read_errors"] > r["closed"]:
            problems.append(
                f"{run}: {r['read_errors']} read errors, {r['closed']} connections closed by the server"
            )
    if not results:
        problems.append("no wrk run")
    if worker.get("small_failed") != 0 or worker.get("big_status") != "done" or not worker.get("big_rows"):
        problems.append(
            f"exports: {worker.get('small_failed')} small ones failed; the big one "
            f"{worker.get('big_status')} with {worker.get('big_rows')} rows"
        )
    return problems


# ---- report -------------------------------------------------------------------------------------
def aggregate(results: list) -> dict:
    table: dict = {}
    for row in results:
        cell = (
            table.setdefault(row["setup"], {})
            .setdefault(row["scenario"], {})
            .setdefault(str(row["connections"]), [])
        )
        cell.append(row)
    summary: dict = {}
    for setup, scenarios in table.items():
        for scenario, by_conn in scenarios.items():
            for conn, rows in by_conn.items():
                summary.setdefault(setup, {}).setdefault(scenario, {})[conn] = {
                    "rps": round(statistics.median(r["rps"] for r in rows), 1),
                    "p50_ms": round(statistics.median(r["p50_ms"] for r in rows), 1),
                    "p99_ms": round(statistics.median(r["p99_ms"] for r in rows), 1),
                    "non2xx": sum(r["non2xx"] for r in rows),
                    "socket_errors": sum(
                        r["connect_errors"] + r["read_errors"] + r["write_errors"] for r in rows
                    ),
                    "timeouts": sum(r["timeouts"] for r in rows),
                    "rounds": len(rows),
                }
    return summary


def _get(summary: dict, setup: str, scenario: str, conn: int, key: str = "rps"):
    return summary.get(setup, {}).get(scenario, {}).get(str(conn), {}).get(key)


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def targets(summary: dict, extra: dict) -> list:
    """(what, target, measured, met) for every target of the issue that this run measured."""
    c32, c64 = 32, 64
    s3 = _get(summary, "O", "S3", c32)
    rows = []

    def add(what, target, value, met):
        rows.append(
            {"what": what, "target": target, "measured": value, "met": None if value is None else bool(met)}
        )

    ra = _ratio(s3, _get(summary, "A", "S3", c32))
    rb = _ratio(s3, _get(summary, "B", "S3", c32))
    add("S3 ours / runserver (A), 32 conns", ">= 4x", ra, ra is not None and ra >= 4)
    add("S3 ours / gunicorn defaults (B), 32 conns", ">= 5x", rb, rb is not None and rb >= 5)
    p99 = _get(summary, "O", "S3", c32, "p99_ms")
    add("S3 ours p99 at 32 conns (ms)", "<= 100", p99, p99 is not None and p99 <= 100)
    cell = summary.get("O", {}).get("S3", {}).get(str(c64))
    errors = None if cell is None else cell["non2xx"] + cell["socket_errors"] + cell["timeouts"]
    add("S3 ours errors + socket timeouts at 64 conns", "0", errors, errors == 0)
    r7 = _ratio(s3, _get(summary, "O", "S7", c32))
    add("S3 / S7 (DRF vs bare view), ours, 32 conns", ">= 0.6", r7, r7 is not None and r7 >= 0.6)
    r2 = _ratio(_get(summary, "O", "S2n", c32), _get(summary, "O", "S2d", c32))
    add("S2 via nginx / direct, ours, 32 conns", ">= 0.9", r2, r2 is not None and r2 >= 0.9)
    sizes = extra.get("image_sizes_mb", {})
    tag = os.environ.get("DRS_TAG", "latest")
    base = sizes.get("debian:trixie-slim")
    add("debian:trixie-slim (MB)", "~80", base, base is not None and base <= 85)
    web = sizes.get(f"drs/web:{tag}")
    add("web image (MB)", "<= 240", web, web is not None and web <= 240)
    worker = sizes.get(f"drs/worker:{tag}")
    add(
        "worker image (MB)",
        "<= web + 5",
        worker,
        worker is not None and web is not None and worker <= web + 5,
    )
    for name, limit in (("nginx", 100), ("redis", 100), ("postgres", 400)):
        size = sizes.get(f"drs/{name}:{tag}")
        add(f"{name} image (MB)", f"<= {limit}", size, size is not None and size <= limit)
    ram = extra.get("idle_ram_mib", {}).get("total")
    add("prod stack idle RAM (MiB)", "<= 400", ram, ram is not None and ram <= 400)
    b = extra.get("builds", {})
    add(
        "rebuild after a one-line change (s)",
        "<= 15",
        b.get("rebuild_one_line_s"),
        b.get("rebuild_one_line_s") is not None and b["rebuild_one_line_s"] <= 15,
    )
    up = extra.get("up_to_healthy_s")
    add("prod-up to healthy (s)", "<= 30", up, up is not None and up <= 30)
    w = extra.get("worker", {})
    add(
        f"{w.get('small_exports', SMALL_EXPORTS)} small exports drained (s)",
        "<= 60",
        w.get("small_drained_s"),
        w.get("small_drained_s") is not None and w["small_drained_s"] <= 60,
    )
    add(
        f"export of {w.get('big_rows', 0):,} posts (s)",
        "<= 15",
        w.get("big_wall_s"),
        w.get("big_wall_s") is not None and w["big_wall_s"] <= 15,
    )
    add(
        "worker peak RSS during it (MiB)",
        "<= 200",
        w.get("worker_peak_rss_mib"),
        w.get("worker_peak_rss_mib") is not None and w["worker_peak_rss_mib"] <= 200,
    )
    return rows


def results_table(summary: dict) -> list[str]:
    lines = [
        "| scenario | conns | "
        + " | ".join(f"{SETUPS[s]['label']} req/s | p50 / p99 ms" for s in SETUP_ORDER)
        + " | errors |",
        "|---|---:|" + "---:|---:|" * len(SETUP_ORDER) + "---|",
    ]
    for name in SCENARIO_ORDER:
        for conn in CONNECTIONS:
            cells, errors = [], []
            for setup in SETUP_ORDER:
                cell = summary.get(setup, {}).get(name, {}).get(str(conn))
                if cell is None:
                    cells += ["n/a", ""]
                    continue
                cells += [f"{cell['rps']:,.0f}", f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f}"]
                bad = cell["non2xx"] + cell["socket_errors"] + cell["timeouts"]
                if bad:
                    errors.append(
                        f"{setup}: {cell['non2xx']} non-2xx, {cell['socket_errors']} socket, "
                        f"{cell['timeouts']} timeouts"
                    )
            lines.append(
                f"| {name} {SCENARIOS[name][0]} | {conn} | "
                + " | ".join(cells)
                + f" | {'; '.join(errors) or '0'} |"
            )
    return lines


def machine() -> str:
    cpus = os.cpu_count()
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 2**20
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{cpus} vCPU ({model}), {mem:.0f} GiB RAM, Linux {os.uname().release}"


def report(out: Path, data: dict) -> str:
    summary = data["summary"]
    extra = data
    lines = [
        f"# Benchmark {data['timestamp']}" + (" (BENCH_QUICK: harness check only)" if QUICK else ""),
        "",
        f"Machine: {data['machine']}; wrk (2 threads) on the same machine, in a container on the "
        "stack's own network, loading nginx:8080 and web:8000 directly. Load average at the start: "
        f"{data.get('loadavg', 'n/a')}.",
        f"Dataset: {POSTS:,} posts by {USERS} users. {DURATION}s per run after a {WARMUP}s warm-up, "
        f"{ROUNDS} round(s), set-ups alternating; median over rounds. Set-ups:",
        "",
        *(f"- **{SETUPS[s]['label']}**: {SETUPS[s]['what']}" for s in SETUP_ORDER),
        "",
        "## Requests (median req/s, p50 / p99 latency)",
        "",
        *results_table(summary),
        "",
        "## Targets",
        "",
        "| what | target | measured | |",
        "|---|---|---:|---|",
    ]
    for row in data["targets"]:
        mark = {True: "met", False: "**missed**", None: "not measured"}[row["met"]]
        lines.append(f"| {row['what']} | {row['target']} | {row['measured']} | {mark} |")
    lines += ["", "## Size and resources", "", "| image | MB |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in extra.get("image_sizes_mb", {}).items()]
    lines += ["", "| container (idle, after start) | MiB |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in extra.get("idle_ram_mib", {}).items()]
    lines += [
        "",
        f"- prod stack up to all healthy (images built, fresh volumes): {extra.get('up_to_healthy_s')} s",
        f"- seeding {POSTS:,} posts: {extra.get('seed_s')} s",
    ]
    if extra.get("builds"):
        b = extra["builds"]
        lines += [
            f"- cold build of the prod images (no layer cache): {b['cold_build_s']} s",
            f"- rebuild of web, worker, nginx after a one-line Python change: {b['rebuild_one_line_s']} s",
        ]
    if extra.get("worker"):
        w = extra["worker"]
        lines += [
            f"- {w['small_exports']} small exports queued in {w['small_queued_s']} s, all finished after "
            f"{w['small_drained_s']} s ({w['small_failed']} failed)",
            f"- one CSV export of {w['big_rows']:,} posts: {w['big_wall_s']} s from request to done "
            f"(task {w['big_task_s']} s); worker peak process RSS {w['worker_peak_rss_mib']} MiB "
            f"(idle {w['worker_idle_rss_mib']} MiB), cgroup RSS peak {w['worker_cgroup_peak_rss_mib']} MiB",
        ]
    lines += ["", "Charts: ![req/s](rps.png) ![p99](p99.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def charts(out: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, title, fname, log_scale in (
        ("rps", "requests per second (median)", "rps.png", True),
        ("p99_ms", "p99 latency, ms (median)", "p99.png", True),
    ):
        fig, axes = plt.subplots(1, len(CONNECTIONS), figsize=(6 * len(CONNECTIONS), 4.5), squeeze=False)
        for ax, conn in zip(axes[0], CONNECTIONS, strict=True):
            width = 0.8 / len(SETUP_ORDER)
            for i, setup in enumerate(SETUP_ORDER):
                values = [_get(summary, setup, s, conn, key) or 0 for s in SCENARIO_ORDER]
                positions = [x + i * width for x in range(len(SCENARIO_ORDER))]
                ax.bar(positions, values, width, label=SETUPS[setup]["label"])
            ax.set_xticks([x + width * (len(SETUP_ORDER) - 1) / 2 for x in range(len(SCENARIO_ORDER))])
            ax.set_xticklabels(SCENARIO_ORDER)
            if log_scale:
                ax.set_yscale("log")
            ax.set_title(f"{title}, {conn} connections")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=100)
        plt.close(fig)


# ---- main ---------------------------------------------------------------------------------------
def main() -> int:
    os.chdir(ROOT)
    unknown = [s for s in SETUP_ORDER if s not in SETUPS] + [s for s in SCENARIO_ORDER if s not in SCENARIOS]
    if unknown:
        fail(f"unknown set-up or scenario: {', '.join(unknown)}")
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = OUT / timestamp
    out.mkdir(parents=True, exist_ok=True)
    log(f"{'quick run (harness check)' if QUICK else 'full run'}: project {PROJECT}, results in {out}")
    data: dict = {
        "timestamp": timestamp,
        "machine": machine(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "quick": QUICK,
        "config": {
            "duration_s": DURATION,
            "warmup_s": WARMUP,
            "rounds": ROUNDS,
            "posts": POSTS,
            "users": USERS,
            "connections": CONNECTIONS,
            "setups": SETUP_ORDER,
            "scenarios": SCENARIO_ORDER,
        },
    }
    data["image_sizes_mb"] = image_sizes()
    log("image sizes (MB): " + ", ".join(f"{k} {v}" for k, v in data["image_sizes_mb"].items()))

    env_file = make_env_file()
    stack = Stack(env_file)
    stack.down()
    log("building the wrk image (bench/wrk)")
    stack.compose("build", "wrk", timeout=600)
    results: list = []
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
        for round_no in range(1, ROUNDS + 1):
            # Alternate: each round starts with the next set-up.
            shift = (round_no - 1) % len(SETUP_ORDER)
            order = SETUP_ORDER[shift:] + SETUP_ORDER[:shift]
            for key in order:
                run_setup(stack, key, seeded, results, round_no)
        data["runs"] = results
        # Back to ours for the worker measurements.
        start_setup(stack, "O")
        data["worker"] = exports(stack)
    finally:
        log("prod stack: down (volumes removed)")
        stack.down()
        env_file.unlink(missing_ok=True)
    if BUILD:
        data["builds"] = builds(make_env_file())
        (ROOT / ".cache" / "bench" / f"{PROJECT}.env").unlink(missing_ok=True)
    empty = [f"{r['setup']} {r['scenario']} c={r['connections']}" for r in results if not r["requests"]]
    if empty and not QUICK:  # quick_check() reports them, after the results are written
        fail(f"wrk completed no request in: {', '.join(empty)}")
    data["summary"] = aggregate(results)
    data["targets"] = targets(data["summary"], data)
    if QUICK:
        data["quick_check"] = quick_check(results, data.get("worker", {}))
    (out / "results.json").write_text(json.dumps(data, indent=1))
    text = report(out, data)
    charts(out, data["summary"])
    if not QUICK and os.environ.get("BENCH_OUT") is None:
        (OUT / "latest.md").write_text(
            text.replace("](rps.png)", f"]({timestamp}/rps.png)").replace(
                "](p99.png)", f"]({timestamp}/p99.png)"
            )
        )
    print()
    print(text)
    if QUICK:
        if data["quick_check"]:
            fail("the harness check (BENCH_QUICK) failed:\n  " + "\n  ".join(data["quick_check"]))
        log(f"harness check passed: {len(results)} wrk runs, each answered 2xx only")
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
