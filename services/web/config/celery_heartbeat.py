"""Worker liveness for container health checks.

A consumer bootstep touches ``CELERY_WORKER_HEARTBEAT_FILE`` (default /tmp/worker-heartbeat)
every few seconds from the worker's event loop. The worker image's health check
(``docker-healthcheck``) fails when the file goes stale: the loop is stuck or the consumer
stopped. Cheaper than ``celery inspect ping`` (no new Python process, no broker round trip).
"""

import os
import pathlib

from celery import bootsteps

HEARTBEAT_FILE = pathlib.Path(
    os.environ.get("CELERY_WORKER_HEARTBEAT_FILE", "/tmp/worker-heartbeat")  # noqa: S108
)
INTERVAL_SECONDS = 5.0


class HeartbeatFile(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, parent):
        self.touch()
        self.tref = parent.timer.call_repeatedly(INTERVAL_SECONDS, self.touch)

    def stop(self, parent):
        if self.tref is not None:
            self.tref.cancel()
        HEARTBEAT_FILE.unlink(missing_ok=True)

    @staticmethod
    def touch():
        HEARTBEAT_FILE.touch()
