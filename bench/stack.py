"""The bench stack: the prod compose files plus compose/bench.yml under the bench's own project,
its throw-away env file, and waiting for it to answer."""

from __future__ import annotations

import http.client
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.config import HOST, PROJECT, ROOT
from bench.console import fail, log, run


def compose(
    project: str,
    env_file: Path,
    *args: str,
    stack: str = "bench",
    extra_files: tuple[str, ...] = (),
    tag: str | None = None,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    """Every docker compose call of the harness, through scripts/compose.sh (the project's one
    way to call compose): STACK's files plus `extra_files`, as project `project` with `env_file`,
    images tagged `tag` (default: $DRS_TAG)."""
    cmd = [
        str(ROOT / "scripts" / "compose.sh"), "--project", project, "--env-file", str(env_file),
        *(["--tag", tag] if tag else []),
        *(arg for name in extra_files for arg in ("-f", name)),
        stack, *args,
    ]  # fmt: skip
    return run(cmd, env=env, check=check, timeout=timeout, input_text=input_text)


# compose/bench.yml's services that are not part of the prod stack (wrk, nginx-stock).
PROFILE = "bench-tools"


class Stack:
    """The bench stack: docker compose with the prod files and compose/bench.yml."""

    def __init__(self, env_file: Path):
        self.env_file = env_file
        self.setup_env = {"BENCH_WEB_COMMAND": "gunicorn", "BENCH_CONN_MAX_AGE": "60", "BENCH_METRICS": "1"}

    def compose(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        input_text: str | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        return compose(
            PROJECT,
            self.env_file,
            *args,
            env={**self.setup_env, **(env or {})},
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
        ids = self.compose("ps", "-q", service, env={"COMPOSE_PROFILES": PROFILE}).stdout.split()
        if not ids:
            fail(f"no running {service} container")
        return ids[0]

    def address(self, service: str, port: int) -> str:
        """http://IP:port of `service` on the stack's frontend network (where wrk runs)."""
        network = f"{PROJECT}_frontend"
        ip = run(
            ["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
             self.container(service)]
        ).stdout.strip()  # fmt: skip
        if not ip:
            fail(f"{service} has no address on {network}")
        return f"http://{ip}:{port}"

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
            "python", "manage.py", "shell", "-c", code,
            timeout=timeout,
        ).stdout.strip()  # fmt: skip

    def down(self) -> None:
        # The bench-tools profile too: its nginx-stock container runs while the stack does.
        self.compose(
            "down", "-v", "--remove-orphans", check=False, timeout=300, env={"COMPOSE_PROFILES": PROFILE}
        )

    def start_stock_nginx(self) -> None:
        """The baseline N (bench/nginx-stock.conf), beside the stack's nginx."""
        self.compose("up", "-d", "--no-deps", "nginx-stock", env={"COMPOSE_PROFILES": PROFILE})


def make_env_file() -> Path:
    """A fresh prod env file for the bench stack (scripts/prod-env.sh), edited for a benchmark."""
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


def http_ok(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Host": HOST})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_status(url: str) -> int | None:
    """The status of one GET, redirects not followed (None: no answer)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers={"Host": HOST}
        )
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


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
