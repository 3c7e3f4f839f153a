from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.generics import RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import TokenAuthentication
from apps.accounts.serializers import LoginSerializer, MeSerializer, TokenSerializer
from apps.accounts.services import token_create, token_revoke
from apps.core.throttles import LoginRateThrottle


class TokenView(APIView):
    """Exchange a username and password for a new API token.

    Send it afterwards as ``Authorization: Token <token>``. Each call makes a new token
    (``DJANGO_TOKENS_PER_USER`` are kept, oldest deleted first); it expires at ``expiry``
    (null: never, ``DJANGO_TOKEN_TTL_HOURS``). Attempts are limited per client address
    (``DJANGO_THROTTLE_LOGIN``) and per username (``DJANGO_LOGIN_LOCKOUT_ATTEMPTS``): 429 with
    ``Retry-After``; 503 ``login_unavailable`` while the counters cannot be kept.
    """

    authentication_classes = []  # the credentials are in the body
    permission_classes = [permissions.AllowAny]
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        request=LoginSerializer,
        responses={200: TokenSerializer},
        summary="Obtain an API token",
        tags=["auth"],
    )
    def post(self, request, *args, **kwargs):
        serializer = LoginSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        row, token = token_create(user=serializer.validated_data["user"])
        return Response(TokenSerializer({"token": token, "expiry": row.expiry}).data)


class LogoutView(APIView):
    """Revoke the token this request is authenticated with: from the answer on, it gets 401."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, summary="Revoke this token", tags=["auth"])
    def post(self, request, *args, **kwargs):
        token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(RetrieveAPIView):
    """The authenticated user."""

    serializer_class = MeSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_object(self):
        return self.request.user

    @extend_schema(summary="The authenticated user", tags=["auth"])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
