"""Celery tasks: thin wrappers over apps.exports.services.

A task's name (its module path) is what the broker's messages carry: renaming one strands the
messages queued under the old name during a rolling deploy, so these keep their names.
"""

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
    services.export_run(export_id)


@shared_task(ignore_result=True)
def purge_expired_exports() -> int:
    return services.export_purge_expired()


@shared_task(ignore_result=True)
def sweep_stuck_exports() -> dict[str, int]:
    return services.export_sweep_stuck()
