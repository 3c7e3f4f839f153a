from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, Throttled
from rest_framework.response import Response

from apps.core.exceptions import ServiceUnavailable
from apps.core.schema import ERROR_SCHEMA
from apps.exports import selectors, services
from apps.exports.models import Export
from apps.exports.serializers import ExportCreateSerializer, ExportSerializer


class ExportNotReady(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The export is not ready yet."
    default_code = "export_not_ready"


class ExportQuotaExceeded(Throttled):
    """429 with Retry-After (DRF's exception handler sets it from ``wait``)."""

    default_code = "export_quota_exceeded"


class ExportQueueFull(ServiceUnavailable):
    default_code = "export_queue_full"

    def __init__(self, detail, wait: int):
        super().__init__(detail)
        self.wait = wait  # Retry-After, as for Throttled


class InsufficientStorage(APIException):
    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    default_detail = "The server is short of disk space; exports are refused until it has more."
    default_code = "insufficient_storage"


@extend_schema_view(
    list=extend_schema(summary="List my exports"),
    retrieve=extend_schema(summary="Show an export's status"),
)
class ExportViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Asynchronous exports of the requesting user's posts. Only the owner sees an export:
    anyone else gets 404, as if it did not exist."""

    serializer_class = ExportSerializer
    permission_classes = [permissions.IsAuthenticated]
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Export.objects.none()
        return selectors.export_list(owner=self.request.user)

    @extend_schema(
        summary="Request an export of all my posts",
        request=ExportCreateSerializer,
        responses={
            202: ExportSerializer,
            429: OpenApiResponse(
                ERROR_SCHEMA,
                description="A quota is used up (exports in progress, or per 24 hours); "
                "retry after the Retry-After header's seconds.",
            ),
            503: OpenApiResponse(
                ERROR_SCHEMA,
                description="The task queue is unavailable or full; retry after Retry-After.",
            ),
            507: OpenApiResponse(ERROR_SCHEMA, description="The server is short of disk space."),
        },
    )
    def create(self, request, *args, **kwargs):
        serializer = ExportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            export = services.export_create(
                user=request.user, export_format=serializer.validated_data["format"]
            )
        except services.InsufficientStorageError as exc:
            raise InsufficientStorage() from exc
        except services.QueueFullError as exc:
            raise ExportQueueFull(str(exc), exc.retry_after) from exc
        except services.QuotaExceededError as exc:
            raise ExportQuotaExceeded(exc.retry_after, str(exc)) from exc
        except services.QueueUnavailableError as exc:
            raise ServiceUnavailable("The export queue is unavailable; try again later.") from exc
        location = request.build_absolute_uri(reverse("export-detail", args=[export.pk]))
        data = ExportSerializer(export, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    def perform_content_negotiation(self, request, force=False):
        # A download may be asked for with any Accept header (text/csv, */*): never answer 406;
        # errors still come back as JSON.
        force = force or self.action == "download"
        return super().perform_content_negotiation(request, force=force)

    @extend_schema(
        summary="Download the export's file (owner only)",
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): {"type": "array", "items": {"type": "object"}},
            404: OpenApiResponse(description="No such export, or not yours, or file purged."),
            409: OpenApiResponse(description="The export is not done yet."),
        },
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        export = self.get_object()
        if export.status != Export.Status.DONE:
            raise ExportNotReady(f"The export is not ready (status: {export.status}).")
        path = services.export_path(export)
        if not path.is_file():
            raise Http404("The export's file is no longer available.")
        disposition = f'attachment; filename="{export.download_name}"'
        if settings.USE_X_ACCEL_REDIRECT:
            # nginx streams the file from its internal location; Django sends headers only.
            response = HttpResponse(content_type=export.content_type)
            response["Content-Disposition"] = disposition
            response["X-Accel-Redirect"] = settings.X_ACCEL_PREFIX + quote(export.relative_path)
            return response
        response = FileResponse(path.open("rb"), content_type=export.content_type)
        response["Content-Disposition"] = disposition
        return response
