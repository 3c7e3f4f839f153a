"""OpenAPI post-processing: document the errors each operation can answer.

drf-spectacular lists only the success response. The API (and nginx in front of it) also
answers errors, always in the error shape (the ``Error`` component). Each operation gets the
ones it can really answer (``ERROR_STATUSES``): 401 only where a request can authenticate, 403
only on writes a session can make (CSRF) or that only the author may do, 415 only where there
is a request body, 406 only where the answer is JSON. Clients generated from the schema and the
fuzz suite (tests/fuzz) rely on it. A view documents an error of its own (409, 507, ...) with
``error_response(description)``.

The schema also states the strict input rules of ``apps.core.validation``: request bodies
accept no other keys (``additionalProperties: false``) and text query parameters exclude NUL.
"""

import copy
from collections.abc import Callable

from drf_spectacular.utils import OpenApiResponse

from apps.core.validation import NO_NUL_PATTERN

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "detail"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "detail": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
                "request_id": {"type": "string"},
            },
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer"},
}
UNSAFE_METHODS = {"post", "put", "patch", "delete"}


def error_response(description: str) -> OpenApiResponse:
    """An error answer (the ``Error`` component) for ``@extend_schema(responses=...)``."""
    return OpenApiResponse(ERROR_REF, description=description)


def _schemes(operation: dict) -> set[str]:
    """The security schemes an operation accepts (``{}``, anonymous, names none)."""
    return {name for requirement in operation.get("security", []) for name in requirement}


def _answers_json_only(operation: dict) -> bool:
    """Every success answer is JSON or empty: DRF's content negotiation applies (406)."""
    return all(
        set(response.get("content", {})) <= {"application/json"}
        for status, response in operation["responses"].items()
        if status.startswith("2")
    )


Rule = Callable[[str, dict], bool]


def _always(method: str, operation: dict) -> bool:
    return True


# status -> (description, which operations can answer it: rule(method, operation))
ERROR_STATUSES: dict[str, tuple[str, Rule]] = {
    "400": ("Invalid input (see error.fields).", _always),
    "401": (
        "Authentication is required or failed.",
        lambda method, operation: bool(_schemes(operation)),
    ),
    "403": (
        "Not allowed: not the author, or a session request without its CSRF token.",
        lambda method, operation: method in UNSAFE_METHODS and "cookieAuth" in _schemes(operation),
    ),
    "404": ("Not found (or not yours).", _always),
    "406": (
        "The Accept header names no type the API answers with (JSON).",
        lambda method, operation: _answers_json_only(operation),
    ),
    "413": ("Request body too large.", _always),
    "415": (
        "The body is not JSON (Content-Type must be application/json).",
        lambda method, operation: "requestBody" in operation,
    ),
    "429": ("Throttled; retry after the Retry-After header's seconds.", _always),
    "502": ("The application is unavailable (e.g. being replaced); retry shortly.", _always),
    "503": ("A dependency (database, task queue) is unavailable; retry shortly.", _always),
    "504": (
        "The request took too long and was stopped (a database statement over its limit).",
        _always,
    ),
}
# Statuses that come with a Retry-After header (DRF's throttles, apps.core.errors).
RETRY_AFTER_STATUSES = ("429", "503")


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": dict(ERROR_REF)}},
    }


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: add the Error component and each operation's errors."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = copy.deepcopy(
        ERROR_SCHEMA
    )
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, (description, applies) in ERROR_STATUSES.items():
                if applies(method, operation):
                    responses.setdefault(status, _error(description))
            for status in RETRY_AFTER_STATUSES:
                if status in responses:
                    headers = responses[status].setdefault("headers", {})
                    headers.setdefault("Retry-After", copy.deepcopy(RETRY_AFTER_HEADER))
    return result


def _component(result: dict, ref: str) -> dict | None:
    prefix = "#/components/schemas/"
    if not ref.startswith(prefix):
        return None
    return result.get("components", {}).get("schemas", {}).get(ref[len(prefix) :])


def close_request_bodies(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: every request body's object schema says
    ``additionalProperties: false`` (the serializers refuse other keys), and every free-text
    query parameter says it excludes NUL (the API refuses it)."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = media.get("schema", {})
                schema = _component(result, schema.get("$ref", "")) or schema
                if schema.get("type") == "object":
                    schema["additionalProperties"] = False
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if (
                    parameter.get("in") == "query"
                    and schema.get("type") == "string"
                    and not {"enum", "format", "pattern"} & set(schema)
                ):
                    schema["pattern"] = NO_NUL_PATTERN
    return result
