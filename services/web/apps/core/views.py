"""The API root: GET /api/ lists where the API's endpoints and docs are."""

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

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
