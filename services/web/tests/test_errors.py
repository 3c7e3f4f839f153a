import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from django.urls import path

from config.urls import urlpatterns as real_urlpatterns


def crash(request):
    raise RuntimeError("boom")


def suspicious(request):
    raise SuspiciousOperation("odd")


def forbidden(request):
    from django.core.exceptions import PermissionDenied

    raise PermissionDenied


urlpatterns = [
    *real_urlpatterns,
    path("crash/", crash),
    path("suspicious/", suspicious),
    path("forbidden/", forbidden),
]
handler400 = "apps.core.errors.handler400"
handler403 = "apps.core.errors.handler403"
handler404 = "apps.core.errors.handler404"
handler500 = "apps.core.errors.handler500"


def assert_error_shape(response, status):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    assert isinstance(error["code"], str)
    assert isinstance(error["detail"], str)
    assert error["request_id"] == response["X-Request-ID"]
    return error


@pytest.mark.django_db
def test_unknown_url_is_404_json(client):
    error = assert_error_shape(client.get("/no/such/page"), 404)
    assert error["code"] == "not_found"


@pytest.mark.urls("tests.test_errors")
def test_crash_is_500_json(db):
    client = Client(raise_request_exception=False)
    error = assert_error_shape(client.get("/crash/"), 500)
    assert error["code"] == "server_error"
    assert "boom" not in error["detail"]


@pytest.mark.urls("tests.test_errors")
def test_django_level_400_and_403_are_json(db):
    client = Client()
    assert_error_shape(client.get("/suspicious/"), 400)
    assert_error_shape(client.get("/forbidden/"), 403)


@pytest.mark.django_db
def test_disallowed_host_is_400_json(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    response = Client().get("/api/posts/", HTTP_HOST="evil.test")
    assert_error_shape(response, 400)


@pytest.mark.django_db
def test_csrf_failure_is_403_json(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/admin/logout/")
    error = assert_error_shape(response, 403)
    assert error["code"] == "csrf_failed"


@pytest.mark.django_db
def test_session_write_without_csrf_token_is_403(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/posts/", {"title": "x"}, content_type="application/json")
    error = assert_error_shape(response, 403)
    assert "CSRF" in error["detail"]
