"""Contract tests of drs/redis: what Celery and the operator rely on.

Each test starts its own containers on a throwaway network (no host ports), except
the tests that only read from a server with the default settings: they share one
(`server`). Clients are redis-cli in a second container of the same image, with the
password in REDISCLI_AUTH (never on a command line).
"""

from __future__ import annotations

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
    wait_healthy,
)

PASSWORD = 'broker "secret" with spaces\\'


def cli(containers: Containers, image: str, host: str, *cmd: str, password: str | None = PASSWORD):
    env = {"REDISCLI_AUTH": password} if password is not None else {}
    return containers.client(image, "redis-cli", "--no-auth-warning", "-h", host, *cmd, env=env)


def ok(containers: Containers, image: str, host: str, *cmd: str) -> list[str]:
    proc = cli(containers, image, host, *cmd)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" not in proc.stdout, proc.stdout
    assert "NOAUTH" not in proc.stdout, proc.stdout
    return proc.stdout.splitlines()


def start_server(
    containers: Containers,
    image: str,
    *cmd: str,
    env: dict[str, str] | None = None,
    opts: tuple[str, ...] = (),
) -> str:
    return containers.run(
        image, *cmd, env={"REDIS_PASSWORD": PASSWORD} if env is None else env, opts=opts
    )


@pytest.fixture(scope="module")
def server(module_containers, redis_image) -> str:
    """A server with the default settings, for the tests that only read from it."""
    name = start_server(module_containers, redis_image)
    wait_healthy(name, timeout=60)
    return name


def test_password_login_from_another_container(containers, redis_image, server):
    assert ok(containers, redis_image, server, "ping") == ["PONG"]


def test_unauthenticated_command_gets_noauth(containers, redis_image, server):
    proc = cli(containers, redis_image, server, "get", "anything", password=None)
    assert "NOAUTH" in proc.stdout + proc.stderr


def test_wrong_password_is_refused(containers, redis_image, server):
    proc = cli(containers, redis_image, server, "ping", password="wrong")
    out = proc.stdout + proc.stderr
    assert "WRONGPASS" in out
    assert "PONG" not in out


@pytest.mark.parametrize("env", [{}, {"REDIS_PASSWORD": ""}], ids=["missing", "empty"])
def test_no_password_exits_with_a_clear_message(containers, redis_image, env):
    code, log = containers.run_to_exit(redis_image, env=env, timeout=30)
    assert code != 0
    assert "REDIS_PASSWORD (or REDIS_PASSWORD_FILE) must be set" in log


def test_password_and_password_file_both_set_is_an_error(containers, redis_image):
    code, log = containers.run_to_exit(
        redis_image, env={"REDIS_PASSWORD": PASSWORD, "REDIS_PASSWORD_FILE": "/tmp/pw"}, timeout=30
    )
    assert code != 0
    assert "both REDIS_PASSWORD and REDIS_PASSWORD_FILE are set" in log


def test_password_file(containers, redis_image, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    secret.chmod(0o644)
    name = containers.create(redis_image, env={"REDIS_PASSWORD_FILE": "/tmp/pw"})
    copy_into(name, secret, "/tmp/pw")
    docker("start", name)
    wait_healthy(name, timeout=60)
    proc = cli(containers, redis_image, name, "ping", password="from-a-file")
    assert proc.stdout.strip() == "PONG"


def test_broker_settings(containers, redis_image):
    name = start_server(
        containers, redis_image, env={"REDIS_PASSWORD": PASSWORD, "REDIS_MAXMEMORY": "64mb"}
    )
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "config", "get", "maxmemory-policy") == [
        "maxmemory-policy",
        "noeviction",
    ]
    assert ok(containers, redis_image, name, "config", "get", "maxmemory") == [
        "maxmemory",
        str(64 * 1024 * 1024),
    ]
    assert ok(containers, redis_image, name, "config", "get", "appendonly") == ["appendonly", "yes"]
    assert ok(containers, redis_image, name, "config", "get", "appendfsync") == [
        "appendfsync",
        "everysec",
    ]


def test_default_maxmemory_and_arguments_pass_through(containers, redis_image):
    name = start_server(containers, redis_image, "redis-server", "--slowlog-max-len", "256")
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "config", "get", "maxmemory") == [
        "maxmemory",
        str(128 * 1024 * 1024),
    ]
    assert ok(containers, redis_image, name, "config", "get", "slowlog-max-len") == [
        "slowlog-max-len",
        "256",
    ]


def test_data_survives_a_restart_and_files_are_private(containers, redis_image):
    name = start_server(containers, redis_image, opts=("-v", f"{containers.volume()}:/data"))
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "set", "celery-task", "queued") == ["OK"]
    assert inspect(name)["Config"]["StopSignal"] == "SIGTERM"
    docker("restart", "-t", "30", name, timeout=60)
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "get", "celery-task") == ["queued"]
    modes = docker(
        "exec", name, "find", "/data", "-type", "f", "-printf", "%m %p\n"
    ).stdout.splitlines()
    assert modes, "no data files in /data"
    assert all(line.startswith("600 ") for line in modes), modes


def test_runs_as_non_root_with_redis_server_as_pid_1(server):
    assert pid1(server) == ("redis-server", 999, 999)
    assert docker("exec", server, "id", "-un").stdout.strip() == "redis"


def test_password_reaches_redis_server_on_standard_input_only(containers, redis_image, tmp_path):
    """What the entrypoint execs as redis-server gets the password on its standard input, and
    neither in its arguments nor in its environment. Seen by a stand-in redis-server first on
    PATH that prints all three: the real one overwrites /proc/1/cmdline and /proc/1/environ with
    its process title, so reading those could never find the password."""
    fake = tmp_path / "redis-server"
    fake.write_text('#!/bin/sh\necho "ARGS: $*"\necho "ENV:"; env\necho "STDIN:"; cat\n')
    fake.chmod(0o755)
    tmp_path.chmod(0o755)
    name = containers.create(
        redis_image,
        env={"REDIS_PASSWORD": PASSWORD, "PATH": "/opt/fake:/usr/local/bin:/usr/bin:/bin"},
    )
    copy_into(name, tmp_path, "/opt/fake")
    docker("start", name)
    code = wait_exit(name, 60)
    out = logs(name)
    assert code == 0, f"the container exited {code}: {out}"
    assert "STDIN:" in out, out
    seen, stdin = out.split("STDIN:", 1)
    assert "ARGS: " in seen, seen  # the stand-in ran
    assert "PATH=/opt/fake:" in seen, seen
    assert PASSWORD not in seen
    assert 'requirepass "broker \\"secret\\" with spaces\\\\"' in stdin, stdin


def test_health_check_needs_the_right_password(server):
    assert docker("exec", server, "docker-healthcheck", check=False).returncode == 0
    wrong = docker("exec", "-e", "REDIS_PASSWORD=wrong", server, "docker-healthcheck", check=False)
    assert wrong.returncode != 0


def test_hardened_read_only_no_capabilities(containers, redis_image):
    name = start_server(
        containers, redis_image, opts=(*HARDENED, "-v", f"{containers.volume()}:/data")
    )
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "set", "k", "v") == ["OK"]
    assert ok(containers, redis_image, name, "bgsave") == ["Background saving started"]
    assert pid1(name) == ("redis-server", 999, 999)
    docker("restart", "-t", "30", name, timeout=60)
    wait_healthy(name, timeout=60)
    assert ok(containers, redis_image, name, "get", "k") == ["v"]
