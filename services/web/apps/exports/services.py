"""Export business logic. Views and Celery tasks call these functions; nothing else does."""

import csv
import errno
import json
import logging
import math
import os
import shutil
import threading
import uuid
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from apps.exports import selectors as export_selectors
from apps.exports.models import Export
from apps.posts import selectors as post_selectors
from apps.posts.serializers import PostSerializer

logger = logging.getLogger(__name__)

EXPORT_DIR = "exports"
# A CSV file's columns (a JSON export holds each post as the API shows it: PostSerializer).
CSV_COLUMNS = ["id", "title", "body", "created_at", "updated_at"]
_CHUNK_SIZE = 2000
# What the owner of an export that failed unexpectedly reads in its `error`.
WRITE_FAILED = "The export could not be written because of an internal error; request a new one."
# ... and when the media volume ran short of space (nothing of the file is left behind).
NO_SPACE = "The export was stopped: the server is short of disk space. Request it again later."
# Rows written between two checks of the media volume's free space (one statvfs call each).
_SPACE_CHECK_ROWS = 500
# The daily cap counts the exports asked for in the last DAY (a sliding window).
DAY = timedelta(hours=24)
# Retry-After when a user has EXPORT_MAX_ACTIVE_PER_USER exports in progress: a small export
# takes well under a second, a large one minutes; nobody can know when one will finish.
ACTIVE_RETRY_AFTER_SECONDS = 10
# Retry-After when EXPORT_MAX_ACTIVE_TOTAL exports are in progress (the worker is behind).
QUEUE_FULL_RETRY_AFTER_SECONDS = 30


class QueueUnavailableError(Exception):
    """The broker could not be reached: the export was not queued."""


class QuotaExceededError(Exception):
    """The user may not ask for another export yet; ``retry_after`` seconds from now they may."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(QuotaExceededError):
    """EXPORT_MAX_ACTIVE_TOTAL exports of all users are queued or running."""


class InsufficientStorageError(Exception):
    """The media volume has less free space than EXPORT_MIN_FREE_BYTES / _PERCENT keep."""


def export_path(export: Export) -> Path:
    return Path(settings.MEDIA_ROOT) / export.relative_path


# --- Requesting --------------------------------------------------------------------------------


def export_enqueue(export: Export) -> None:
    """Send the export's task to the broker (retrying briefly), or raise QueueUnavailableError."""
    from apps.exports.tasks import run_export
    from config.celery import app

    Export.objects.filter(pk=export.pk).update(queued_at=timezone.now())
    try:
        # A connection of its own, read from the current settings, for every publish: exports
        # are rare and a dead pooled connection must not hide a broker that is back.
        with app.connection_for_write() as conn:
            run_export.apply_async(
                args=[str(export.pk)],
                connection=conn,
                retry=True,
                retry_policy=app.conf.task_publish_retry_policy,
            )
    except (KombuError, OSError, ConnectionError) as exc:
        raise QueueUnavailableError(str(exc)) from exc


# --- Quotas and free space ------------------------------------------------------------------------


def media_space_check() -> None:
    """Raise InsufficientStorageError when the media volume's free space (as the app's user may
    use it) is below the larger of EXPORT_MIN_FREE_BYTES and EXPORT_MIN_FREE_PERCENT of it."""
    folder = Path(settings.MEDIA_ROOT)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # MEDIA_ROOT not made yet: the disk it will be on
    usage = shutil.disk_usage(folder)
    keep = max(settings.EXPORT_MIN_FREE_BYTES, usage.total * settings.EXPORT_MIN_FREE_PERCENT / 100)
    if usage.free < keep:
        raise InsufficientStorageError(f"{usage.free} bytes free on {folder}, {keep:.0f} kept")


def _quota_check(user, now) -> None:
    """Raise QuotaExceededError (or QueueFullError) when ``user`` may not ask for an export now.
    Called with ``user``'s row locked, so the counts cannot change under it."""
    active_cap = settings.EXPORT_MAX_ACTIVE_PER_USER
    if active_cap and export_selectors.export_active_count(owner=user) >= active_cap:
        raise QuotaExceededError(
            f"You have {active_cap} exports in progress, the most allowed at once; request "
            "another when one has finished.",
            ACTIVE_RETRY_AFTER_SECONDS,
        )
    daily_cap = settings.EXPORT_MAX_PER_USER_PER_DAY
    if daily_cap:
        times = export_selectors.export_created_times(user, since=now - DAY)
        if len(times) >= daily_cap:
            # The request that brings the window under the cap ages out first.
            frees_at = times[len(times) - daily_cap] + DAY
            raise QuotaExceededError(
                f"You have asked for {daily_cap} exports in the last 24 hours, the most "
                "allowed; the next one can be asked for when the oldest is 24 hours old.",
                max(1, math.ceil((frees_at - now).total_seconds())),
            )
    total_cap = settings.EXPORT_MAX_ACTIVE_TOTAL
    if total_cap and export_selectors.export_active_count() >= total_cap:
        raise QueueFullError(
            "The export queue is full; try again later.", QUEUE_FULL_RETRY_AFTER_SECONDS
        )


def _export_row_create(user, export_format: str) -> Export:
    """Create the export row if ``user``'s quotas allow it. Concurrent requests of one user
    queue on a lock of the user's row (FOR NO KEY UPDATE: it blocks only other such locks), so
    each counts the rows the one before it committed: N parallel requests cannot slip past
    the cap together. The global cap is counted without a shared lock: it can be overshot by
    the requests in flight at the same moment (at most the web threads)."""
    with transaction.atomic():
        locked = get_user_model().objects.select_for_update(no_key=True).filter(pk=user.pk)
        list(locked.values_list("pk", flat=True))
        _quota_check(user, timezone.now())
        return Export.objects.create(owner=user, format=export_format)


def export_create(*, user, export_format: str) -> Export:
    """Create an export for ``user`` and queue its task. Raises InsufficientStorageError when
    the media volume is short of space, QuotaExceededError / QueueFullError over a cap, and
    QueueUnavailableError when the broker is down; in each case no export is left behind."""
    media_space_check()
    # Committed before it is queued: a worker never receives an export it cannot see.
    export = _export_row_create(user, export_format)
    try:
        export_enqueue(export)
    except QueueUnavailableError:
        logger.warning("broker unavailable, export %s not queued", export.pk)
        export.delete()
        raise
    logger.info("export %s queued (%s)", export.pk, export_format)
    return export


# --- Running (the Celery task) ----------------------------------------------------------------


def _start(export_id) -> Export | None:
    """Claim the export for a run. Returns None when there is nothing to do: the export is gone,
    already done (with its file), or has failed for good."""
    with transaction.atomic():
        export = Export.objects.select_for_update().filter(pk=export_id).first()
        if export is None:
            logger.info("export %s no longer exists; nothing to do", export_id)
            return None
        if export.status == Export.Status.DONE and export_path(export).exists():
            logger.info("export %s is already done; nothing to do", export_id)
            return None
        if export.status == Export.Status.FAILED:
            logger.info("export %s has failed; not running it again", export_id)
            return None
        if export.status == Export.Status.RUNNING and _heartbeat_is_fresh(export):
            # A duplicate delivery (e.g. the broker's visibility timeout after the sweep
            # re-queued it): another run is alive and will finish it.
            logger.info("export %s is running elsewhere; nothing to do", export_id)
            return None
        now = timezone.now()
        export.status = Export.Status.RUNNING
        export.started_at = now
        export.heartbeat_at = now
        export.finished_at = None
        export.attempts += 1
        export.error = ""
        export.save(
            update_fields=[
                "status", "started_at", "heartbeat_at", "finished_at", "attempts", "error",
            ]
        )  # fmt: skip
    return export


def _heartbeat_is_fresh(export: Export, now=None) -> bool:
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.EXPORT_HEARTBEAT_TIMEOUT_SECONDS)
    return export.heartbeat_at is not None and export.heartbeat_at > now - timeout


class _Heartbeat:
    """Touches ``Export.heartbeat_at`` from a thread every EXPORT_HEARTBEAT_SECONDS while the
    export is written: proof of life that a long query or write cannot hold up. When the
    worker process dies, the heartbeat stops and the sweep re-queues the export."""

    def __init__(self, export_id):
        self.export_id = export_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="export-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(settings.EXPORT_HEARTBEAT_SECONDS):
                try:
                    Export.objects.filter(pk=self.export_id, status=Export.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception as exc:  # database briefly away: try again next beat
                    logger.warning("export %s heartbeat failed: %s", self.export_id, exc)
        finally:
            connection.close()  # this thread's own database connection


def _space_checked(rows):
    """``rows``, with the media volume's free space checked before the first and then every
    _SPACE_CHECK_ROWS: a large export stops (InsufficientStorageError) before it eats the space
    PostgreSQL and Redis need, not when the disk is full."""
    for count, row in enumerate(rows):
        if count % _SPACE_CHECK_ROWS == 0:
            media_space_check()
        yield row


def _write_rows(export: Export, handle) -> int:
    posts = post_selectors.post_list(author_id=export.owner_id).order_by("id")
    count = 0
    if export.format == Export.Format.CSV:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        rows = posts.values_list(*CSV_COLUMNS).iterator(chunk_size=_CHUNK_SIZE)
        for row in _space_checked(rows):
            writer.writerow([*row[:3], row[3].isoformat(), row[4].isoformat()])
            count += 1
    else:
        serializer = PostSerializer()  # its fields are built once, not per post
        handle.write("[")
        for post in _space_checked(posts.iterator(chunk_size=_CHUNK_SIZE)):
            record = json.dumps(serializer.to_representation(post), ensure_ascii=False)
            handle.write(("\n" if count == 0 else ",\n") + record)
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


def _write_file(export: Export) -> int:
    """Write the file under a temporary name and rename it into place: the final name only
    ever shows a complete file, and a second run simply replaces it."""
    final = export_path(export)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            count = _write_rows(export, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(final)
    finally:
        temporary.unlink(missing_ok=True)
    return count


def export_run(export_id) -> Export | None:
    """Produce the export's file. Idempotent: a second run, or a run after a worker died
    mid-way, ends with one complete file and status ``done``."""
    export = _start(export_id)
    if export is None:
        return None
    logger.info("export %s running (attempt %s)", export.pk, export.attempts)
    try:
        media_space_check()
        with _Heartbeat(export.pk):
            count = _write_file(export)
    except SoftTimeLimitExceeded:
        return _fail(export, f"time limit of {settings.EXPORT_TASK_TIME_LIMIT} s exceeded")
    except InsufficientStorageError as exc:
        logger.warning("export %s stopped: %s", export.pk, exc)
        return _fail(export, NO_SPACE)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            logger.exception("export %s failed", export.pk)
            return _fail(export, WRITE_FAILED)
        logger.warning("export %s stopped: the disk is full (%s)", export.pk, exc)
        return _fail(export, NO_SPACE)
    except Exception:
        # The exception (paths, database details) goes to the log, with the export's id;
        # the owner sees a generic reason.
        logger.exception("export %s failed", export.pk)
        return _fail(export, WRITE_FAILED)
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.DONE,
        file=export.relative_path,
        row_count=count,
        finished_at=timezone.now(),
        error="",
    )
    logger.info("export %s done: %s rows", export.pk, count)
    export.refresh_from_db()
    return export


def _fail(export: Export, message: str) -> Export:
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    logger.warning("export %s failed: %s", export.pk, message)
    export.refresh_from_db()
    return export


# --- Maintenance (Celery beat) ------------------------------------------------------------------


def export_purge_expired(now=None) -> int:
    """Delete exports older than EXPORT_TTL_DAYS with their files, and temporary files left
    by workers that died mid-write. Returns the number of exports deleted."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.EXPORT_TTL_DAYS)
    deleted = 0
    for export in Export.objects.filter(created_at__lt=cutoff).iterator():
        export_path(export).unlink(missing_ok=True)
        export.delete()
        deleted += 1
    stale_before = (now - timedelta(minutes=settings.EXPORT_STUCK_MINUTES)).timestamp()
    directory = Path(settings.MEDIA_ROOT) / EXPORT_DIR
    if directory.is_dir():
        for temporary in directory.glob(".*.tmp"):
            try:
                if temporary.stat().st_mtime < stale_before:
                    temporary.unlink()
            except FileNotFoundError:
                pass
    if deleted:
        logger.info("purged %s expired exports", deleted)
    return deleted


def export_sweep_stuck(now=None) -> dict[str, int]:
    """Deal with exports that make no progress: ``running`` ones whose heartbeat is older than
    EXPORT_HEARTBEAT_TIMEOUT_SECONDS (their worker died) are re-queued, or failed after
    EXPORT_MAX_ATTEMPTS runs; ``queued`` ones not picked up for EXPORT_STUCK_MINUTES (their
    message was lost) are sent again."""
    now = now or timezone.now()
    queued_cutoff = now - timedelta(minutes=settings.EXPORT_STUCK_MINUTES)
    running_cutoff = now - timedelta(seconds=settings.EXPORT_HEARTBEAT_TIMEOUT_SECONDS)
    counts = {"requeued": 0, "failed": 0}
    candidates = (
        Export.objects.filter(status=Export.Status.RUNNING, heartbeat_at__lt=running_cutoff)
        | Export.objects.filter(
            status=Export.Status.RUNNING, heartbeat_at=None, started_at__lt=running_cutoff
        )
        | Export.objects.filter(status=Export.Status.QUEUED, queued_at__lt=queued_cutoff)
    )
    for export_id in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            export = Export.objects.select_for_update().filter(pk=export_id).first()
            if export is None:
                continue
            last_sign_of_life = export.heartbeat_at or export.started_at
            running_stuck = (
                export.status == Export.Status.RUNNING
                and last_sign_of_life is not None
                and last_sign_of_life < running_cutoff
            )
            queued_stuck = (
                export.status == Export.Status.QUEUED
                and export.queued_at is not None
                and export.queued_at < queued_cutoff
            )
            if not (running_stuck or queued_stuck):
                continue  # it moved on since we looked
            if running_stuck and export.attempts >= settings.EXPORT_MAX_ATTEMPTS:
                export.status = Export.Status.FAILED
                export.finished_at = now
                export.error = (
                    f"its worker stopped (no heartbeat for "
                    f"{settings.EXPORT_HEARTBEAT_TIMEOUT_SECONDS} s) after "
                    f"{export.attempts} attempts"
                )
                export.save(update_fields=["status", "finished_at", "error"])
                counts["failed"] += 1
                logger.warning("export %s failed: %s", export.pk, export.error)
                continue
            export.status = Export.Status.QUEUED
            export.save(update_fields=["status"])
        try:
            export_enqueue(export)
        except QueueUnavailableError:
            logger.warning("broker unavailable, export %s stays queued", export.pk)
            continue
        counts["requeued"] += 1
        logger.info("export %s re-queued", export.pk)
    return counts
