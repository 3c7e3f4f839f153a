import uuid

import pytest
from rest_framework.test import APIClient

from apps.accounts.services import token_create
from apps.core.pagination import forget_estimates
from config.celery import app as celery_app
from tests.factories import PostFactory, UserFactory


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    """Each test gets its own media folder, its own cache key space (throttle counters start at
    zero, and a shared Redis is never flushed) and tasks that run in-process, whether or not
    DATABASE_URL / REDIS_URL point at real services."""
    settings.MEDIA_ROOT = tmp_path / "media"
    cache = dict(settings.CACHES["default"])
    cache["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {"default": cache}
    saved = {
        key: celery_app.conf[key]
        for key in ("task_always_eager", "task_eager_propagates", "broker_url")
    }
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    forget_estimates()  # a list's count estimate kept by an earlier test
    yield
    celery_app.conf.update(saved)


@pytest.fixture
def unreachable_broker(monkeypatch):
    """Point Celery at a port where nothing listens. Celery reads CELERY_BROKER_URL from the
    environment before its own config, so that variable (set in the stack) goes too."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture
def throttle_rates(settings):
    """Set throttle rates for a test: throttle_rates(anon="2/min")."""

    def set_rates(**rates):
        rest = dict(settings.REST_FRAMEWORK)
        rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], **rates}
        settings.REST_FRAMEWORK = rest

    return set_rates


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory(username="alice")


@pytest.fixture
def other_user(db):
    return UserFactory(username="bob")


@pytest.fixture
def auth_client(user):
    client = APIClient()
    _, token = token_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def other_client(other_user):
    client = APIClient()
    _, token = token_create(user=other_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def post(user):
    return PostFactory(author=user)
