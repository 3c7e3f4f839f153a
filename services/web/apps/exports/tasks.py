"""Celery tasks: thin wrappers over apps.exports.services."""

from celery import shared_task
from django.conf import settings

from apps.exports import services


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.EXPORT_TASK_TIME_LIMIT,
    soft_time_limit=max(settings.EXPORT_TASK_TIME_LIMIT - 30, 1),
    ignore_result=True,
)
def run_export(export_id: str) -> None:
    """Write the export's file; idempotent, so a redelivered message is harmless."""
    services.run_export(export_id)


@shared_task(ignore_result=True)
def purge_expired_exports() -> int:
    return services.purge_expired_exports()


@shared_task(ignore_result=True)
def sweep_stuck_exports() -> dict[str, int]:
    return services.sweep_stuck_exports()
