"""URL configuration. Everything of the API lives under /api/ (GET /api/ lists it); /healthz
and /readyz are answered by apps.core.middleware.HealthCheckMiddleware before URL routing."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.core import health
from apps.core.views import ApiRootView, error_test_task, error_test_view

# The admin's "View site" link: the interactive API docs.
admin.site.site_url = "/api/docs/"

api_patterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("", include("apps.accounts.urls")),
    path("", include("apps.posts.urls")),
    path("", include("apps.exports.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Test only (DJANGO_ERROR_TEST_VIEWS; 404 otherwise): errors on purpose.
    path("test/error/", error_test_view, name="error-test"),
    path("test/task-error/", error_test_task, name="error-test-task"),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("admin/", admin.site.urls),
    # Normally answered by the middleware; listed so reverse("healthz") works.
    path("healthz", health.liveness, name="healthz"),
    path("readyz", health.readiness, name="readyz"),
]

handler400 = "apps.core.errors.handler400"
handler403 = "apps.core.errors.handler403"
handler404 = "apps.core.errors.handler404"
handler500 = "apps.core.errors.handler500"
