import json
import logging
import runpy
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from apps.core.logging import ContextFilter, JsonFormatter
from apps.posts.models import Post
from tests.factories import PostFactory, UserFactory

# --- Bench view ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bench_view_is_404_when_off(api_client, settings):
    settings.BENCH_VIEWS = False
    assert api_client.get("/api/bench/posts/").status_code == 404


@pytest.mark.django_db
def test_bench_view_returns_the_same_page_as_the_api(api_client, settings):
    settings.BENCH_VIEWS = True
    PostFactory.create_batch(25)
    bench = api_client.get("/api/bench/posts/").json()
    api = api_client.get("/api/posts/").json()
    assert bench == api


# --- Schema, docs, admin -------------------------------------------------------------------------


@pytest.mark.django_db
def test_openapi_schema(api_client):
    response = api_client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    for path in [
        "/api/auth/token/",
        "/api/me/",
        "/api/posts/",
        "/api/posts/{id}/",
        "/api/exports/",
        "/api/exports/{id}/",
        "/api/exports/{id}/download/",
    ]:
        assert path in schema["paths"], path
    assert "/api/bench/posts/" not in schema["paths"]


@pytest.mark.django_db
def test_swagger_ui_is_served_from_local_assets(api_client, settings):
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"{settings.STATIC_URL}drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html


@pytest.mark.django_db
def test_admin_lists_posts_and_exports():
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    PostFactory(author=admin)
    for url in ["/admin/", "/admin/posts/post/", "/admin/exports/export/"]:
        assert client.get(url).status_code == 200, url


# --- Management commands -------------------------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_is_idempotent(capsys, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-password-123")
    call_command("seed_demo", users=2, posts=250)
    demo = get_user_model().objects.get(username="demo")
    assert demo.check_password("demo-password-123")
    assert Post.objects.count() == 250
    assert Post.objects.values("author").distinct().count() == 3
    call_command("seed_demo", users=2, posts=250)
    assert Post.objects.count() == 250
    call_command("seed_demo", users=2, posts=300)
    assert Post.objects.count() == 300
    assert "posts: 300/300" in capsys.readouterr().out


@pytest.mark.django_db
def test_seed_demo_prints_a_generated_password(capsys, monkeypatch):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    call_command("seed_demo", users=0, posts=1)
    output = capsys.readouterr().out
    password = output.split("password: ")[1].split(")")[0]
    assert get_user_model().objects.get(username="demo").check_password(password)


@pytest.mark.django_db
def test_ensure_superuser_is_idempotent(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "admin@example.com")
    call_command("ensure_superuser")
    call_command("ensure_superuser")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.check_password("s3cret-pass")


@pytest.mark.django_db
def test_ensure_superuser_needs_a_username(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_USERNAME"):
        call_command("ensure_superuser")


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


# --- Logging -------------------------------------------------------------------------------------


def _formatted(record: logging.LogRecord) -> dict:
    ContextFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


@pytest.mark.django_db
def test_request_log_carries_the_request_id(api_client, caplog):
    with caplog.at_level(logging.INFO, logger="web.request"):
        api_client.get("/api/posts/", HTTP_X_REQUEST_ID="req-42")
    record = next(r for r in caplog.records if r.name == "web.request")
    line = _formatted(record)
    assert line["request_id"] == "req-42"
    assert line["method"] == "GET"
    assert line["path"] == "/api/posts/"
    assert line["status"] == 200
    assert type(line["duration_ms"]) in (int, float), line  # a measured figure: a number
    assert {"time", "level", "logger", "message"} <= set(line)
    assert line["level"] == "INFO"


@pytest.mark.django_db
def test_request_log_of_errors_only_keeps_errors_and_slow_requests(api_client, caplog, settings):
    settings.REQUEST_LOG = "errors"
    with caplog.at_level(logging.INFO, logger="web.request"):
        api_client.get("/api/posts/", HTTP_X_REQUEST_ID="fine")
        api_client.get("/api/posts/999999/", HTTP_X_REQUEST_ID="missing")
        settings.REQUEST_LOG_SLOW_MS = 0  # every request is slow now
        api_client.get("/api/posts/", HTTP_X_REQUEST_ID="slow")
    lines = [_formatted(r) for r in caplog.records if r.name == "web.request"]
    assert [(line["request_id"], line["status"], line["level"]) for line in lines] == [
        ("missing", 404, "INFO"),
        ("slow", 200, "WARNING"),
    ]
    assert lines[1]["message"] == "GET /api/posts/ 200 (slow)"


@pytest.mark.django_db
def test_task_logs_carry_the_task_id_and_the_request_id(auth_client, caplog):
    with caplog.at_level(logging.INFO, logger="apps.exports.services"):
        auth_client.post("/api/exports/", {"format": "csv"}, HTTP_X_REQUEST_ID="req-7")
    running = next(r for r in caplog.records if "running" in r.getMessage())
    line = _formatted(running)
    assert line["request_id"] == "req-7"
    assert line["task_id"]


def test_gunicorn_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("GUNICORN_KEEPALIVE", "90")
    namespace = runpy.run_path(str(Path(__file__).parent.parent / "config" / "gunicorn.conf.py"))
    assert namespace["workers"] == 5
    assert namespace["keepalive"] == 90
    assert namespace["worker_class"] == "gthread"
    assert namespace["accesslog"] is None
    assert namespace["preload_app"] is True
    monkeypatch.setenv("GUNICORN_PRELOAD", "0")
    namespace = runpy.run_path(str(Path(__file__).parent.parent / "config" / "gunicorn.conf.py"))
    assert namespace["preload_app"] is False


@pytest.mark.django_db
def test_browsable_api_renders_html(api_client):
    PostFactory()
    response = api_client.get("/api/posts/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.test_errors")
def test_django_error_log_carries_the_request_id(db, caplog):
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        client.get("/crash/", HTTP_X_REQUEST_ID="req-500")
    record = next(r for r in caplog.records if r.name == "django.request")
    assert _formatted(record)["request_id"] == "req-500"


# --- JSON renderer (apps/core/renderers.py) ------------------------------------------------------


def test_orjson_renderer_gives_drf_bytes():
    """The same bytes as DRF's own compact renderer for what the API returns: nested data,
    unicode (U+2028/U+2029 escaped), datetimes, Decimal, UUID, lazy strings, int keys."""
    import datetime
    import decimal
    import uuid

    from django.utils.translation import gettext_lazy
    from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

    from apps.core.renderers import JSONRenderer

    data = {
        "results": [{"id": 1, "title": 'ünï "q" \\ \n\u2028\u2029 🎉', "n": None, "ok": True}],
        "when": datetime.datetime(2026, 3, 1, 10, 20, 30, 123456, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 3, 1),
        "price": decimal.Decimal("1.50"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "detail": gettext_lazy("Not found."),
        7: "int key",
        "big": 2**53 + 1,
        "float": 0.1,
    }
    assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)
    indented = JSONRenderer().render(data, "application/json; indent=2")
    assert indented == DRFJSONRenderer().render(data, "application/json; indent=2")
    assert JSONRenderer().render(None) == b""


# --- API root ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_root_lists_every_endpoint_and_each_answers(api_client):
    """GET /api/ (the URL `make dev` prints) answers without a token and lists absolute URLs,
    each of which is a live endpoint of the API."""
    response = api_client.get("/api/")
    assert response.status_code == 200
    listed = response.json()
    assert set(listed) == {"token", "logout", "me", "posts", "exports", "schema", "docs", "redoc"}
    user = UserFactory()
    api_client.force_authenticate(user)
    for name, url in listed.items():
        assert url.startswith("http://testserver/api/"), (name, url)
        method = api_client.options if name in ("token", "logout") else api_client.get
        assert method(url).status_code == 200, (name, url)


@pytest.mark.django_db
def test_admin_view_site_link_leads_to_the_api_docs(client):
    user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(user)
    page = client.get("/admin/").content.decode()
    assert 'href="/api/docs/"' in page
    assert client.get("/api/docs/").status_code == 200
