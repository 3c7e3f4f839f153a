"""The stack around the API: nginx, static files, health, headers, networks, recreation."""

import re
import subprocess
import time

import requests

from conftest import raw_request

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def test_readyz_reports_every_dependency(stack):
    """As monitors on the host read it (`make readyz`): nginx does not serve it publicly."""
    status, body = stack.readyz()
    assert status == 0, body
    assert body["status"] == "ok"
    assert {"database", "cache", "broker"} <= set(body["checks"])
    assert all(check["status"] == "ok" for check in body["checks"].values())


def test_healthz(client):
    assert client.get("/healthz").status_code == 200


def test_admin_css_served_by_nginx_with_cache_headers_and_gzip(client):
    page = client.get("/admin/login/")
    assert page.status_code == 200
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
    assert css, "admin page does not link a hashed base.css"
    r = client.get(css.group(1), headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/css")
    assert r.headers["Content-Encoding"] == "gzip"
    assert "immutable" in r.headers["Cache-Control"]
    assert "max-age=31536000" in r.headers["Cache-Control"]
    assert "body" in r.text


def test_api_docs_page_and_assets_load(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any("swagger-ui" in a for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert schema.status_code == 200
    assert "/api/posts/" in schema.json()["paths"]


def test_security_headers_on_api_static_and_errors(client):
    for path in ("/api/posts/", "/static/admin/css/base.css", "/api/no-such-thing/"):
        r = client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (path, name, r.headers.get(name))
        assert "X-Request-ID" in r.headers
        assert r.headers.get("Server") == "nginx", "server_tokens off hides the version"


def test_request_id_is_passed_through(client):
    r = client.get("/api/posts/", headers={"X-Request-ID": "e2e-trace-12345678"})
    assert r.headers["X-Request-ID"] == "e2e-trace-12345678"


def test_every_request_in_nginx_access_log_and_only_errors_in_django_log(stack, client):
    """Production: nginx logs every request (JSON, with its request id); Django, behind it,
    only errors and slow requests (DJANGO_REQUEST_LOG=errors), so a line is not written twice."""
    tag = f"e2e-log-{time.time_ns()}"
    assert client.get("/api/posts/", headers={"X-Request-ID": tag + "-ok"}).status_code == 200
    missing = client.get("/api/posts/999999999/", headers={"X-Request-ID": tag + "-404"})
    assert missing.status_code == 404

    def lines(service: str) -> list[str]:
        return stack.compose("logs", "--no-color", "--no-log-prefix", service).splitlines()

    deadline = time.monotonic() + 15  # nginx flushes its access log buffer every second
    while not any(tag + "-404" in line for line in lines("nginx")):
        assert time.monotonic() < deadline, "nginx's access log has no line for the request"
        time.sleep(0.5)
    assert any(tag + "-ok" in line and '"status":200' in line for line in lines("nginx"))
    web = [line for line in lines("web") if tag in line]
    assert [line for line in web if tag + "-404" in line and '"status":404' in line], web
    # The 200 only if it was slow (over DJANGO_REQUEST_LOG_SLOW_MS on a busy machine).
    assert all("(slow)" in line for line in web if tag + "-ok" in line), web


def test_unknown_host_is_dropped(stack, base_url, http_url):
    """README: other Host headers are dropped. nginx's default server answers them 444: the
    connection is closed without a byte of response, on both ports. The served name, on a
    connection made the same way, gets an answer: the silence is nginx's choice."""
    tag = f"/e2e-unknown-host-{time.time_ns()}"
    for url in (http_url, base_url):
        assert raw_request(url, "localhost", "/healthz").startswith(b"HTTP/1.1 "), url
        assert raw_request(url, "evil.example", tag) == b"", url
    # nginx's own record of both: status 444, the unknown host.
    deadline = time.monotonic() + 15  # hang guard: the access log is flushed every second
    while True:
        lines = [
            line
            for line in stack.compose("logs", "--no-color", "--no-log-prefix", "nginx").splitlines()
            if tag in line
        ]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(lines) == 2, lines
    assert all('"status":444' in line and '"host":"evil.example"' in line for line in lines), lines


def test_errors_are_json(client):
    r = client.get("/api/no-such-thing/")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")


def test_only_nginx_publishes_ports_and_data_services_are_internal(stack):
    for service in ("postgres", "redis", "web", "worker", "beat"):
        ids = stack.container_ids(service)
        assert ids, f"no running {service} container to check"
        for cid in ids:
            ports = stack.inspect(cid)["NetworkSettings"]["Ports"] or {}
            assert not any(ports.values()), (service, ports)
    nginx_ports = stack.inspect(stack.container_ids("nginx")[0])["NetworkSettings"]["Ports"]
    assert [b["HostIp"] for b in nginx_ports["8080/tcp"]] == ["127.0.0.1"]
    # Postgres and Redis sit only on the internal backend network: no route in from outside.
    for service in ("postgres", "redis"):
        ids = stack.container_ids(service)
        assert ids, f"no running {service} container to check"
        for cid in ids:
            networks = stack.inspect(cid)["NetworkSettings"]["Networks"]
            assert list(networks) == [f"{stack.project}_backend"], (service, list(networks))
    out = subprocess.run(
        ["docker", "network", "inspect", "-f", "{{.Internal}}", f"{stack.project}_backend"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "true"


def test_nginx_cannot_reach_postgres_or_redis(stack):
    """The same probe from nginx reaches web (so "closed" is the network's doing, not a probe
    that cannot connect anywhere) and does not reach postgres or redis."""

    def probe(host: str, port: int) -> str:
        return stack.compose(
            "exec", "-T", "nginx", "bash", "-c",
            f"timeout 3 bash -c '</dev/tcp/{host}/{port}' && echo open || echo closed",
            check=False,
        ).strip()  # fmt: skip

    assert probe("web", 8000) == "open"
    assert probe("postgres", 5432) == "closed"
    assert probe("redis", 6379) == "closed"


def test_recreated_web_container_is_found_without_restarting_nginx(stack, client):
    nginx = stack.container_ids("nginx")[0]
    nginx_started = stack.inspect(nginx)["State"]["StartedAt"]
    old_web = stack.container_ids("web")

    stack.compose("up", "-d", "--no-deps", "--force-recreate", "web")
    stack.wait_healthy("web")
    assert stack.container_ids("web") != old_web

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.get("/api/posts/").status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    ok = sum(client.get("/api/posts/").status_code == 200 for _ in range(20))
    assert ok == 20
    assert stack.inspect(nginx)["State"]["StartedAt"] == nginx_started
