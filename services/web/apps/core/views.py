"""The API root: GET /api/ lists where the API's endpoints and docs are; test-only error views."""

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from apps.core.tasks import ErrorReportingTestError, fail_for_error_test

# name in the answer -> URL name
API_ENDPOINTS = {
    "token": "auth-token",
    "logout": "auth-logout",
    "me": "me",
    "posts": "post-list",
    "exports": "export-list",
    "schema": "schema",
    "docs": "swagger-ui",
    "redoc": "redoc",
}
API_ROOT_SCHEMA = {
    "type": "object",
    "properties": {key: {"type": "string", "format": "uri"} for key in API_ENDPOINTS},
    "required": list(API_ENDPOINTS),
    "additionalProperties": False,
}


class ApiRootView(APIView):
    """Absolute URLs of the API's collections, the token endpoint and the docs."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: API_ROOT_SCHEMA}, summary="List the API's endpoints")
    def get(self, request: Request) -> Response:
        return Response(
            {key: reverse(name, request=request) for key, name in API_ENDPOINTS.items()}
        )


# --- Test-only views (DJANGO_ERROR_TEST_VIEWS): errors on purpose, 404 in production -----------


@require_GET
def error_test_view(request: HttpRequest) -> HttpResponse:
    """Raise an unhandled error, as a bug in a view would: Django answers 500, Sentry gets the
    event and ADMINS a mail (tests/e2e/test_error_reporting.py)."""
    if not settings.ERROR_TEST_VIEWS:
        raise Http404
    raise ErrorReportingTestError("error reporting test: view failed on purpose")


@csrf_exempt
@require_POST
def error_test_task(request: HttpRequest) -> JsonResponse:
    """Queue a task that fails in the worker, carrying this request's id (202)."""
    if not settings.ERROR_TEST_VIEWS:
        raise Http404
    fail_for_error_test.delay(request.request_id)
    return JsonResponse({"queued": "apps.core.tasks.fail_for_error_test"}, status=202)
