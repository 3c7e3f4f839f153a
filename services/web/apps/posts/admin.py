from django.contrib import admin

from apps.posts.models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "author", "created_at", "updated_at"]
    list_select_related = ["author"]
    list_filter = ["created_at"]
    search_fields = ["title", "body", "author__username"]
    raw_id_fields = ["author"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at", "updated_at"]
