import csv
import io
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.exports import services
from apps.exports.models import Export
from config.celery import app as celery_app
from tests.factories import PostFactory

pytestmark = pytest.mark.django_db

URL = "/api/exports/"


def export_files(settings) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "exports"
    return sorted(folder.iterdir()) if folder.exists() else []


def download(client, export_id):
    response = client.get(f"{URL}{export_id}/download/")
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return response, content


# --- Requesting and running (eager Celery: the task runs inside the request) ---------------------


def test_csv_export_end_to_end(auth_client, user, other_user, settings):
    mine = PostFactory.create_batch(3, author=user)
    mine[0].title = 'Quotes " and, commas\nand lines'
    mine[0].save()
    PostFactory.create_batch(2, author=other_user)

    response = auth_client.post(URL, {"format": "csv"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["format"] == "csv"
    assert response["Location"] == f"http://testserver{URL}{body['id']}/"

    detail = auth_client.get(response["Location"]).json()
    assert detail["status"] == "done"
    assert detail["row_count"] == 3
    assert detail["error"] == ""
    assert detail["download_url"].endswith(f"{URL}{body['id']}/download/")

    file_response, content = download(auth_client, body["id"])
    assert file_response.status_code == 200
    assert file_response["Content-Type"] == "text/csv; charset=utf-8"
    assert file_response["Content-Disposition"] == f'attachment; filename="posts-{body["id"]}.csv"'
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [int(row["id"]) for row in rows] == [post.id for post in mine]
    assert rows[0]["title"] == 'Quotes " and, commas\nand lines'
    assert export_files(settings) == [Path(settings.MEDIA_ROOT) / f"exports/{body['id']}.csv"]


def test_json_export(auth_client, user):
    posts = PostFactory.create_batch(2, author=user)
    export_id = auth_client.post(URL, {"format": "json"}, format="json").json()["id"]
    response, content = download(auth_client, export_id)
    assert response["Content-Type"] == "application/json"
    data = json.loads(content)
    # Each post as the API shows it.
    assert data == [auth_client.get(f"/api/posts/{post.id}/").json() for post in posts]


def test_export_of_no_posts_is_an_empty_file(auth_client):
    export_id = auth_client.post(URL, {"format": "json"}, format="json").json()["id"]
    assert json.loads(download(auth_client, export_id)[1]) == []


@pytest.mark.parametrize("payload", [{"format": "xml"}, {"format": ""}, {}, {"format": ["csv"]}])
def test_bad_format_is_400(auth_client, payload):
    response = auth_client.post(URL, payload, format="json")
    assert response.status_code == 400
    assert "format" in response.json()["error"]["fields"]
    assert not Export.objects.exists()


def test_anonymous_is_401(api_client):
    assert api_client.post(URL, {"format": "csv"}, format="json").status_code == 401
    assert api_client.get(URL).status_code == 401


def test_list_shows_only_my_exports(auth_client, other_client):
    auth_client.post(URL, {"format": "csv"}, format="json")
    other_client.post(URL, {"format": "json"}, format="json")
    body = auth_client.get(URL).json()
    assert body["count"] == 1
    assert body["results"][0]["format"] == "csv"


def test_others_get_404_for_status_and_download(auth_client, other_client):
    export_id = auth_client.post(URL, {"format": "csv"}, format="json").json()["id"]
    assert other_client.get(f"{URL}{export_id}/").status_code == 404
    response, content = download(other_client, export_id)
    assert response.status_code == 404
    assert json.loads(content)["error"]["code"] == "not_found"


def test_download_before_done_is_409(auth_client, user):
    export = Export.objects.create(owner=user, format="csv")
    response, _ = download(auth_client, export.id)
    assert response.status_code == 409
    assert "queued" in response.json()["error"]["detail"]


def test_download_with_any_accept_header(auth_client, user):
    export_id = auth_client.post(URL, {"format": "csv"}, format="json").json()["id"]
    response = auth_client.get(f"{URL}{export_id}/download/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200


def test_download_behind_nginx_uses_x_accel_redirect(auth_client, user, settings):
    settings.USE_X_ACCEL_REDIRECT = True
    PostFactory(author=user)
    export_id = auth_client.post(URL, {"format": "csv"}, format="json").json()["id"]
    response = auth_client.get(f"{URL}{export_id}/download/")
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/_protected/media/exports/{export_id}.csv"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="posts-{export_id}.csv"'
    assert response.content == b""


def test_malformed_export_id_is_404(auth_client):
    assert auth_client.get(f"{URL}not-a-uuid/").status_code == 404


def test_broker_down_answers_503_and_leaves_no_export(auth_client, unreachable_broker):
    started = timezone.now()
    response = auth_client.post(URL, {"format": "csv"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert (timezone.now() - started).total_seconds() < 10
    assert not Export.objects.exists()


# --- The task: idempotence, failures ------------------------------------------------------------


def test_running_twice_yields_one_complete_file(user, settings):
    PostFactory.create_batch(3, author=user)
    export = Export.objects.create(owner=user, format="csv")
    services.export_run(export.id)
    services.export_run(export.id)
    export.refresh_from_db()
    assert export.status == "done"
    assert export.attempts == 1  # the second run saw it done and did nothing
    files = export_files(settings)
    assert [path.name for path in files] == [f"{export.id}.csv"]
    assert len(files[0].read_text().splitlines()) == 4


def test_rerun_after_a_worker_died_mid_way(user, settings):
    """A worker killed mid-write leaves the export "running" and a temporary file; the
    redelivered task finishes it: one complete file, status done."""
    PostFactory.create_batch(2, author=user)
    export = Export.objects.create(
        owner=user, format="json", status="running", attempts=1, started_at=timezone.now()
    )
    folder = Path(settings.MEDIA_ROOT) / "exports"
    folder.mkdir(parents=True)
    (folder / f".{export.id}.json.deadbeef.tmp").write_text('[{"id": 1, "ti')
    services.export_run(export.id)
    export.refresh_from_db()
    assert export.status == "done"
    assert export.attempts == 2
    assert len(json.loads((folder / f"{export.id}.json").read_text())) == 2


def test_done_export_whose_file_vanished_is_written_again(user, settings):
    export = Export.objects.create(owner=user, format="csv")
    services.export_run(export.id)
    (Path(settings.MEDIA_ROOT) / f"exports/{export.id}.csv").unlink()
    services.export_run(export.id)
    assert (Path(settings.MEDIA_ROOT) / f"exports/{export.id}.csv").exists()


def test_failure_is_recorded_with_a_generic_message(user, settings, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.MEDIA_ROOT = blocker  # the exports folder cannot be created under a file
    export = Export.objects.create(owner=user, format="csv")
    services.export_run(export.id)
    export.refresh_from_db()
    assert export.status == "failed"
    assert export.error == services.WRITE_FAILED
    assert "not-a-folder" not in export.error
    # The exception, with its path, is in the log under the export's id.
    logged = [r for r in caplog.records if r.name == "apps.exports.services" and r.exc_info]
    assert any(
        str(export.id) in r.getMessage() and "not-a-folder" in str(r.exc_info[1]) for r in logged
    ), [r.getMessage() for r in logged]
    assert export.finished_at is not None
    services.export_run(export.id)  # a failed export is final
    export.refresh_from_db()
    assert export.attempts == 1


def test_a_failed_export_shows_its_owner_no_internal_detail(auth_client, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.MEDIA_ROOT = blocker
    created = auth_client.post(URL, {"format": "json"}, format="json")
    assert created.status_code == 202
    shown = auth_client.get(created["Location"])
    body = shown.json()
    assert body["status"] == "failed"
    assert body["error"] == services.WRITE_FAILED
    assert str(tmp_path) not in shown.content.decode()
    assert "Error" not in body["error"]  # no exception class name either


def test_failed_export_shows_its_error_in_the_api(auth_client, user):
    export = Export.objects.create(owner=user, format="csv", status="failed", error="disk full")
    body = auth_client.get(f"{URL}{export.id}/").json()
    assert body["status"] == "failed"
    assert body["error"] == "disk full"
    assert body["download_url"] is None


def test_task_for_a_deleted_export_does_nothing(user):
    assert services.export_run("00000000-0000-0000-0000-000000000000") is None


def test_task_options():
    from apps.exports.tasks import run_export

    assert run_export.acks_late is True
    assert run_export.reject_on_worker_lost is True
    assert run_export.time_limit > run_export.soft_time_limit > 0


# --- Periodic maintenance ------------------------------------------------------------------------


def test_purge_deletes_old_exports_and_their_files(user, settings):
    old = Export.objects.create(owner=user, format="csv")
    new = Export.objects.create(owner=user, format="csv")
    services.export_run(old.id)
    services.export_run(new.id)
    Export.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=8))
    folder = Path(settings.MEDIA_ROOT) / "exports"
    stale_tmp = folder / ".abandoned.csv.1234.tmp"
    stale_tmp.write_text("partial")
    long_ago = (timezone.now() - timedelta(hours=2)).timestamp()
    os.utime(stale_tmp, (long_ago, long_ago))

    assert services.export_purge_expired() == 1
    assert list(Export.objects.values_list("pk", flat=True)) == [new.pk]
    assert [path.name for path in export_files(settings)] == [f"{new.id}.csv"]


def test_purge_respects_ttl_setting(user, settings):
    settings.EXPORT_TTL_DAYS = 1
    export = Export.objects.create(owner=user, format="csv")
    Export.objects.filter(pk=export.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert services.export_purge_expired() == 1


def test_sweep_requeues_an_export_stuck_running(user, settings):
    PostFactory(author=user)
    export = Export.objects.create(
        owner=user,
        format="csv",
        status="running",
        attempts=1,
        started_at=timezone.now() - timedelta(minutes=settings.EXPORT_STUCK_MINUTES + 1),
    )
    counts = services.export_sweep_stuck()
    assert counts == {"requeued": 1, "failed": 0}
    export.refresh_from_db()
    assert export.status == "done"  # eager: the re-queued task ran at once
    assert export.attempts == 2


def test_sweep_fails_an_export_after_max_attempts(user, settings):
    export = Export.objects.create(
        owner=user,
        format="csv",
        status="running",
        attempts=settings.EXPORT_MAX_ATTEMPTS,
        started_at=timezone.now() - timedelta(hours=1),
    )
    assert services.export_sweep_stuck() == {"requeued": 0, "failed": 1}
    export.refresh_from_db()
    assert export.status == "failed"
    assert "no heartbeat" in export.error


def test_sweep_leaves_recent_exports_alone(user):
    Export.objects.create(owner=user, format="csv", status="running", started_at=timezone.now())
    Export.objects.create(owner=user, format="csv", queued_at=timezone.now())
    assert services.export_sweep_stuck() == {"requeued": 0, "failed": 0}


def test_sweep_resends_a_queued_export_whose_message_was_lost(user):
    export = Export.objects.create(
        owner=user, format="json", queued_at=timezone.now() - timedelta(hours=1)
    )
    assert services.export_sweep_stuck() == {"requeued": 1, "failed": 0}
    export.refresh_from_db()
    assert export.status == "done"


def test_beat_tasks_run_through_celery(user):
    from apps.exports.tasks import purge_expired_exports, sweep_stuck_exports

    expired = Export.objects.create(owner=user, format="csv")
    Export.objects.filter(pk=expired.pk).update(created_at=timezone.now() - timedelta(days=30))
    lost = Export.objects.create(
        owner=user, format="csv", queued_at=timezone.now() - timedelta(hours=1)
    )
    purge_expired_exports.delay()
    sweep_stuck_exports.delay()
    assert list(Export.objects.values_list("pk", "status")) == [(lost.pk, "done")]


def test_beat_schedule_names_real_tasks(settings):
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks
