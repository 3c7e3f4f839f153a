"""Contract tests of drs/postgres: what the web app and the operator rely on.

Each test starts its own containers on a throwaway network (no host ports), except
the tests that only read from a server with the default settings: they share one
(`server`). Tests talk to the server from a second container of the same image, over TCP.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
from imagetools import (
    HARDENED,
    Containers,
    copy_into,
    docker,
    inspect,
    logs,
    pid1,
    wait_exit,
    wait_for_log,
    wait_healthy,
)

PASSWORD = "correct horse battery staple"
INIT_DIR = "/docker-entrypoint-initdb.d"
REFUSAL = "an earlier initialisation of this data volume failed or was interrupted"


def psql(
    containers: Containers,
    image: str,
    host: str,
    sql: str,
    *,
    user: str = "postgres",
    password: str = PASSWORD,
    db: str = "postgres",
):
    """Run SQL over TCP from another container, insisting on SCRAM authentication."""
    return containers.client(
        image,
        "psql",
        "-h",
        host,
        "-U",
        user,
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-tAX",
        "-c",
        sql,
        env={"PGPASSWORD": password, "PGREQUIREAUTH": "scram-sha-256", "PGCONNECT_TIMEOUT": "5"},
    )


def query(containers: Containers, image: str, host: str, sql: str, **kwargs) -> str:
    proc = psql(containers, image, host, sql, **kwargs)
    assert proc.returncode == 0, f"psql failed: {proc.stderr}"
    return proc.stdout.strip()


def start_server(
    containers: Containers,
    image: str,
    *cmd: str,
    env: dict[str, str] | None = None,
    opts: tuple[str, ...] = (),
    init_files: Path | None = None,
) -> str:
    name = containers.create(
        image, *cmd, env={"POSTGRES_PASSWORD": PASSWORD} if env is None else env, opts=opts
    )
    if init_files is not None:
        copy_into(name, init_files, INIT_DIR)
    docker("start", name)
    return name


@pytest.fixture(scope="module")
def server(module_containers, postgres_image) -> str:
    """A server with the default settings, for the tests that only read from it."""
    name = start_server(module_containers, postgres_image)
    wait_healthy(name)
    return name


def test_scram_password_login_over_tcp_from_another_container(containers, postgres_image, server):
    assert query(containers, postgres_image, server, "SELECT current_user") == "postgres"
    stored = query(
        containers,
        postgres_image,
        server,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
    )
    assert stored.startswith("SCRAM-SHA-256$")


def test_wrong_password_is_refused(containers, postgres_image, server):
    proc = psql(containers, postgres_image, server, "SELECT 1", password="not the password")
    assert proc.returncode != 0
    assert "password authentication failed" in proc.stderr


@pytest.mark.parametrize("env", [{}, {"POSTGRES_PASSWORD": ""}], ids=["missing", "empty"])
def test_no_password_exits_with_a_clear_message(containers, postgres_image, env):
    code, log = containers.run_to_exit(
        postgres_image, env=env, opts=("-v", f"{containers.volume()}:/var/lib/postgresql/data")
    )
    assert code != 0
    assert "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) must be set" in log


def test_password_and_password_file_both_set_is_an_error(containers, postgres_image):
    code, log = containers.run_to_exit(
        postgres_image, env={"POSTGRES_PASSWORD": PASSWORD, "POSTGRES_PASSWORD_FILE": "/tmp/pw"}
    )
    assert code != 0
    assert "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" in log


def test_file_variants_and_custom_user_and_database(containers, postgres_image, tmp_path):
    for var, value in {"pw": PASSWORD, "user": "app", "db": "appdb"}.items():
        (tmp_path / var).write_text(value + "\n")
        (tmp_path / var).chmod(0o644)
    name = containers.create(
        postgres_image,
        env={
            "POSTGRES_PASSWORD_FILE": "/tmp/pw",
            "POSTGRES_USER_FILE": "/tmp/user",
            "POSTGRES_DB_FILE": "/tmp/db",
        },
    )
    for var in ("pw", "user", "db"):
        copy_into(name, tmp_path / var, f"/tmp/{var}")
    docker("start", name)
    wait_healthy(name)
    out = query(
        containers,
        postgres_image,
        name,
        "SELECT current_user, current_database(), rolsuper FROM pg_roles "
        "WHERE rolname = current_user",
        user="app",
        db="appdb",
    )
    # POSTGRES_USER other than postgres: an ordinary role owning its database
    # (test_postgres_roles.py)
    assert out == "app|appdb|f"


def test_init_scripts_run_once_in_order(containers, postgres_image, tmp_path):
    init = tmp_path / "init"
    init.mkdir()
    (init / "01-schema.sql").write_text(
        "CREATE TABLE init_log (n serial PRIMARY KEY, step text);\n"
        "INSERT INTO init_log (step) VALUES ('sql');\n"
    )
    (init / "02-sourced.sh").write_text(
        "psql -v ON_ERROR_STOP=1 -c \"INSERT INTO init_log (step) VALUES ('sh-sourced')\"\n"
    )
    (init / "03-executed.sh").write_text(
        "#!/bin/bash\nset -e\n"
        "psql -v ON_ERROR_STOP=1 -c \"INSERT INTO init_log (step) VALUES ('sh-executed')\"\n"
    )
    (init / "04-data.sql.gz").write_bytes(
        gzip.compress(b"INSERT INTO init_log (step) VALUES ('sql.gz');\n")
    )
    for f in init.iterdir():
        f.chmod(0o644)
    (init / "03-executed.sh").chmod(0o755)

    volume = containers.volume()
    opts = ("-v", f"{volume}:/var/lib/postgresql/data")
    name = start_server(containers, postgres_image, opts=opts, init_files=init)
    wait_healthy(name)
    expected = "sql\nsh-sourced\nsh-executed\nsql.gz"
    assert (
        query(containers, postgres_image, name, "SELECT step FROM init_log ORDER BY n") == expected
    )

    # A new container on the same volume: the scripts must not run again.
    docker("stop", "-t", "60", name, timeout=90)
    again = start_server(containers, postgres_image, opts=opts, init_files=init)
    wait_healthy(again)
    assert (
        query(containers, postgres_image, again, "SELECT step FROM init_log ORDER BY n") == expected
    )
    assert INIT_DIR not in logs(again)
    assert "skipping initialisation" in logs(again)


def test_failing_init_script_fails_the_container_and_the_volume_is_refused_later(
    containers, postgres_image, tmp_path
):
    init = tmp_path / "init"
    init.mkdir()
    (init / "01-ok.sql").write_text("CREATE TABLE first_half (id int);\n")
    (init / "02-broken.sql").write_text("SELECT no_such_function();\n")
    (init / "03-never.sql").write_text("CREATE TABLE second_half (id int);\n")
    for f in init.iterdir():
        f.chmod(0o644)
    volume = containers.volume()
    opts = ("-v", f"{volume}:/var/lib/postgresql/data")

    name = start_server(containers, postgres_image, opts=opts, init_files=init)
    assert wait_exit(name, 90) != 0
    assert "database initialisation failed" in logs(name)

    # Restart of the same container (what restart: unless-stopped does) ...
    docker("start", name)
    assert wait_exit(name, 60) != 0
    assert REFUSAL in logs(name)
    # ... and a fresh container on the same volume, without the broken script.
    again = start_server(containers, postgres_image, opts=opts)
    assert wait_exit(again, 60) != 0
    log = logs(again)
    assert REFUSAL in log
    assert "ready to accept connections" not in log


def test_postgres_is_pid_1_as_the_postgres_user(server):
    assert pid1(server) == ("postgres", 999, 999)
    assert docker("exec", server, "id", "-un").stdout.strip() == "postgres"
    cmdline = docker("exec", server, "cat", "/proc/1/cmdline").stdout
    assert cmdline.startswith("postgres"), cmdline
    assert PASSWORD not in cmdline


def test_stop_is_a_clean_shutdown_without_crash_recovery(containers, postgres_image):
    name = start_server(
        containers, postgres_image, opts=("-v", f"{containers.volume()}:/var/lib/postgresql/data")
    )
    wait_healthy(name)
    assert inspect(name)["Config"]["StopSignal"] == "SIGINT"
    docker("stop", "-t", "60", name, timeout=90)
    assert inspect(name)["State"]["ExitCode"] == 0
    assert "database system is shut down" in logs(name)

    since = docker("inspect", "-f", "{{.State.FinishedAt}}", name).stdout.strip()
    docker("start", name)
    wait_healthy(name)
    second = logs(name, since=since)
    assert "database system was shut down at" in second
    assert "not properly shut down" not in second
    assert "automatic recovery in progress" not in second


def test_healthy_only_after_initialisation(containers, postgres_image, tmp_path):
    init = tmp_path / "init"
    init.mkdir()
    # Long enough for the checks below (Docker's health checks run every second here).
    (init / "01-slow.sh").write_text("sleep 10\n")
    (init / "01-slow.sh").chmod(0o644)
    name = start_server(containers, postgres_image, init_files=init)
    wait_for_log(name, "sourcing /docker-entrypoint-initdb.d/01-slow.sh")
    # the temporary server is up (socket only), yet the health check says no
    assert docker("exec", name, "pg_isready", "-q").returncode == 0
    assert docker("exec", name, "docker-healthcheck", check=False).returncode != 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not inspect(name)["State"]["Health"]["Log"]:
        time.sleep(0.5)
    health = inspect(name)["State"]["Health"]
    assert health["Log"], "no health check ran during initialisation"
    assert health["Status"] != "healthy"
    assert all(entry["ExitCode"] != 0 for entry in health["Log"])
    assert "initialisation complete" not in logs(name)

    wait_healthy(name, timeout=60)
    assert "initialisation complete" in logs(name)


def test_server_arguments_pass_through_and_config_is_the_image_one(containers, postgres_image):
    name = start_server(containers, postgres_image, "postgres", "-c", "work_mem=8MB")
    wait_healthy(name)
    out = query(
        containers,
        postgres_image,
        name,
        "SELECT current_setting('work_mem'), current_setting('config_file'), "
        "current_setting('random_page_cost'), current_setting('jit'), "
        "current_setting('password_encryption')",
    )
    assert out == "8MB|/etc/postgresql/postgresql.conf|1.1|off|scram-sha-256"


def test_jit_left_out_cleanly(containers, postgres_image, server):
    out = query(
        containers,
        postgres_image,
        server,
        "SET jit = on; SET jit_above_cost = 0; "
        "SELECT pg_jit_available(), sum(g) FROM generate_series(1, 1000) g",
    )
    assert out.splitlines()[-1] == "f|500500"


def test_arbitrary_command_is_executed(containers, postgres_image):
    proc = containers.client(postgres_image, "psql", "--version")
    assert proc.returncode == 0
    assert "psql (PostgreSQL) 17." in proc.stdout


def test_hardened_read_only_no_capabilities(containers, postgres_image):
    opts = (
        *HARDENED,
        "--tmpfs",
        "/var/run/postgresql",
        "-v",
        f"{containers.volume()}:/var/lib/postgresql/data",
    )
    name = start_server(containers, postgres_image, opts=opts)
    wait_healthy(name)
    query(containers, postgres_image, name, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    assert query(containers, postgres_image, name, "SELECT count(*) FROM t") == "1"
    assert pid1(name) == ("postgres", 999, 999)
    docker("stop", "-t", "60", name, timeout=90)
    assert inspect(name)["State"]["ExitCode"] == 0


def test_started_as_root_fixes_ownership_and_drops_to_postgres(containers, postgres_image):
    # e.g. a root-owned bind mount: --user root lets the entrypoint chown it first
    opts = ("--user", "root", "--tmpfs", "/var/lib/postgresql/data:mode=0755")
    name = start_server(containers, postgres_image, opts=opts)
    wait_healthy(name)
    assert pid1(name) == ("postgres", 999, 999)
    assert query(containers, postgres_image, name, "SELECT 1") == "1"
