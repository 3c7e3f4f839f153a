"""Read queries for exports: the API's list, and what the quotas count."""

from datetime import datetime

from django.db.models import QuerySet

from apps.exports.models import Export

ACTIVE = (Export.Status.QUEUED, Export.Status.RUNNING)


def export_active_count(owner=None) -> int:
    """Exports queued or running: of ``owner``, or of everyone (each is a message in the broker,
    waiting or being worked on)."""
    exports = Export.objects.filter(status__in=ACTIVE)
    if owner is not None:
        exports = exports.filter(owner=owner)
    return exports.count()


def export_created_times(owner, since: datetime) -> list[datetime]:
    """When ``owner``'s exports made at or after ``since`` were asked for, oldest first."""
    return list(
        Export.objects.filter(owner=owner, created_at__gte=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )


def export_list(*, owner) -> QuerySet[Export]:
    """``owner``'s exports, newest first."""
    return Export.objects.filter(owner=owner).order_by("-created_at")
