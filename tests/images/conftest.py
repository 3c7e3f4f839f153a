"""Fixtures for the image tests: the images under test (built from services/<name>
when the tag does not exist), a throwaway network, and a container/volume factory
whose products are always removed afterwards, pass or fail: per test (containers), or
per module (module_containers, for a server that several tests only read from).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from imagetools import PREFIX, REPO, Containers, docker, ensure_image, unique


@pytest.fixture(scope="session")
def postgres_image() -> str:
    return ensure_image(
        os.environ.get("DRS_POSTGRES_IMAGE", "drs/postgres:latest"), REPO / "services" / "postgres"
    )


@pytest.fixture(scope="session")
def redis_image() -> str:
    return ensure_image(
        os.environ.get("DRS_REDIS_IMAGE", "drs/redis:latest"), REPO / "services" / "redis"
    )


@pytest.fixture(scope="session")
def network() -> Iterator[str]:
    name = unique("net")
    docker("network", "create", "--label", f"{PREFIX}=1", name)
    try:
        yield name
    finally:
        # containers of a test are removed before session teardown, but be sure
        ids = docker("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        if ids:
            docker("rm", "-fv", *ids, check=False, timeout=120)
        docker("network", "rm", name, check=False)


def removed_afterwards(network: str) -> Iterator[Containers]:
    """Containers on the network, all removed when the fixture ends, pass or fail."""
    c = Containers(network)
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def containers(network: str) -> Iterator[Containers]:
    yield from removed_afterwards(network)


@pytest.fixture(scope="module")
def module_containers(network: str) -> Iterator[Containers]:
    yield from removed_afterwards(network)
