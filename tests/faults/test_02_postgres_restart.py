"""Fault 2: PostgreSQL restarts while a bounded write load runs through nginx. Every write that
got 201 exists afterwards; requests during the outage get a JSON 503 quickly (never an HTML 502,
never a hang); service returns by itself, without restarting web or worker."""

from faultlib import Load, clients, existing_posts, record, wait_for

PROXY_READ_TIMEOUT = 35  # nginx's proxy_read_timeout (nginx/snippets/proxy.conf)


def started_at(stack, service):
    return [stack.inspect(c)["State"]["StartedAt"] for c in stack.container_ids(service)]


def test_postgres_restart_under_write_load(stack, make_user):
    writer = make_user("writer")
    before = {svc: started_at(stack, svc) for svc in ("web", "worker", "nginx")}

    with Load(clients(make_user, 4)) as load:
        load.wait_for_requests(40)
        stack.compose("restart", "postgres")
        stack.wait_healthy("postgres")
        healthy_at = load.sent()
        # Full service returns by itself: a write succeeds again through the same containers.
        wait_for(
            lambda: (
                writer.post("/api/posts/", json={"title": "after", "body": "x"}).status_code == 201
            ),
            30,
            "writes did not recover after Postgres was healthy",
        )
        load.wait_for_requests(healthy_at + 40)

    statuses = {o.status for o in load.outcomes}
    assert statuses <= {201, 503}, f"unexpected answers: {statuses}"
    for o in load.outcomes:
        if o.status == 503:
            assert o.content_type.startswith("application/json"), o.content_type
            assert o.body["error"]["status"] == 503, o.body
        assert o.seconds < PROXY_READ_TIMEOUT, f"a request hung for {o.seconds:.1f} s"

    acknowledged = load.acknowledged()
    present = existing_posts(stack, acknowledged)
    lost = {pk for pk, title in acknowledged.items() if present.get(pk) != title}
    assert not lost, f"{len(lost)} acknowledged writes are missing"
    assert {svc: started_at(stack, svc) for svc in before} == before, "something was restarted"

    record(
        "postgres restart under write load",
        sent=load.sent(),
        acknowledged=len(acknowledged),
        answered_503=load.count(503),
        failed_other=load.sent() - len(acknowledged) - load.count(503),
        acknowledged_lost=len(lost),
        slowest_seconds=round(max(o.seconds for o in load.outcomes), 2),
    )
