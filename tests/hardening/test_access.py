"""Postgres and Redis: wrong passwords refused, unreachable from another network, SCRAM."""

import subprocess
import uuid

import pytest


def python_in_web(stack, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "exec", stack.container_ids("web")[0], "python", "-c", code],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_postgres_refuses_a_wrong_password_and_accepts_the_right_one(stack):
    env = stack.env_values()
    user, db = env.get("POSTGRES_USER", "app"), env.get("POSTGRES_DB", "app")
    connect = (
        "import psycopg2; psycopg2.connect(host='postgres', user={u!r}, password={p!r}, "
        "dbname={d!r}, connect_timeout=5).close(); print('connected')"
    )
    wrong = python_in_web(stack, connect.format(u=user, p="wrong-" + uuid.uuid4().hex, d=db))
    assert wrong.returncode != 0, f"a wrong password connected: {wrong.stdout}{wrong.stderr}"
    assert "password authentication failed" in wrong.stderr, wrong.stderr
    right = python_in_web(stack, connect.format(u=user, p=env["POSTGRES_PASSWORD"], d=db))
    assert "connected" in right.stdout, right.stderr


def test_redis_refuses_no_password_and_a_wrong_one(stack):
    env = stack.env_values()
    ping = "import redis; print(redis.Redis(host='redis', password={p!r}, socket_timeout=5).ping())"
    none = python_in_web(stack, ping.format(p=None))
    assert none.returncode != 0, f"no password was accepted: {none.stdout}{none.stderr}"
    assert "AuthenticationError" in none.stderr, none.stderr
    wrong = python_in_web(stack, ping.format(p="wrong-" + uuid.uuid4().hex))
    assert wrong.returncode != 0, f"a wrong password was accepted: {wrong.stdout}{wrong.stderr}"
    assert "AuthenticationError" in wrong.stderr, wrong.stderr
    right = python_in_web(stack, ping.format(p=env["REDIS_PASSWORD"]))
    assert "True" in right.stdout, right.stderr


def test_postgres_uses_scram_sha_256(stack):
    env = stack.env_values()
    user, db = env.get("POSTGRES_USER", "app"), env.get("POSTGRES_DB", "app")
    # The app's login over TCP, refusing anything weaker than SCRAM.
    login = stack.compose(
        "exec", "-T", "-e", f"PGPASSWORD={env['POSTGRES_PASSWORD']}",
        "-e", "PGREQUIREAUTH=scram-sha-256",
        "postgres", "psql", "-h", "127.0.0.1", "-U", user, "-d", db, "-Atc", "SELECT current_user",
    ).split()  # fmt: skip
    assert login == [user], login
    # The catalogs (pg_authid, pg_hba_file_rules) are the superuser's: over the socket, inside.
    sql = (
        "SHOW password_encryption; "
        "SELECT string_agg(DISTINCT auth_method, ',' ORDER BY auth_method) FROM pg_hba_file_rules "
        "WHERE type LIKE 'host%'; "
        f"SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = '{user}';"
    )
    out = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", "postgres", "-d", db, "-Atc", sql,
    ).split()  # fmt: skip
    # reject: the superuser's line (services/postgres/README.md, "Roles")
    assert out == ["scram-sha-256", "reject,scram-sha-256", "SCRAM-SHA-256$"], out


def probe_from(stack, network: str, service: str, port: int) -> subprocess.CompletedProcess:
    """From a fresh container of the web image on `network`: connect to the service by name and
    by its backend address; prints REACHED or refused per target."""
    target = stack.inspect(stack.container_ids(service)[0])
    address = target["NetworkSettings"]["Networks"][f"{stack.project}_backend"]["IPAddress"]
    probe = (
        "import socket\n"
        f"for host in ({service!r}, {address!r}):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=3).close()\n"
        "        print('REACHED', host)\n"
        "    except OSError as exc:\n"
        "        print('refused', host, type(exc).__name__)\n"
    )
    image = stack.inspect(stack.container_ids("web")[0])["Config"]["Image"]
    return subprocess.run(
        ["docker", "run", "--rm", "--network", network, "--entrypoint", "python", image,
         "-c", probe],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(("service", "port"), [("postgres", 5432), ("redis", 6379)])
def test_unreachable_from_a_container_on_another_network(stack, service, port):
    """The probe reaches the service from the backend network (so it can succeed), and neither
    its name nor its address from a network of its own."""
    inside = probe_from(stack, f"{stack.project}_backend", service, port)
    assert inside.stdout.count("REACHED") == 2, inside.stdout + inside.stderr
    network = f"{stack.project}-probe-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "network", "create", network], check=True, capture_output=True)
    try:
        outside = probe_from(stack, network, service, port)
    finally:
        subprocess.run(["docker", "network", "rm", network], check=False, capture_output=True)
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.count("refused") == 2, outside.stdout + outside.stderr
