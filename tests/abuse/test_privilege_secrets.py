"""Least privilege, secrets: each container of the prod stack holds only the secrets it uses
(docs/reliability.md, "Threats and limits"). nginx, the one facing the internet, holds none:
a hole in it (or a leaked `docker inspect`) gives away no password and no signing key.

Measured on the running containers: every secret value of the stack's env file is looked for
anywhere in `docker inspect` (environment, command, labels, mounts), also inside URLs."""

import json
from pathlib import Path

import pytest
from abuselib import record_figures

SECRETS = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_PASSWORD")
# The key, and both passwords inside DATABASE_URL / REDIS_URL. They read the env file whole, so
# they also hold Flower's password, unused: it grants less than the Redis password they use
# (Flower is a read-only view of the same broker).
DJANGO = set(SECRETS)
# What each service uses; a service missing here fails the test until someone decides.
NEEDS = {
    "nginx": set(),
    "postgres": {"POSTGRES_PASSWORD"},
    "redis": {"REDIS_PASSWORD"},
    "backup": {"POSTGRES_PASSWORD"},
    # Its own basic auth, and the broker (the test stack runs the opt-in profile).
    "flower": {"FLOWER_PASSWORD", "REDIS_PASSWORD"},
    # The monitoring profile (also on in the test stack; docs/observability.md): the two
    # exporters log in to what they watch; the rest holds nothing.
    "prometheus": set(),
    "alertmanager": set(),
    "node-exporter": set(),
    "nginx-exporter": set(),
    "blackbox-exporter": set(),
    "postgres-exporter": {"POSTGRES_PASSWORD"},
    "redis-exporter": {"REDIS_PASSWORD"},
    "migrate": DJANGO,
    "web": DJANGO,
    "worker": DJANGO,
    "beat": DJANGO,
}


def env_file_secrets(stack) -> dict[str, str]:
    with Path(stack.env_file).open(encoding="utf-8") as handle:
        pairs = dict(
            line.rstrip("\n").split("=", 1) for line in handle if "=" in line and line[0] != "#"
        )
    values = {name: pairs.get(name, "") for name in SECRETS}
    short = [name for name, value in values.items() if len(value) < 16]
    assert not short, f"too short to search for safely: {short}"
    return values


def held_secrets(stack, container: str, secrets: dict[str, str]) -> set[str]:
    """Names of the secrets whose value occurs anywhere in the container's inspect output."""
    text = json.dumps(stack.inspect(container))
    return {name for name, value in secrets.items() if value in text}


def test_every_service_has_a_declared_need(stack):
    services = set(stack.compose("config", "--services").split())
    assert services == set(NEEDS), (
        f"services without a declared secret need: {services ^ set(NEEDS)}"
    )


def test_each_container_holds_only_the_secrets_it_uses(stack, request):
    secrets = env_file_secrets(stack)
    held = {}  # figure key -> (service, secret names found)
    for service in sorted(NEEDS):
        containers = stack.compose("ps", "-a", "-q", service).split()
        assert containers, f"no {service} container in the stack"
        for number, container in enumerate(containers, 1):
            key = service if len(containers) == 1 else f"{service}-{number}"
            held[key] = (service, held_secrets(stack, container, secrets))
    record_figures(
        request,
        "secrets per container",
        **{key: len(found) for key, (_, found) in held.items()},
        nginx_secrets=sorted(set().union(*(f for svc, f in held.values() if svc == "nginx"))),
    )
    for key, (service, found) in held.items():
        assert found == NEEDS[service], (
            f"{key} holds {sorted(found)}, needs {sorted(NEEDS[service])}"
        )


@pytest.mark.parametrize("service", ["nginx"])
def test_nginx_environment_names_no_secret(stack, service):
    """Not even the variable names (an empty value would still be a mistake waiting to happen)."""
    container = stack.container_ids(service)[0]
    names = {entry.split("=", 1)[0] for entry in stack.inspect(container)["Config"]["Env"]}
    assert not names & set(SECRETS), sorted(names & set(SECRETS))
    assert not [n for n in names if "PASSWORD" in n or "SECRET" in n or n.endswith("_URL")], sorted(
        names
    )
