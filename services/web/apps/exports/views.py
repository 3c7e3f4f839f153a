from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, Throttled
from rest_framework.response import Response

from apps.core.exceptions import ServiceUnavailable
from apps.core.schema import error_response
from apps.exports import selectors, services
from apps.exports.models import Export
from apps.exports.serializers import ExportCreateSerializer, ExportSerializer
from apps.posts.serializers import PostSerializer

# The downloaded file, as the schema states it: CSV rows of services.CSV_COLUMNS, or a JSON
# array of posts as the API shows them (PostSerializer).
EXPORT_CSV_SCHEMA = {
    "type": "string",
    "description": f"A header row ({','.join(services.CSV_COLUMNS)}), then one row per post.",
}


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
            202: OpenApiResponse(ExportSerializer, description="Queued; poll its Location."),
            429: error_response(
                "A quota is used up (exports in progress, or per 24 hours); "
                "retry after the Retry-After header's seconds."
            ),
            503: error_response("The task queue is unavailable or full; retry after Retry-After."),
            507: error_response("The server is short of disk space."),
        },
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                description="The new export's URL (poll it until its status is done or failed).",
                response=[202],
            )
        ],
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
        # One file, not a list (the JSON array of posts would make it "_list").
        operation_id="exports_download_retrieve",
        responses={
            # Text first: a client generated from the schema reads the file as text, either format.
            (200, "text/csv"): OpenApiResponse(
                EXPORT_CSV_SCHEMA,
                description="The export's file, UTF-8: CSV for a csv export, a JSON array of the "
                "posts for a json export (Content-Type says which).",
            ),
            (200, "application/json"): PostSerializer(many=True),
            404: error_response("No such export, not yours, or its file was purged."),
            409: error_response("The export is not done yet (see its status)."),
        },
        parameters=[
            OpenApiParameter(
                "Content-Disposition",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description='attachment; filename="posts-<id>.<format>"',
                response=[200],
            )
        ],
    )
    @action(detail=True, methods=["get"], pagination_class=None)
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
