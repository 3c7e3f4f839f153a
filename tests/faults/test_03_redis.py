"""Fault 3: Redis (broker and cache) goes away. The API keeps answering: reads work, /readyz
names the broker, export creation answers 503 and leaves nothing behind; when Redis is back
everything recovers by itself, the running worker included (celery#8030-style stuck consumers
would fail here). Exports queued before an outage, with the workers stopped, all complete."""

from faultlib import record, wait_for


def export_count(stack, username: str) -> int:
    out = stack.manage(
        "from apps.exports.models import Export; "
        f"print('COUNT', Export.objects.filter(owner__username={username!r}).count())"
    )
    return int(out.split("COUNT", 1)[1])


def wait_done(user, export_id: str, timeout: float = 120) -> dict:
    def done():
        export = user.get(f"/api/exports/{export_id}/").json()
        return export if export["status"] in ("done", "failed") else None

    return wait_for(done, timeout, f"export {export_id} did not finish", 1)


def test_api_with_redis_down_and_recovery_without_restarts(stack, make_user, client):
    alice = make_user("alice")
    assert alice.post("/api/posts/", json={"title": "kept", "body": "x"}).status_code == 201
    worker_started = stack.inspect(stack.container_ids("worker")[0])["State"]["StartedAt"]
    stack.compose("stop", "redis")
    try:
        assert client.get("/api/posts/").status_code == 200
        assert alice.get("/api/me/").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "broker" in ready.json()["failed"], ready.json()

        before = export_count(stack, alice.username)
        refused = [alice.post("/api/exports/", json={"format": "csv"}) for _ in range(3)]
        assert [r.status_code for r in refused] == [503] * 3
        assert all(r.json()["error"]["status"] == 503 for r in refused)
        assert export_count(stack, alice.username) == before, "a half-made export was left"
    finally:
        stack.compose("start", "redis")
    stack.wait_healthy("redis")

    wait_for(lambda: client.get("/readyz").status_code == 200, 60, "/readyz did not recover")
    r = alice.post("/api/exports/", json={"format": "json"})
    assert r.status_code == 202, r.text
    # The worker that lived through the outage consumes again, without a restart.
    assert wait_done(alice, r.json()["id"])["status"] == "done"
    assert stack.inspect(stack.container_ids("worker")[0])["State"]["StartedAt"] == worker_started
    record("redis down (API)", export_posts_refused=3, half_made_exports=0, tasks_lost=0)


def test_queued_exports_survive_a_redis_restart(stack, make_user):
    bob = make_user("bob")
    bob.post("/api/posts/", json={"title": "one", "body": "x"})
    stack.compose("stop", "worker")
    try:
        queued = [
            bob.post("/api/exports/", json={"format": f}).json()["id"]
            for f in ("csv", "json", "csv")
        ]
        stack.compose("stop", "redis")
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
    finally:
        stack.compose("start", "worker")
    stack.wait_healthy("worker")
    finished = [wait_done(bob, export_id) for export_id in queued]
    assert [e["status"] for e in finished] == ["done"] * len(queued)
    record(
        "redis restart with queued exports",
        queued=len(queued),
        completed=len(finished),
        tasks_lost=0,
    )
