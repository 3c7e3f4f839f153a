"""The Celery application (``celery -A config worker`` / ``celery -A config beat``).

Every setting comes from Django's settings module, keys prefixed ``CELERY_``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Liveness file for the worker container's health check (see config/celery_heartbeat.py).
app.steps["worker"].add("config.celery_heartbeat.HeartbeatFile")
