"""Fault 6: the web container is force-recreated under light load. nginx finds the new one
without a restart; the only failures are quick JSON answers while no web container is up."""

from faultlib import Load, clients, record, wait_for


def test_web_force_recreate_under_light_load(stack, make_user, client):
    nginx = stack.container_ids("nginx")[0]
    nginx_started = stack.inspect(nginx)["State"]["StartedAt"]
    old_web = stack.container_ids("web")

    with Load(clients(make_user, 2, "reader"), write=False, pause=0.1) as load:
        load.wait_for_requests(20)
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "web")
        stack.wait_healthy("web")
        wait_for(lambda: client.get("/api/posts/").status_code == 200, 30, "web not back")
        settled = load.sent()
        load.wait_for_requests(settled + 40)

    assert stack.container_ids("web") != old_web
    assert stack.inspect(nginx)["State"]["StartedAt"] == nginx_started, "nginx was restarted"
    failed = [o for o in load.outcomes if o.status != 200]
    for o in failed:
        assert o.status in (502, 503, 504), o.status  # never a hang, never HTML
        assert o.content_type.startswith("application/json"), o.content_type
    after = load.outcomes[settled:]
    assert all(o.status == 200 for o in after), "failures after the new web was healthy"
    record(
        "web force-recreate under light load",
        sent=load.sent(),
        failed=len(failed),
        failed_after_healthy=0,
    )
