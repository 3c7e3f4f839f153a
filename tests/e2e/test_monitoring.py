"""Metrics and alerts: the opt-in profile `monitoring` (switched on in the test stack's env file by
scripts/test.sh; docs/observability.md, "Metrics and alerts"). Every scrape target is up in
Prometheus, the app's metrics count across gunicorn's and Celery's processes and are never served
through nginx, and a stopped worker with exports queued raises QueueBacklog in Alertmanager."""

import json
import re
import subprocess
import time

import pytest
import yaml

EXPECTED_JOBS = {
    "prometheus", "alertmanager", "web", "worker", "nginx", "postgres", "redis", "node",
    "blackbox", "tls",
}  # fmt: skip
# Prometheus scrapes and evaluates every 15 s (services/monitoring/prometheus/prometheus.yml).
SCRAPE = 15
# On a tmpfs in the prometheus container.
TEST_RULES = "/tmp/prometheus/rules/e2e.yml"


def exec_out(stack, service: str, *cmd: str, stdin: str | None = None) -> str:
    ids = stack.container_ids(service)
    assert ids, f"no running {service} container"
    done = subprocess.run(
        ["docker", "exec", "-i", ids[0], *cmd],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(cmd)} in {service}: {done.stderr}{done.stdout}"
    return done.stdout


def query(stack, expr: str) -> list[dict]:
    """An instant query through Prometheus's HTTP API (promtool, inside its container)."""
    out = exec_out(
        stack, "prometheus", "promtool", "query", "instant", "-o", "json",
        "http://127.0.0.1:9090", expr,
    )  # fmt: skip
    return json.loads(out or "[]")


def values(stack, expr: str) -> dict[str, float]:
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
        for r in query(stack, expr)
    }


def app_metrics(stack, service: str) -> dict[str, float]:
    """The samples a scrape of SERVICE's metrics port returns (asked inside its container)."""
    text = exec_out(
        stack, service, "python3", "-c",
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:8001/metrics', timeout=5).read().decode())",
    )  # fmt: skip
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[canonical(series)] = float(value)
    return samples


def canonical(series: str) -> str:
    """A series as name{label="value",...} with its labels sorted by name."""
    name, _, labels = series.partition("{")
    pairs = sorted(re.findall(r'(\w+)="([^"]*)"', labels))
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else "")


def eventually(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(2)


def test_every_target_is_up(stack):
    def all_up():
        up = {r["metric"]["job"]: float(r["value"][1]) for r in query(stack, "up")}
        return up if set(up) >= EXPECTED_JOBS and all(v == 1 for v in up.values()) else None

    up = eventually(all_up, 8 * SCRAPE, "every job scraped and up")
    assert set(up) >= EXPECTED_JOBS
    # The exporters reach what they watch, and each alert's inputs exist.
    for expr in [
        "pg_up", "redis_up", "nginx_up", "probe_success",
        "pg_settings_max_connections", "redis_memory_max_bytes",
        'node_filesystem_avail_bytes{mountpoint="/volumes/media"}',
        'node_filesystem_avail_bytes{mountpoint="/volumes/postgres-data"}',
        "probe_ssl_earliest_cert_expiry", "drs_backup_last_run_ok", "drs_backup_interval_seconds",
        "drs_celery_queue_length", 'process_start_time_seconds{job="web"}',
        "pg_postmaster_start_time_seconds", "redis_start_time_seconds",
        "nginx_connections_accepted",
    ]:  # fmt: skip
        got = values(stack, expr)
        assert got, f"no series for {expr}"
        if expr in {"pg_up", "redis_up", "nginx_up", "probe_success"}:
            assert all(v == 1 for v in got.values()), (expr, got)
    # The certificate of the run's own CA is valid for a while yet.
    assert min(values(stack, "probe_ssl_earliest_cert_expiry - time()").values()) > 86400


def test_app_metrics_count_every_request_across_gunicorn_workers(stack, make_user):
    user = make_user("metrics")
    key = 'drs_http_responses_total{method="GET",status="200",view="post-list"}'
    before = app_metrics(stack, "web").get(key, 0)
    for _ in range(30):
        assert user.get("/api/posts/").status_code == 200
    after = app_metrics(stack, "web")
    # Two gunicorn workers answer (WEB_CONCURRENCY): each request counted once, whichever did.
    assert after[key] - before == 30
    assert after['drs_http_request_duration_seconds_count{method="GET",view="post-list"}'] >= 30


def test_task_metrics_count_a_finished_export(stack, make_user):
    user = make_user("metrics-task")
    key = 'drs_celery_tasks_total{state="SUCCESS",task="apps.exports.tasks.run_export"}'
    before = app_metrics(stack, "worker").get(key, 0)
    export = user.post("/api/exports/", json={"format": "csv"}).json()
    eventually(lambda: export_status(user, export["id"]) == "done", 90, "export")
    after = eventually(
        lambda: (m := app_metrics(stack, "worker")).get(key, 0) > before and m, 30, "task counted"
    )
    assert after[key] - before == 1


def test_metrics_are_not_served_through_nginx(client, stack):
    for host in (None, "localhost:8001"):
        headers = {"Host": host} if host else {}
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 404, (host, r.status_code)
        assert "drs_http" not in r.text
        assert "process_start_time" not in r.text
    # On the metrics port itself only /metrics answers.
    status = exec_out(
        stack, "web", "python3", "-c",
        "import urllib.request as u, urllib.error as e\n"
        "try: u.urlopen('http://127.0.0.1:8001/api/', timeout=5); print(200)\n"
        "except e.HTTPError as x: print(x.code)",
    )  # fmt: skip
    assert status.strip() == "404"


def test_a_stopped_worker_with_exports_queued_fires_queue_backlog(stack, make_user):
    """The shipped QueueBacklog rule (10 minutes over 50 waiting tasks) with a test-only copy:
    the same expression with threshold 0 and no `for:`, added to Prometheus's rules on its tmpfs
    and loaded with SIGHUP; removed again afterwards. Everything else is the real path: worker
    stopped, exports queued through nginx, the queue read from the broker by web's metrics,
    Prometheus's evaluation, Alertmanager's API."""
    rules_file = "/etc/prometheus/rules/alerts.yml"
    shipped = yaml.safe_load(exec_out(stack, "prometheus", "cat", rules_file))
    rule = next(
        r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == "QueueBacklog"
    )
    expr, threshold = rule["expr"].rsplit(">", 1)
    assert threshold.strip() == "50", rule
    test_rule = {
        **rule,
        "expr": f"{expr}> 0",
        "for": "0s",
        "labels": {**rule["labels"], "e2e": "threshold 0, for 0s"},
    }
    user = make_user("backlog")
    started = time.monotonic()
    exec_out(
        stack, "prometheus", "sh", "-c", f"cat > {TEST_RULES}",
        stdin=yaml.safe_dump({"groups": [{"name": "e2e", "rules": [test_rule]}]}),
    )  # fmt: skip
    stack.compose("kill", "-s", "SIGHUP", "prometheus")
    stack.compose("stop", "worker")
    ids = []
    try:
        for _ in range(2):
            r = user.post("/api/exports/", json={"format": "csv"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])

        def in_alertmanager():
            out = exec_out(
                stack, "alertmanager", "amtool", "alert", "query", "-o", "json",
                "--alertmanager.url=http://127.0.0.1:9093", "alertname=QueueBacklog",
            )  # fmt: skip
            return [a for a in json.loads(out or "[]") if a["labels"].get("e2e")]

        # Two intervals (scrape, evaluation) are enough; the rest is a guard for a loaded machine.
        alerts = eventually(in_alertmanager, 12 * SCRAPE, "QueueBacklog in Alertmanager")
        assert alerts[0]["labels"]["queue"] == "celery"
        assert alerts[0]["labels"]["severity"] == "page"
        assert alerts[0]["status"]["state"] == "active"
        waiting = values(stack, 'drs_celery_queue_length{queue="celery"}')
        assert max(waiting.values()) >= 2, waiting
        assert values(stack, 'drs_celery_oldest_task_age_seconds{queue="celery"}')
        print(f"QueueBacklog reached Alertmanager {time.monotonic() - started:.0f}s after the stop")
    finally:
        stack.compose("start", "worker")
        exec_out(stack, "prometheus", "rm", "-f", TEST_RULES)
        stack.compose("kill", "-s", "SIGHUP", "prometheus")
        stack.wait_healthy("worker", timeout=120)
    for export_id in ids:
        eventually(
            lambda e=export_id: export_status(user, e) == "done",
            60, f"export {export_id} done after the worker's return",
        )  # fmt: skip


def export_status(user, export_id: str) -> str:
    """The export's status, or the HTTP status and body of an answer that is not 200."""
    r = user.get(f"/api/exports/{export_id}/")
    return r.json()["status"] if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
