from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.conf import settings

        from apps.core import signals  # noqa: F401  (connects Celery task signals)

        if settings.METRICS_ENABLED:
            from celery.signals import task_postrun, task_prerun, worker_ready

            from apps.core import metrics

            task_prerun.connect(metrics.task_started, weak=False)
            task_postrun.connect(metrics.task_finished, weak=False)
            worker_ready.connect(metrics.worker_serve, weak=False)
