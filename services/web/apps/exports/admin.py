from django.contrib import admin

from apps.exports.models import Export


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "format", "status", "row_count", "attempts", "created_at"]
    list_select_related = ["owner"]
    list_filter = ["status", "format", "created_at"]
    search_fields = ["id", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = [
        "id",
        "file",
        "row_count",
        "error",
        "attempts",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
    ]
