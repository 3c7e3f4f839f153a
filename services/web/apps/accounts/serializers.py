from django.contrib.auth import get_user_model
from rest_framework import serializers


class MeSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "first_name", "last_name", "date_joined"]
        read_only_fields = fields


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)
