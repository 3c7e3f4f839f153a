from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer

from apps.core.validation import StrictCharField, StrictInputMixin


class MeSerializer(serializers.ModelSerializer):
    # Users may have no e-mail address: an empty string, which format "email" would forbid.
    email = serializers.CharField(read_only=True)

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "first_name", "last_name", "date_joined"]
        read_only_fields = fields


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)
    expiry = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the token stops working; null: it never expires (DJANGO_TOKEN_TTL_HOURS).",
    )


class LoginSerializer(StrictInputMixin, AuthTokenSerializer):
    """DRF's username/password check, with string-only fields and no unknown keys."""

    username = StrictCharField(label="Username", write_only=True)
    password = StrictCharField(
        label="Password", style={"input_type": "password"}, trim_whitespace=False, write_only=True
    )
