"""Fault 5: `docker compose stop` shuts Postgres down cleanly (the next start needs no crash
recovery); SIGKILL under write load loses no acknowledged write, answers the documented JSON 503
while the database is gone (API and plain Django views), and the worker reconnects by itself."""

import subprocess
from datetime import UTC, datetime

from faultlib import (
    Load,
    admin_client,
    clients,
    database_unavailable_answers,
    existing_posts,
    export_completes_on,
    record,
    worker_containers,
)

CRASH_SIGNS = ("not properly shut down", "automatic recovery in progress", "redo starts")


def postgres_log_since(stack, since: str) -> str:
    cid = stack.container_ids("postgres")[0]
    done = subprocess.run(
        ["docker", "logs", "--since", since, cid], capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_stop_then_start_needs_no_crash_recovery(stack):
    stack.compose("stop", "postgres")
    since = now()
    stack.compose("start", "postgres")
    stack.wait_healthy("postgres")
    log = postgres_log_since(stack, since)
    assert "database system is ready to accept connections" in log, log[-2000:]
    assert not [s for s in CRASH_SIGNS if s in log], log[-2000:]


def test_sigkill_under_write_load_keeps_acknowledged_writes(stack, make_user, base_url):
    user = make_user("killreader")
    workers = worker_containers(stack)
    admin = Load([admin_client(stack, base_url)], write=False, read_path="/admin/", pause=0.1)
    with Load(clients(make_user, 3, "killwriter")) as load, admin:
        load.wait_for_requests(60)
        stack.compose("kill", "-s", "SIGKILL", "postgres")
        since = now()
        # Answered while the database is gone (API and admin).
        load.wait_for_requests(load.sent() + 10)
        admin.wait_for_requests(admin.sent() + 3)
        stack.compose("start", "postgres")
        stack.wait_healthy("postgres")
        load.wait_for_requests(load.sent() + 30)
    log = postgres_log_since(stack, since)
    assert any(s in log for s in CRASH_SIGNS), "expected crash recovery after SIGKILL"

    acknowledged = load.acknowledged()
    present = existing_posts(stack, acknowledged)
    lost = [pk for pk, title in acknowledged.items() if present.get(pk) != title]
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert {o.status for o in load.outcomes} <= {201, 503}
    assert {o.status for o in admin.outcomes} <= {200, 503}
    api_503 = database_unavailable_answers(load.outcomes)
    assert api_503 >= 1, "no API request met the outage: the test checked nothing"
    admin_503 = database_unavailable_answers(admin.outcomes)
    assert admin_503 >= 1, "no /admin/ request met the outage: the middleware went untested"
    # The worker reconnected by itself: an export requested now completes on it.
    export = export_completes_on(stack, user, workers)
    record(
        "postgres SIGKILL under write load",
        sent=load.sent(),
        acknowledged=len(acknowledged),
        answered_503=api_503,
        admin_answered_503=admin_503,
        acknowledged_lost=len(lost),
        export_after_outage=export["status"],
    )
