"""Export quotas (per user: in progress at once, per 24 hours; all users: in progress at once)
and the media free-space guard, as docs/reliability.md ("Threats and limits") states them."""

import errno
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.exports import services
from apps.exports.models import Export
from tests.factories import PostFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/exports/"


def exports_made(user, count: int, status: str = "queued", age=timedelta(0)) -> list[Export]:
    """``count`` exports of ``user`` in ``status``, asked for ``age`` ago."""
    made = [Export.objects.create(owner=user, format="csv", status=status) for _ in range(count)]
    Export.objects.filter(pk__in=[e.pk for e in made]).update(created_at=timezone.now() - age)
    return made


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["request_id"]
    return error


def files_under(root) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- Per user: exports in progress at once ------------------------------------------------------


def test_over_the_active_cap_is_429_with_retry_after_and_no_row(auth_client, user, settings):
    settings.EXPORT_MAX_ACTIVE_PER_USER = 3
    exports_made(user, 2, "queued")
    exports_made(user, 1, "running")
    response = auth_client.post(URL, {"format": "csv"}, format="json")
    error = assert_error(response, 429, "export_quota_exceeded")
    assert "3 exports in progress" in error["detail"]
    assert response["Retry-After"] == str(services.ACTIVE_RETRY_AFTER_SECONDS)
    assert Export.objects.filter(owner=user).count() == 3


def test_finished_exports_do_not_count_and_others_are_not_held_back(
    auth_client, other_client, user, other_user, settings
):
    settings.EXPORT_MAX_ACTIVE_PER_USER = 2
    exports_made(user, 5, "done")
    exports_made(user, 1, "failed")
    exports_made(other_user, 2, "queued")
    assert auth_client.post(URL, {"format": "csv"}, format="json").status_code == 202
    assert other_client.post(URL, {"format": "csv"}, format="json").status_code == 429


def test_a_cap_of_zero_is_off(auth_client, user, settings):
    settings.EXPORT_MAX_ACTIVE_PER_USER = 0
    settings.EXPORT_MAX_PER_USER_PER_DAY = 0
    settings.EXPORT_MAX_ACTIVE_TOTAL = 0
    exports_made(user, 30, "queued")
    assert auth_client.post(URL, {"format": "csv"}, format="json").status_code == 202


# --- Per user: exports per 24 hours ------------------------------------------------------------


def test_over_the_daily_cap_retry_after_is_when_the_oldest_turns_24_hours(
    auth_client, user, settings
):
    settings.EXPORT_MAX_PER_USER_PER_DAY = 3
    exports_made(user, 1, "done", age=timedelta(hours=23))  # frees its slot in 1 hour
    exports_made(user, 2, "done", age=timedelta(hours=2))
    exports_made(user, 4, "done", age=timedelta(hours=25))  # out of the window
    before = timezone.now()
    response = auth_client.post(URL, {"format": "json"}, format="json")
    error = assert_error(response, 429, "export_quota_exceeded")
    assert "3 exports in the last 24 hours" in error["detail"]
    retry_after = int(response["Retry-After"])
    elapsed = (timezone.now() - before).total_seconds()
    assert 3600 - elapsed - 2 <= retry_after <= 3600 + 1
    assert Export.objects.filter(owner=user).count() == 7


def test_daily_retry_after_counts_from_the_request_that_frees_a_slot(auth_client, user, settings):
    """Over the cap by more than one (the cap was lowered): the wait is until enough have aged
    out, i.e. until the (count - cap + 1)-th oldest is 24 hours old."""
    settings.EXPORT_MAX_PER_USER_PER_DAY = 2
    exports_made(user, 1, "done", age=timedelta(hours=23, minutes=50))
    exports_made(user, 1, "done", age=timedelta(hours=20))  # the one that frees a slot: 4 h
    exports_made(user, 1, "done", age=timedelta(hours=1))
    response = auth_client.post(URL, {"format": "csv"}, format="json")
    assert_error(response, 429, "export_quota_exceeded")
    assert 4 * 3600 - 10 <= int(response["Retry-After"]) <= 4 * 3600 + 1


def test_under_the_daily_cap_is_accepted(auth_client, user, settings):
    settings.EXPORT_MAX_PER_USER_PER_DAY = 3
    exports_made(user, 2, "done", age=timedelta(hours=1))
    assert auth_client.post(URL, {"format": "csv"}, format="json").status_code == 202
    assert auth_client.post(URL, {"format": "csv"}, format="json").status_code == 429


# --- All users: exports in progress (the broker's backlog) -------------------------------------


def test_a_full_queue_is_503_with_retry_after(auth_client, user, settings):
    settings.EXPORT_MAX_ACTIVE_TOTAL = 4
    for _ in range(4):
        exports_made(UserFactory(), 1, "queued")
    response = auth_client.post(URL, {"format": "csv"}, format="json")
    assert_error(response, 503, "export_queue_full")
    assert response["Retry-After"] == str(services.QUEUE_FULL_RETRY_AFTER_SECONDS)
    assert not Export.objects.filter(owner=user).exists()


# --- Media free space -------------------------------------------------------------------------


def test_short_of_space_is_507_and_nothing_is_made(auth_client, user, settings):
    PostFactory(author=user)
    Path(settings.MEDIA_ROOT).mkdir(parents=True)
    real = shutil.disk_usage(settings.MEDIA_ROOT)
    settings.EXPORT_MIN_FREE_BYTES = real.free + 1024**3  # more than the disk has free
    response = auth_client.post(URL, {"format": "csv"}, format="json")
    error = assert_error(response, 507, "insufficient_storage")
    assert "disk space" in error["detail"]
    assert str(settings.MEDIA_ROOT) not in error["detail"]
    assert not Export.objects.exists()
    assert files_under(settings.MEDIA_ROOT) == []


def test_the_percentage_threshold_refuses_too(auth_client, settings):
    settings.EXPORT_MIN_FREE_BYTES = 0
    settings.EXPORT_MIN_FREE_PERCENT = 100.0  # free space is always below the whole disk
    assert_error(
        auth_client.post(URL, {"format": "csv"}, format="json"), 507, "insufficient_storage"
    )
    settings.EXPORT_MIN_FREE_PERCENT = 0.0
    assert auth_client.post(URL, {"format": "csv"}, format="json").status_code == 202


def test_the_worker_checks_free_space_before_writing(user, settings):
    PostFactory(author=user)
    export = Export.objects.create(owner=user, format="csv")
    settings.EXPORT_MIN_FREE_PERCENT = 100.0  # the disk filled while it was queued
    services.export_run(export.id)
    export.refresh_from_db()
    assert export.status == "failed"
    assert export.error == services.NO_SPACE
    assert files_under(settings.MEDIA_ROOT) == []


def test_the_worker_stops_when_free_space_runs_low_mid_write(user, settings, monkeypatch):
    """Free space drops under the threshold after the first checks (another writer filled the
    disk): the run stops at its next check, removes its temporary file, and fails."""
    monkeypatch.setattr(services, "_SPACE_CHECK_ROWS", 2)
    PostFactory.create_batch(5, author=user)
    export = Export.objects.create(owner=user, format="json")
    real = shutil.disk_usage
    calls = []

    def shrinking(path):
        calls.append(path)
        usage = real(path)
        return usage if len(calls) < 3 else usage._replace(free=0)

    monkeypatch.setattr(services.shutil, "disk_usage", shrinking)
    services.export_run(export.id)
    export.refresh_from_db()
    assert len(calls) == 3  # before the run, before row 1, before row 3
    assert export.status == "failed"
    assert export.error == services.NO_SPACE
    assert files_under(settings.MEDIA_ROOT) == []


def test_a_full_disk_mid_write_fails_cleanly(user, settings, monkeypatch):
    """The write itself gets ENOSPC: no temporary or partial file is left, the owner reads a
    reason without paths, and the export can be asked for again."""
    PostFactory.create_batch(3, author=user)
    export = Export.objects.create(owner=user, format="csv")
    real_write_rows = services._write_rows

    def disk_full(export, handle):
        handle.write("id,title\n" * 1000)
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(services, "_write_rows", disk_full)
    services.export_run(export.id)
    export.refresh_from_db()
    assert export.status == "failed"
    assert export.error == services.NO_SPACE
    assert files_under(settings.MEDIA_ROOT) == []
    monkeypatch.setattr(services, "_write_rows", real_write_rows)
    again = services.export_create(user=user, export_format="csv")
    again.refresh_from_db()
    assert again.status == "done"
