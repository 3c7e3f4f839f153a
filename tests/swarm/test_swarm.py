"""The prod stack on a single-node Docker Swarm (docs/swarm.md): deployed from the same compose
files, served through nginx, with secrets as Docker secrets; web updated, rolled back by its
health check, scaled 1 -> 4 -> 1, and the Django secret key rotated, each under a read/write
load through nginx with 0 failed requests (the Load of tests/deploy/deploylib.py: every request
sent once, the only retry one that provably never reached nginx)."""

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from swarmlib import (
    SwarmStack,
    User,
    build_test_image,
    docker,
    run_load,
    seeded_user,
    smoke_write_read_export,
    swarm_state,
    task_hardening_problems,
)

from conftest import ROOT, Client, record_timing

THREADS = 4
APP_SERVICES = {"postgres", "redis", "web", "worker", "beat", "backup", "nginx"}
# Every value the env file may hold that is a secret (scripts/swarm.sh, SECRETS + OPTIONAL_SECRETS).
ALL_SECRET_VARS = (
    "DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "POSTGRES_BACKUP_PASSWORD",
    "FLOWER_PASSWORD", "OFFSITE_PASSWORD", "OFFSITE_S3_SECRET_ACCESS_KEY", "OFFSITE_SSH_KEY",
    "SENTRY_DSN", "EMAIL_URL", "ALERTMANAGER_WEBHOOK_URL",
)  # fmt: skip


@pytest.fixture(scope="session")
def stack():
    name, env_file = os.environ.get("SWARM_STACK"), os.environ.get("SWARM_ENV_FILE")
    if not name or not env_file:
        pytest.fail(
            "SWARM_STACK/SWARM_ENV_FILE are not set: run these tests with `make test-swarm`"
        )
    if swarm_state() != "inactive":
        pytest.fail("this Docker is already in a swarm: the suite makes and leaves its own")
    tag = os.environ.get("DRS_TAG", "latest")
    s = SwarmStack(name, env_file, tag)
    try:
        started = time.time()
        init = s.swarm("init", timeout=120)
        assert init.returncode == 0, init.stderr
        docker("network", "create", "--driver", "overlay", "--attachable", s.client_network)
        deploy = s.swarm("deploy")
        Path(os.environ.get("TEST_RESULTS", "/tmp"), "swarm-deploy.log").write_text(
            deploy.stdout + deploy.stderr
        )
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        record_timing(f"swarm: init + first deploy {time.time() - started:.0f}s")
        yield s
    finally:
        try:
            results = Path(os.environ.get("TEST_RESULTS", "/tmp"))
            # With timestamps: what happened when, for a failure. Each task's container's own log
            # (one node: all are here): `docker service logs` can hang on Engine 20.10 once a
            # task's log file has rotated.
            for service in ("nginx", "web"):
                label = f"label=com.docker.swarm.service.name={s.service(service)}"
                with (results / f"swarm-{service}.log").open("w") as out:
                    for cid in docker("ps", "-aq", "--filter", label, check=False).split():
                        out.write(f"== container {cid}\n")
                        out.flush()
                        subprocess.run(
                            ["docker", "logs", "--timestamps", cid], stdout=out,
                            stderr=subprocess.STDOUT, timeout=120, check=False,
                        )  # fmt: skip
        finally:
            s.teardown()
            docker("swarm", "leave", "--force", check=False)
            docker("network", "rm", "docker_gwbridge", check=False)  # what swarm init made
            for suffix in ("v2", "unhealthy"):
                docker("image", "rm", f"drs/web:{tag}-{suffix}", check=False)


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    """The suite's client is the relay on the client network (nginx publishes no port on the
    node): https://localhost:PORT, PORT on 127.0.0.1."""
    return f"https://localhost:{stack.start_relay()}"


@pytest.fixture(scope="session")
def images(stack) -> dict[str, str]:
    """web images for the updates: v2 (the same code, a new image) and one whose health check
    always fails."""
    base = f"drs/web:{stack.tag}"
    v2, bad = f"{base}-v2", f"{base}-unhealthy"
    build_test_image(v2, f"FROM {base}\nLABEL drs.swarm-test=v2\n")
    build_test_image(
        bad,
        f"FROM {base}\nUSER root\n"
        "RUN printf '#!/bin/sh\\nexit 1\\n' > /usr/local/bin/docker-healthcheck\n"
        "USER 10001:10001\n",
    )
    return {"base": base, "v2": v2, "bad": bad}


@dataclass
class Users:
    load: list[User]
    # A new exporter for each load, as in tests/deploy: a load asks for up to MAX_EXPORTS
    # exports, and the daily export quota (EXPORT_MAX_PER_USER_PER_DAY) counts per user.
    new_exporter: Callable[[], User]


@pytest.fixture(scope="module")
def users(make_user) -> Users:
    def seeded(name: str) -> User:
        return seeded_user(make_user, name, "swarm")

    return Users([seeded(f"swarm{i}") for i in range(THREADS)], lambda: seeded("exports"))


def under_load(stack, base_url, users, name: str, action) -> None:
    """action() under the load (swarmlib.run_load) with 0 failed requests."""
    load = run_load(stack, base_url, users.load, users.new_exporter(), f"swarm {name}", action)
    assert load.failures == [], "\n".join(map(str, load.failures[:20]))


def test_stack_deployed_from_the_compose_files(stack):
    """Every service of the prod compose stack (migrate runs as a job) runs all its tasks; the
    stack file was rendered, not written by hand: no build, no depends_on, no top-level name."""
    rendered = json.loads(Path(stack.env_file + ".stack.json").read_text(encoding="utf-8"))
    assert set(rendered["services"]) == APP_SERVICES
    assert "name" not in rendered
    for service in rendered["services"].values():
        assert not {"build", "depends_on", "env_file"} & set(service)
    names = set(stack_services(stack))
    assert names == {stack.service(s) for s in APP_SERVICES}
    for service in APP_SERVICES:
        replicas = stack.replicas(service)
        assert replicas.split("/")[0] == replicas.split("/")[1], (service, replicas)
    assert stack.replicas("beat") == "1/1"


def stack_services(stack) -> list[str]:
    return docker("stack", "services", "--format", "{{.Name}}", stack.name).split()


def test_migrations_ran_once_as_a_job(stack):
    """Every migration is applied (the job ran before web started) and no job is left behind."""
    plan = stack.manage(
        "from django.core.management import call_command; call_command('showmigrations', '--plan')"
    )
    assert "[X]" in plan, plan
    assert "[ ]" not in plan, plan
    leftovers = docker(
        "service", "ls", "--format", "{{.Name}}", "--filter", f"name={stack.name}_migrate"
    ).split()
    assert leftovers == []


def test_e2e_smoke_through_nginx(stack, base_url, make_user):
    """HTTPS through nginx: health, a write and a read, an export written by the worker into the
    media volume and served by nginx (X-Accel-Redirect)."""
    with Client(base_url) as anon:
        assert anon.get("/healthz").status_code == 200
    smoke_write_read_export(make_user("alice"), "hello swarm", timeout=60)


def test_no_secret_in_any_environment(stack):
    """No secret's value in any container's or service's environment (docker inspect): the
    containers read them from /run/secrets (*_FILE)."""
    env = stack.env_values()
    values = [env[k] for k in ALL_SECRET_VARS if env.get(k)]
    # make prod-env writes these five (and OFFSITE_PASSWORD); each must be a Docker secret.
    assert len(values) >= 5, sorted(k for k in ALL_SECRET_VARS if env.get(k))
    assert all(len(v) >= 16 for v in values)
    ids = stack.all_container_ids()
    assert len(ids) >= len(APP_SERVICES)
    inspected = docker("inspect", *ids) + docker("service", "inspect", *stack_services(stack))
    for value in values:
        assert value not in inspected
    web = stack.container_ids("web")[0]
    files = docker("exec", web, "ls", "/run/secrets").split()
    assert sorted(files) == ["django_secret_key", "postgres_password", "redis_password"]


def test_every_task_is_hardened(stack):
    """The one-VM hardening rules carry over to every task of the stack (docs/swarm.md):
    non-root, read-only root, no capabilities, memory and pids limits, a passing health check,
    rotated logs. no-new-privileges is the daemon's setting here: tests/cluster checks it on
    nodes configured as docs/swarm.md says."""
    found = [task_hardening_problems(docker, cid, False) for cid in stack.all_container_ids()]
    assert {service for service, _ in found} == {stack.service(s) for s in APP_SERVICES}
    assert [(service, problems) for service, problems in found if problems] == []


def test_backup_role_logs_in_with_its_secret(stack):
    """POSTGRES_BACKUP_PASSWORD as a Docker secret: postgres set the backup role's password from
    its file, and the backup service, reading its own copy, opens a replication connection."""
    backup = stack.container_ids("backup")[0]
    out = docker(
        "exec", backup, "sh", "-c",
        'PGPASSWORD="$(cat "$POSTGRES_BACKUP_PASSWORD_FILE")" psql -Atc IDENTIFY_SYSTEM '
        '"host=postgres user=drs_backup replication=true dbname=postgres"',
    )  # fmt: skip
    assert out.split("|")[0].strip().isdigit(), out
    assert "postgres_backup_password" in docker("exec", backup, "ls", "/run/secrets").split()


def test_every_secret_and_profile_renders_as_files(tmp_path):
    """With every optional secret set and the flower and monitoring profiles on, the rendered
    stack holds no secret's value, and each service that reads one gets its file (NAME_FILE)."""
    env_file = tmp_path / "all.env"
    secrets = {var: f"{var.lower()}-{uuid.uuid4().hex}" for var in ALL_SECRET_VARS}
    secrets["SENTRY_DSN"] = f"https://{uuid.uuid4().hex}@sentry.example.com/1"
    secrets["EMAIL_URL"] = f"smtp+tls://u:{uuid.uuid4().hex}@smtp.example.com:587"
    secrets["ALERTMANAGER_WEBHOOK_URL"] = f"https://hooks.example.com/{uuid.uuid4().hex}"
    lines = [f"{k}={v}" for k, v in secrets.items()]
    lines += ["COMPOSE_PROFILES=flower,monitoring", "OFFSITE_REPOSITORY=/offsite/drs"]
    example = Path(ROOT, "compose", "prod.env.example").read_text(encoding="utf-8")
    env_file.write_text(example + "\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [str(Path(ROOT, "scripts", "swarm.sh")), "render"], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
        env={**os.environ, "PROD_ENV": str(env_file), "SWARM_STACK": "drs"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = Path(f"{env_file}.stack.json").read_text() + Path(f"{env_file}.migrate.json").read_text()
    leaked = [k for k, v in secrets.items() if v in text]
    assert leaked == []
    stack_file = json.loads(Path(f"{env_file}.stack.json").read_text())
    services = stack_file["services"]
    assert {"flower", "prometheus", "alertmanager", "postgres-exporter"} <= set(services)
    wants = {
        "postgres": {"POSTGRES_PASSWORD_FILE", "POSTGRES_BACKUP_PASSWORD_FILE"},
        "backup": {"PGPASSWORD_FILE", "POSTGRES_BACKUP_PASSWORD_FILE", "OFFSITE_PASSWORD_FILE",
                   "OFFSITE_S3_SECRET_ACCESS_KEY_FILE", "OFFSITE_SSH_KEY_FILE"},
        "web": {"DJANGO_SECRET_KEY_FILE", "SENTRY_DSN_FILE", "EMAIL_URL_FILE"},
        "flower": {"FLOWER_PASSWORD_FILE", "REDIS_PASSWORD_FILE"},
        "alertmanager": {"ALERTMANAGER_WEBHOOK_URL_FILE"},
        "postgres-exporter": {"DATA_SOURCE_PASS_FILE"},
        "redis-exporter": {"REDIS_PASSWORD_FILE"},
    }  # fmt: skip
    for name, files in wants.items():
        environment = services[name]["environment"]
        assert files <= set(environment), (name, sorted(environment))
        mounted = {f"/run/secrets/{s['target']}" for s in services[name]["secrets"]}
        assert {environment[f] for f in files} <= mounted, name
    # The WAL spool is a local volume: backup runs where postgres does (both labels).
    assert services["backup"]["deploy"]["placement"]["constraints"] == [
        "node.labels.drs.data == true", "node.labels.drs.media == true"
    ]  # fmt: skip


def test_django_sees_the_client_address(stack, base_url):
    """The address Django throttles by (DRF's client address, from nginx's X-Forwarded-For) is
    the client's own: the relay's address on the overlay network it shares with nginx, never a
    routing mesh (ingress) address, never a gateway's."""
    marker = uuid.uuid4().hex
    with Client(base_url) as anon:
        anon.headers["X-Request-ID"] = marker
        assert anon.get("/api/posts/").status_code == 200
    time.sleep(2)  # nginx flushes its access log every second
    nginx = stack.container_ids("nginx")[0]
    lines = [json.loads(line) for line in docker("logs", nginx).splitlines() if marker in line]
    assert lines, "nginx did not log the request"
    client = stack.relay_address()
    assert client
    assert lines[0]["remote_addr"] == client
    redis = stack.container_ids("redis")[0]
    keys = docker(
        "exec", redis, "sh", "-c",
        'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" '
        'redis-cli -n 1 --scan --pattern "*throttle_anon_*"',
    ).split()  # fmt: skip
    assert any(key.endswith(f"throttle_anon_{client}") for key in keys), keys
    assert docker("port", nginx).strip() == ""  # nothing published on the node


def test_rolling_update_of_web_under_load(stack, base_url, users, images):
    """docker service update --image (what a deploy does to web): start-first, health-gated."""

    def update():
        docker("service", "update", "--detach", "--image", images["v2"], stack.service("web"))
        stack.wait_converged("web", 2)

    under_load(stack, base_url, users, "rolling update of web", update)
    assert stack.update_state("web") == "completed"
    assert stack.running_images("web") == {images["v2"]}


def test_unhealthy_image_is_rolled_back_under_load(stack, base_url, users, images):
    """An image whose health check fails never takes traffic; the update rolls back by itself."""

    def update():
        docker("service", "update", "--detach", "--image", images["bad"], stack.service("web"))
        deadline = time.monotonic() + 600
        while stack.update_state("web") != "rollback_completed" and time.monotonic() < deadline:
            time.sleep(2)
        stack.wait_converged("web", 2)

    under_load(stack, base_url, users, "unhealthy image rolled back", update)
    assert stack.update_state("web") == "rollback_completed"
    assert stack.running_images("web") == {images["v2"]}


def test_scale_web_1_4_1_under_load(stack, base_url, users):
    def scale():
        for n in (1, 4, 1):
            docker("service", "scale", "--detach", f"{stack.service('web')}={n}")
            stack.wait_converged("web", n)
            time.sleep(3)

    under_load(stack, base_url, users, "scale web 1-4-1", scale)
    assert len(stack.container_ids("web")) == 1


def test_secret_rotation_under_load(stack, base_url, users):
    """A new DJANGO_SECRET_KEY in the env file, then `scripts/swarm.sh deploy`: a new secret
    under a new (content-hashed) name, the Django services moved to it by rolling update."""
    before = {s["SecretName"] for s in secrets_of(stack, "web")}
    values = stack.env_values()
    new_key = uuid.uuid4().hex + uuid.uuid4().hex
    env_file = Path(stack.env_file)
    text = env_file.read_text(encoding="utf-8")
    old = f"DJANGO_SECRET_KEY={values['DJANGO_SECRET_KEY']}\n"
    assert text.count(old) == 1
    env_file.write_text(text.replace(old, f"DJANGO_SECRET_KEY={new_key}\n"), encoding="utf-8")

    def deploy():
        done = stack.swarm("deploy")
        assert done.returncode == 0, done.stderr[-3000:]

    under_load(stack, base_url, users, "secret rotation (swarm.sh deploy)", deploy)
    after = {s["SecretName"] for s in secrets_of(stack, "web")}
    changed = after - before
    assert len(changed) == 1, (before, after)
    assert next(iter(changed)).startswith(f"{stack.name}_django_secret_key_")
    web = stack.container_ids("web")[0]
    assert docker("exec", web, "cat", "/run/secrets/django_secret_key") == new_key


def secrets_of(stack, service: str) -> list[dict]:
    return stack.service_inspect(service)["Spec"]["TaskTemplate"]["ContainerSpec"].get(
        "Secrets", []
    )


def test_backup_and_restore(stack, make_user):
    """`make swarm-backup`, then `make swarm-restore FILE=...`: the database is as it was at the
    backup (a post written after it is gone, one deleted after it is back) and web, worker and
    beat run as many tasks as before. Last: it stops the writers."""
    user = make_user("restorer")
    r = user.post("/api/posts/", json={"title": f"before backup {uuid.uuid4().hex}", "body": "b"})
    assert r.status_code == 201, r.text
    kept = r.json()
    writers = ("web", "worker", "beat")
    replicas = {s: stack.replicas(s) for s in writers}
    started = time.time()
    done = stack.swarm("backup")
    assert done.returncode == 0, done.stderr[-3000:]
    name = done.stdout.split()[-1]
    assert name.startswith("backup-"), done.stdout
    listed = stack.swarm("backups")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
    record_timing(f"swarm backup: {time.time() - started:.0f}s")
    r = user.post("/api/posts/", json={"title": f"after backup {uuid.uuid4().hex}", "body": "b"})
    assert r.status_code == 201, r.text
    later = r.json()
    assert user.delete(f"/api/posts/{kept['id']}/").status_code == 204
    started = time.time()
    done = stack.swarm("restore", name)
    assert done.returncode == 0, done.stderr[-3000:]
    record_timing(f"swarm restore: {time.time() - started:.0f}s")
    assert {s: stack.replicas(s) for s in writers} == replicas
    assert user.get(f"/api/posts/{kept['id']}/").json()["title"] == kept["title"]
    assert user.get(f"/api/posts/{later['id']}/").status_code == 404
    rollback = stack.swarm("rollback")
    assert rollback.returncode != 0
    assert "previous spec runs 0 tasks" in rollback.stderr
