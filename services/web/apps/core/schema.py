"""OpenAPI post-processing: document the errors every operation can answer.

drf-spectacular lists only the success response. The API (and nginx in front of it) can also
answer 400 (bad input), 401/403 (auth), 404, 405, 413 (body too large), 415, 429 (throttled),
503 (database or queue unavailable) and 504 (a statement over its time limit), always in the
error shape. Clients and the fuzz suite (tests/fuzz) rely on the schema saying so.

The schema also states the strict input rules of ``apps.core.validation``: request bodies
accept no other keys (``additionalProperties: false``) and text query parameters exclude NUL.
"""

from apps.core.validation import NO_NUL_PATTERN

ERROR_STATUSES = {
    "400": "Invalid input (see error.fields).",
    "401": "Authentication is required or failed.",
    "403": "Not allowed (e.g. not the author).",
    "404": "Not found (or not yours).",
    "405": "Method not allowed.",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "429": "Throttled; retry after the Retry-After header's seconds.",
    "503": "A dependency (database, task queue) is unavailable; retry shortly.",
    "504": "The request took too long and was stopped (a database statement over its limit).",
}

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


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: add the Error component and the error responses."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in ERROR_STATUSES.items():
                operation["responses"].setdefault(
                    status,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
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
