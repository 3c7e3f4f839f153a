"""Strict input: what the schema says is what the API accepts, and nothing else.

- ``StrictCharField`` / ``StrictChoiceField``: a JSON number, boolean, list or object sent for a
  string field is a 400 (DRF's own fields turn ``1`` into ``"1"``).
- ``StrictInputMixin``: a body key the serializer does not accept (unknown, or read-only) is a
  400 naming it, instead of being silently dropped; the schema says ``additionalProperties:
  false`` for every request body (``apps.core.schema.close_request_bodies``).
- ``positive_int_param`` / ``text_param``: query parameters that must be an integer in a range,
  or text without NUL characters (PostgreSQL cannot store or compare NUL).
"""

import re
from collections.abc import Mapping

from django.core.validators import RegexValidator
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

NOT_A_STRING = "Not a valid string."
# OpenAPI pattern for text query parameters: any characters but NUL.
NO_NUL_PATTERN = "^[^\\x00]*$"
NON_EMPTY_NO_NUL_PATTERN = "^[^\\x00]+$"
# ... and at least one character that is not whitespace (the blank check after trimming).
NON_BLANK_NO_NUL_PATTERN = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"
_DIGITS = re.compile(r"[0-9]{1,1000}")


class StrictCharField(serializers.CharField):
    """A CharField that accepts strings only, measures ``max_length`` before trimming, and
    states in the schema what it refuses: NUL anywhere, and (unless blank is allowed) text
    that is only whitespace."""

    default_error_messages = {"invalid": NOT_A_STRING}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Documents the rule for the schema (drf-spectacular emits it as `pattern`); the
        # checks themselves happen earlier (NUL validator, blank check after trimming).
        # With blank allowed drf-spectacular writes oneOf[pattern, maxLength 0]: the pattern
        # must not match "" too, or the two overlap.
        pattern = NON_EMPTY_NO_NUL_PATTERN if self.allow_blank else NON_BLANK_NO_NUL_PATTERN
        self.validators.append(RegexValidator(pattern))

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    """A ChoiceField for string choices that accepts strings only."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictInputMixin:
    """Refuse body keys that are not writable fields of the serializer (400, named in
    ``error.fields``). Read-only fields count as not accepted: the request schema omits them."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = [key for key in data if key not in writable]
            if refused:
                raise ValidationError(
                    {
                        str(key): [
                            "This field is read-only." if key in self.fields else "Unknown field."
                        ]
                        for key in refused
                    }
                )
        return super().to_internal_value(data)


def parse_positive_int(raw: str) -> int | None:
    """``raw`` as an integer >= 1 when it is plain decimal digits (no sign, space or point)."""
    return int(raw) if _DIGITS.fullmatch(raw) and int(raw) >= 1 else None


def positive_int_param(request, name: str, default: int, maximum: int | None = None) -> int:
    """Query parameter ``name`` as an integer >= 1 (and <= ``maximum``); absent: ``default``.
    Anything else (empty, signs, decimals, words, out of range) is a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = parse_positive_int(raw)
    if value is None or (maximum is not None and value > maximum):
        bound = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise ValidationError({name: [f"Must be an integer {bound}."]})
    return value


def text_param(request, name: str) -> str | None:
    """Query parameter ``name`` as text without NUL characters (400 otherwise)."""
    raw = request.query_params.get(name)
    if raw is not None and "\x00" in raw:
        raise ValidationError({name: ["Null characters are not allowed."]})
    return raw
