"""The Celery application (``celery -A config worker`` / ``celery -A config beat``).

Every setting comes from Django's settings module, keys prefixed ``CELERY_``.
"""

import gc
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Liveness file for the worker container's health check (see config/celery_heartbeat.py).
app.steps["worker"].add("config.celery_heartbeat.HeartbeatFile")


@signals.worker_init.connect
def freeze_before_fork(**kwargs):
    """In the worker's main process, once Django is set up (Celery's Django fix-up runs on this
    signal first) and before the pool forks its processes: move everything alive out of the
    garbage collector's sight, so a collection in a pool process does not write to (and so
    copy) the pages it shares with the main process (docs/benchmarks.md, as gunicorn's
    pre_fork in config/gunicorn.conf.py)."""
    gc.freeze()
