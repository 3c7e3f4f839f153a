"""The API's one request parser: JSON (``DEFAULT_PARSER_CLASSES``). The OpenAPI schema lists
one request media type per operation, ``application/json``; any other ``Content-Type`` is a 415.

Body size needs nothing here: DRF (3.17.2 and later) reads a JSON body through Django's
``request.body``, which refuses a body declared larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(``RequestDataTooBig``, answered 413 ``payload_too_large`` by ``apps.core.errors``) and never
reads past the declared length.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """JSON too deeply nested for Python's parser (``[[[[...``) is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
