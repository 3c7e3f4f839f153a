import uuid

from django.conf import settings
from django.db import models


class Export(models.Model):
    """A request to write all of a user's posts to a file, done by a Celery task."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exports"
    )
    format = models.CharField(max_length=8, choices=Format.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    # Path of the finished file relative to MEDIA_ROOT, e.g. "exports/<uuid>.csv".
    file = models.CharField(max_length=255, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Last time the task was sent to the broker (the stuck sweep re-sends lost ones).
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Touched every EXPORT_HEARTBEAT_SECONDS by the run in progress: a "running" export whose
    # heartbeat is older than EXPORT_HEARTBEAT_TIMEOUT_SECONDS lost its worker (re-queued).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.format} export {self.id} ({self.status})"

    @property
    def relative_path(self) -> str:
        return f"exports/{self.id}.{self.format}"

    @property
    def download_name(self) -> str:
        return f"posts-{self.id}.{self.format}"

    @property
    def content_type(self) -> str:
        return "text/csv; charset=utf-8" if self.format == self.Format.CSV else "application/json"
