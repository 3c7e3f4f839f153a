import json

import pytest
from django.db import connection
from django.test import Client


def test_healthz_touches_nothing():
    # No database mark: any database access here would raise instead of answering.
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_rejects_other_methods():
    response = Client().post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_health_endpoints_ignore_allowed_hosts_and_https_redirect(settings):
    """Container probes call http://127.0.0.1:8000/healthz whatever the production settings."""
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/healthz", HTTP_HOST="127.0.0.1:8000").status_code == 200
    # Everything else still gets the host check and the redirect.
    assert client.get("/api/posts/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    assert client.get("/api/posts/", HTTP_HOST="example.com").status_code == 301


@pytest.mark.django_db
def test_readyz_reports_each_check():
    response = Client().get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["cache"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "skipped"  # eager: no broker to reach
    assert len(body["checks"]) == 3
    for check in body["checks"].values():
        # A measured figure: a number (not a string or None), whatever its size.
        assert type(check["latency_ms"]) in (int, float), check


@pytest.fixture
def unreachable_database(transactional_db):
    """Point the default connection at a database that cannot be reached (a SQLite file in a
    folder that does not exist, or a PostgreSQL port nobody listens on), then put it back.

    The open connection is set aside rather than closed: the SQLite test database lives in
    memory and would vanish with its last connection."""
    saved_settings = dict(connection.settings_dict)
    saved_connection = connection.connection
    connection.connection = None
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-folder/db.sqlite3"
    else:
        connection.settings_dict.update({"HOST": "127.0.0.1", "PORT": "1"})
    yield
    if connection.connection is not None:
        connection.connection.close()
    connection.connection = saved_connection
    connection.settings_dict.clear()
    connection.settings_dict.update(saved_settings)


def assert_names_only(body: dict, failed: str, caplog, secret: str) -> None:
    """The public answer names the failed check and nothing of why (hosts, ports, paths);
    the log has the exception's text, ``secret`` included."""
    assert body["failed"] == [failed]
    assert set(body["checks"][failed]) == {"status", "latency_ms"}
    assert body["checks"][failed]["status"] == "fail"
    assert secret not in json.dumps(body)
    logged = [r.getMessage() for r in caplog.records if r.name == "apps.core.health"]
    assert any(f"readiness check {failed} failed" in m and secret in m for m in logged), logged


def test_readyz_fails_when_the_database_is_unreachable(unreachable_database, caplog):
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    # PostgreSQL's text names the host and port; SQLite's no path, but it is the exception's.
    secret = "unable to open database file" if connection.vendor == "sqlite" else "127.0.0.1"
    assert_names_only(body, "database", caplog, secret)
    assert body["checks"]["cache"]["status"] == "ok"
    # Liveness does not depend on the database.
    assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_fails_when_the_broker_is_unreachable(unreachable_broker, caplog):
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert_names_only(body, "broker", caplog, "127.0.0.1:1")
    assert body["checks"]["broker"]["latency_ms"] < 5000


@pytest.mark.django_db
def test_readyz_fails_when_the_cache_is_unreachable(settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert_names_only(response.json(), "cache", caplog, "127.0.0.1:1")


def test_request_id_is_echoed_or_generated():
    client = Client()
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    for bad in ["has space", "x" * 201, "new\nline"]:
        replaced = client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert replaced != bad
        assert len(replaced) == 32
