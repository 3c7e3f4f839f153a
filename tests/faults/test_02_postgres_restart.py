"""Fault 2: PostgreSQL restarts while a bounded write load runs through nginx. Every write that
got 201 exists afterwards; requests during the outage get the documented JSON 503 with
Retry-After (code database_unavailable) quickly, from the API (DRF's exception handler) and from
a plain Django view (/admin/, DatabaseUnavailableMiddleware), never an HTML 502, a 500 or a hang;
service returns by itself, without restarting web or worker: the worker runs an export again."""

from faultlib import (
    Load,
    admin_client,
    clients,
    database_unavailable_answers,
    existing_posts,
    export_completes_on,
    record,
    wait_for,
    worker_containers,
)

PROXY_READ_TIMEOUT = 35  # nginx's proxy_read_timeout (nginx/snippets/proxy.conf)


def started_at(stack, service):
    return [stack.inspect(c)["State"]["StartedAt"] for c in stack.container_ids(service)]


def test_postgres_restart_under_write_load(stack, make_user, base_url):
    writer = make_user("writer")
    before = {svc: started_at(stack, svc) for svc in ("web", "worker", "nginx")}
    workers = worker_containers(stack)
    admin = Load([admin_client(stack, base_url)], write=False, read_path="/admin/", pause=0.1)

    with Load(clients(make_user, 4)) as load, admin:
        load.wait_for_requests(40)
        admin.wait_for_requests(5)
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
    admin_statuses = {o.status for o in admin.outcomes}
    assert admin_statuses <= {200, 503}, f"unexpected answers from /admin/: {admin_statuses}"
    # The outage must have been seen: at least one documented 503 on each path.
    api_503 = database_unavailable_answers(load.outcomes)
    assert api_503 >= 1, "no API request met the outage: the test checked nothing"
    admin_503 = database_unavailable_answers(admin.outcomes)
    assert admin_503 >= 1, "no /admin/ request met the outage: the middleware went untested"
    assert admin.outcomes[-1].status == 200, "/admin/ did not recover"
    outcomes = load.outcomes + admin.outcomes
    slowest = max(o.seconds for o in outcomes)
    assert slowest < PROXY_READ_TIMEOUT, f"a request hung for {slowest:.1f} s"

    acknowledged = load.acknowledged()
    present = existing_posts(stack, acknowledged)
    lost = {pk for pk, title in acknowledged.items() if present.get(pk) != title}
    assert not lost, f"{len(lost)} acknowledged writes are missing"
    # The worker reconnected by itself: an export requested now completes on it.
    export = export_completes_on(stack, writer, workers)
    assert {svc: started_at(stack, svc) for svc in before} == before, "something was restarted"

    record(
        "postgres restart under write load",
        sent=load.sent(),
        acknowledged=len(acknowledged),
        answered_503=api_503,
        admin_sent=admin.sent(),
        admin_answered_503=admin_503,
        failed_other=load.sent() - len(acknowledged) - api_503,
        acknowledged_lost=len(lost),
        export_after_outage=export["status"],
        slowest_seconds=round(slowest, 2),
    )
