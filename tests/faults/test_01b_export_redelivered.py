"""Fault 1b: an export's task message is delivered a second time while the export runs (Redis
redelivers an unacknowledged message after the broker's visibility timeout; the sweep re-queues
an export whose heartbeat went stale). The export is still made exactly once: the second delivery
finds it `running` with a fresh heartbeat and leaves it to the live run (apps/exports/services.py,
docs/reliability.md), so one run, one `done`, one complete file.

What keeps the heartbeat fresh after the run's start is the heartbeat thread; without it a run
longer than EXPORT_HEARTBEAT_TIMEOUT_SECONDS would look dead and run twice. To see that in
seconds, the worker runs here with a 5 s timeout and a 1 s heartbeat (production: 30 s and 5 s),
and the second delivery comes once the start's own heartbeat is older than the timeout. It is the
identical message (same task id and arguments) published again, which is what kombu's restore of
an unacknowledged message does (its scan runs only every ~100 s, too slow to wait for here).
The run is kept going, whatever the machine's speed, by a lock on the posts table that another
session holds: the export waits for it while its heartbeat thread goes on, and the lock is
released once the second delivery has been handled."""

import contextlib
import csv
import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from faultlib import record, wait_done, wait_for

from conftest import Stack, seed_posts

ROWS = 20_000
HEARTBEAT_SECONDS = 1
HEARTBEAT_TIMEOUT_SECONDS = 5
TASK = "apps.exports.tasks.run_export"
HOLDER = "drs-test-posts-lock"  # application_name of the session that holds the lock
HOLD_MAX_SECONDS = 180  # hang guard: the holder lets go by itself after this


@contextlib.contextmanager
def posts_locked(stack):
    """Another session holds an ACCESS EXCLUSIVE lock on the posts table (reads of it wait)
    until the block ends (or HOLD_MAX_SECONDS, whichever comes first)."""
    sql = (
        "BEGIN; LOCK TABLE posts_post IN ACCESS EXCLUSIVE MODE; "
        f"SELECT pg_sleep({HOLD_MAX_SECONDS});"
    )
    stack.compose(
        "exec", "-d", "-e", f"PGAPPNAME={HOLDER}", "postgres", "sh", "-c",
        f'psql -X -q -U "$POSTGRES_USER" "$POSTGRES_DB" -c "{sql}"',
    )  # fmt: skip
    granted = (
        "from django.db import connection; c = connection.cursor(); "
        'c.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) '
        f"WHERE a.application_name = '{HOLDER}' AND l.relation = 'posts_post'::regclass "
        "AND l.mode = 'AccessExclusiveLock' AND l.granted\"); print('HELD', c.fetchone()[0])"
    )
    wait_for(lambda: "HELD 1" in stack.manage(granted), 30, "the posts lock was not taken")
    try:
        yield
    finally:
        stack.manage(
            "from django.db import connection; c = connection.cursor(); "
            'c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
            f"WHERE application_name = '{HOLDER}'\")"
        )


@contextlib.contextmanager
def worker_with(stack, **variables):
    """The worker container recreated with ``variables`` added to its environment; recreated
    again with the stack's own environment afterwards."""
    fd, env_file = tempfile.mkstemp(dir=Path(stack.env_file).parent, suffix=".env")
    with os.fdopen(fd, "w") as handle, Path(stack.env_file).open() as original:
        handle.write(original.read().rstrip("\n") + "\n")
        handle.writelines(f"{name}={value}\n" for name, value in variables.items())
    try:
        Stack(stack.project, env_file).compose("up", "-d", "--no-deps", "worker")
        stack.wait_healthy("worker")
        for name, value in variables.items():
            got = stack.compose("exec", "-T", "worker", "printenv", name).strip()
            assert got == str(value), f"worker has {name}={got!r}"
        yield
    finally:
        stack.compose("up", "-d", "--no-deps", "worker")
        Path(env_file).unlink()
        stack.wait_healthy("worker")


def worker_events(stack) -> list[dict]:
    """The worker's JSON log lines."""
    out = stack.compose("logs", "--no-color", "--no-log-prefix", "worker")
    events = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def receipts(events, export_id: str) -> list[str]:
    """Task ids of each delivery of the export's task the worker received."""
    return [
        e["data"]["id"]
        for e in events
        if e.get("logger") == "celery.worker.strategy"
        and e.get("data", {}).get("name") == TASK
        and export_id in e["data"].get("args", "")
    ]


def logged(events, text: str) -> int:
    return sum(1 for e in events if text in e.get("message", ""))


def test_export_delivered_again_while_it_runs_is_made_once(stack, make_user):
    user = make_user("redelivered")
    seed_posts(stack, user.username, ROWS)
    with worker_with(
        stack,
        EXPORT_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS,
        EXPORT_HEARTBEAT_TIMEOUT_SECONDS=HEARTBEAT_TIMEOUT_SECONDS,
    ):
        with posts_locked(stack):  # released once the second delivery was handled
            r = user.post("/api/exports/", json={"format": "csv"})
            assert r.status_code == 202, r.text
            export_id = r.json()["id"]
            url = f"/api/exports/{export_id}/"

            def running():
                export = user.get(url).json()
                return export if export["status"] == "running" else None

            started = wait_for(running, 60, "the export never ran", 0.1)
            task_id = wait_for(
                lambda: receipts(worker_events(stack), export_id), 30, "no delivery logged"
            )[0]
            # Sent from the web container once the heartbeat written at the run's start is older
            # than the timeout: from then on only the heartbeat thread makes the run look alive.
            out = stack.manage(
                "import sys, time; from datetime import timedelta; "
                "from django.utils import timezone; from apps.exports.models import Export; "
                "from apps.exports.tasks import run_export; "
                f"export = Export.objects.get(pk={export_id!r}); "
                f"due = export.started_at + timedelta(seconds={HEARTBEAT_TIMEOUT_SECONDS + 1}); "
                "time.sleep(max(0.0, (due - timezone.now()).total_seconds())); "
                f"run_export.apply_async(args=[{export_id!r}], task_id={task_id!r}); "
                "sys.stdout.write('RESULT' + timezone.now().isoformat())"
            )
            started_at = datetime.fromisoformat(started["started_at"]).timestamp()
            sent_at = datetime.fromisoformat(out.split("RESULT", 1)[1].strip()).timestamp()
            sent_after = sent_at - started_at

            def second_delivery_handled():
                events = worker_events(stack)
                prefix = f"export {export_id} "
                return [
                    e["message"]
                    for e in events
                    if e.get("message", "").startswith(prefix)
                    and any(
                        s in e["message"]
                        for s in ("running elsewhere", "already done", "running (attempt 2")
                    )
                ]

            handled = wait_for(second_delivery_handled, 60, "the second delivery was never handled")
        final = wait_done(user, export_id, 240)
        files = stack.compose("exec", "-T", "worker", "ls", "-a", "/srv/media/exports").split()
        events = worker_events(stack)

    assert not any("already done" in m for m in handled), (
        f"the export ended before its second delivery arrived ({sent_after:.1f} s after its "
        f"start), although the posts it reads were locked. {handled}"
    )
    deliveries = receipts(events, export_id)
    assert deliveries.count(task_id) >= 2, f"delivered {deliveries.count(task_id)} time(s)"
    left_alone = logged(events, f"export {export_id} is running elsewhere; nothing to do")
    runs = logged(events, f"export {export_id} running (attempt")
    done_logged = logged(events, f"export {export_id} done")
    assert left_alone >= 1, handled
    assert runs == 1, f"the export ran {runs} times"
    assert done_logged == 1, f"`done` logged {done_logged} times"
    assert final["status"] == "done", final
    assert final["attempts"] == 1, final
    assert final["row_count"] == ROWS, final
    own_files = sorted(name for name in files if export_id in name)
    assert own_files == [f"{export_id}.csv"], own_files  # no second file, no temporary left

    download = user.get(url + "download/", headers={"Accept-Encoding": "identity"}, timeout=120)
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8"))))
    assert len(rows) == ROWS
    assert len({row["id"] for row in rows}) == ROWS
    finished_at = datetime.fromisoformat(final["finished_at"]).timestamp()
    record(
        "export delivered twice while running",
        rows=len(rows),
        deliveries=deliveries.count(task_id),
        second_delivery_after_seconds=round(sent_after, 1),
        export_seconds=round(finished_at - started_at, 1),
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS,
        runs=runs,
        done_logged=done_logged,
        files=len(own_files),
    )
