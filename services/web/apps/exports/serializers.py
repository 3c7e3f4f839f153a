from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.validation import StrictChoiceField, StrictInputMixin
from apps.exports.models import Export


class ExportCreateSerializer(StrictInputMixin, serializers.Serializer):
    """What to export: the file format."""

    format = StrictChoiceField(choices=Export.Format.choices)


class ExportSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "format",
            "status",
            "row_count",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_download_url(self, export: Export) -> str | None:
        """Where to fetch the file, once the export is done."""
        if export.status != Export.Status.DONE:
            return None
        path = reverse("export-download", args=[export.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path
