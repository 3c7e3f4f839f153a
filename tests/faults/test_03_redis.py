"""Fault 3: Redis (broker and cache) goes away. The API keeps answering: reads work, /readyz
names the cache and the broker, export creation answers 503 and leaves nothing behind; when Redis
is back everything recovers by itself, the running worker included (celery#8030-style stuck
consumers would fail here). Exports queued with the workers stopped survive Redis being
SIGKILLed (AOF) and all complete once the workers start."""

import subprocess

from faultlib import export_completes_on, record, wait_done, wait_for, worker_containers

QUEUE = "celery"  # Celery's default queue: a Redis list in the broker's database (0)


def export_count(stack, username: str) -> int:
    out = stack.manage(
        "from apps.exports.models import Export; "
        f"print('COUNT', Export.objects.filter(owner__username={username!r}).count())"
    )
    return int(out.split("COUNT", 1)[1])


def queued_messages(stack) -> str:
    """The broker's queue as raw text (each message names its task's arguments)."""
    return stack.compose(
        "exec", "-T", "redis", "sh", "-c",
        f'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning -n 0 LRANGE {QUEUE} 0 -1',
    )  # fmt: skip


def test_api_with_redis_down_and_recovery_without_restarts(stack, make_user, client):
    alice = make_user("alice")
    assert alice.post("/api/posts/", json={"title": "kept", "body": "x"}).status_code == 201
    workers = worker_containers(stack)
    stack.compose("stop", "redis")
    try:
        assert client.get("/api/posts/").status_code == 200
        assert alice.get("/api/me/").status_code == 200
        ready, checks = stack.readyz()
        assert ready != 0, checks
        assert {"cache", "broker"} <= set(checks["failed"]), checks
        assert checks["checks"]["cache"]["status"] == "fail", checks
        assert checks["checks"]["broker"]["status"] == "fail", checks
        assert checks["checks"]["database"]["status"] == "ok", checks

        before = export_count(stack, alice.username)
        refused = [alice.post("/api/exports/", json={"format": "csv"}) for _ in range(3)]
        assert [r.status_code for r in refused] == [503] * 3
        assert all(r.json()["error"]["status"] == 503 for r in refused)
        half_made = export_count(stack, alice.username) - before
        assert half_made == 0, f"{half_made} half-made exports were left"
    finally:
        stack.compose("start", "redis")
    stack.wait_healthy("redis")

    wait_for(lambda: stack.readyz()[0] == 0, 60, "/readyz did not recover")
    # The worker that lived through the outage consumes again, without a restart.
    export = export_completes_on(stack, alice, workers)
    record(
        "redis down (API)",
        readyz_failed=sorted(checks["failed"]),
        export_posts_refused=sum(1 for r in refused if r.status_code == 503),
        half_made_exports=half_made,
        export_after_outage=export["status"],
    )


def test_queued_exports_survive_a_redis_sigkill(stack, make_user):
    bob = make_user("bob")
    bob.post("/api/posts/", json={"title": "one", "body": "x"})
    stack.compose("stop", "worker")
    try:
        queued = []
        for export_format in ("csv", "json", "csv"):
            r = bob.post("/api/exports/", json={"format": export_format})
            assert r.status_code == 202, r.text
            queued.append(r.json()["id"])
        in_broker = queued_messages(stack)
        assert all(export_id in in_broker for export_id in queued), "not queued in Redis"
        # SIGKILL: no shutdown save; only what the append-only file holds comes back.
        redis = stack.container_ids("redis")[0]
        subprocess.run(["docker", "kill", "-s", "KILL", redis], check=True, capture_output=True)
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
        after_kill = queued_messages(stack)
        survived = [export_id for export_id in queued if export_id in after_kill]
        assert survived == queued, f"messages lost by the SIGKILL: {set(queued) - set(survived)}"
    finally:
        stack.compose("start", "worker")
    stack.wait_healthy("worker")
    finished = [wait_done(bob, export_id) for export_id in queued]
    assert [e["status"] for e in finished] == ["done"] * len(queued)
    record(
        "redis SIGKILL with queued exports",
        queued=len(queued),
        in_broker_after_sigkill=len(survived),
        completed=sum(1 for e in finished if e["status"] == "done"),
        tasks_lost=sum(1 for e in finished if e["status"] != "done"),
    )
