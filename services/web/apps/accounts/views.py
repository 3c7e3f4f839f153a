from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.generics import RetrieveAPIView

from apps.accounts.serializers import LoginSerializer, MeSerializer, TokenSerializer
from apps.core.parsers import FormParser, JSONParser, MultiPartParser
from apps.core.throttles import LoginRateThrottle


class TokenView(ObtainAuthToken):
    """Exchange a username and password for the user's API token.

    Send it afterwards as ``Authorization: Token <token>``. Attempts are rate-limited per
    client address (``DJANGO_THROTTLE_LOGIN``).
    """

    serializer_class = LoginSerializer
    throttle_classes = [LoginRateThrottle]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        request=LoginSerializer,
        responses={200: TokenSerializer},
        summary="Obtain an API token",
        tags=["auth"],
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class MeView(RetrieveAPIView):
    """The authenticated user."""

    serializer_class = MeSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_object(self):
        return self.request.user

    @extend_schema(summary="The authenticated user", tags=["auth"])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
