"""Request parsers that refuse bodies larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with 413.

DRF's JSON and form parsers read the request stream directly, bypassing Django's size check
on ``request.body``; without this a client could make the server buffer any amount of data.
"""

import io

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from apps.core.exceptions import PayloadTooLarge


class _BoundedBodyMixin:
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and stream is not None:
            request = (parser_context or {}).get("request")
            meta = request.META if request is not None else {}
            try:
                declared = int(meta.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge()
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise PayloadTooLarge()
            stream = io.BytesIO(body)
        return super().parse(stream, media_type, parser_context)


class JSONParser(_BoundedBodyMixin, parsers.JSONParser):
    """JSON too deeply nested for Python's parser (``[[[[...``) is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc


class FormParser(_BoundedBodyMixin, parsers.FormParser):
    pass


class MultiPartParser(parsers.MultiPartParser):
    """Django's multipart parser enforces the limit itself (RequestDataTooBig -> 413)."""
