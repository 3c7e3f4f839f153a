"""Fault 6: the web container is force-recreated under light load (readers and a writer). nginx
finds the new one without a restart, and holds the requests that no web container took until the
new one answers (nginx/snippets/web-retry.conf): no read fails. A write fails only when it was
already sent to the old container (Django may have seen it: it is never sent twice), so at most
one per writer client, and no post is ever created twice."""

from faultlib import Load, clients, existing_posts, posts_query, record, wait_for

READERS = 2
WRITERS = 1
# nginx holds a request at most ~5 s of waits + 3 s (first connect) + 4 x 1 s (retry connects).
HOLD_LIMIT = 15


def title_counts(stack, titles) -> dict[str, int]:
    """How many posts have each of ``titles`` (those with none are left out)."""
    return posts_query(
        stack,
        "dict(Post.objects.filter(title__in=titles).values('title').annotate(n=Count('id'))"
        ".values_list('title', 'n'))",
        titles=sorted(titles),
    )


def test_web_force_recreate_under_light_load(stack, make_user, client):
    nginx = stack.container_ids("nginx")[0]
    nginx_started = stack.inspect(nginx)["State"]["StartedAt"]
    old_web = stack.container_ids("web")

    readers = Load(clients(make_user, READERS, "reader"), write=False, pause=0.1)
    writers = Load(clients(make_user, WRITERS, "writer"), write=True, pause=0.1)
    with readers, writers:
        readers.wait_for_requests(20)
        writers.wait_for_requests(10)
        stack.compose("up", "-d", "--no-deps", "--force-recreate", "web")
        stack.wait_healthy("web")
        wait_for(lambda: client.get("/api/posts/").status_code == 200, 30, "web not back")
        settled = readers.sent()
        readers.wait_for_requests(settled + 40)

    assert stack.container_ids("web") != old_web
    assert stack.inspect(nginx)["State"]["StartedAt"] == nginx_started, "nginx was restarted"

    # Reads: nginx held those no container took and retried them; none fails.
    failed_reads = [o for o in readers.outcomes if o.status != 200]
    assert not failed_reads, [(o.status, round(o.seconds, 2)) for o in failed_reads]

    # Writes: a failure is nginx's JSON 502 for a request the old container had been sent.
    failed_writes = [o for o in writers.outcomes if o.status != 201]
    for o in failed_writes:
        assert o.status == 502, (o.status, o.body)
        assert o.content_type.startswith("application/json"), o.content_type
    assert len(failed_writes) <= WRITERS, f"{len(failed_writes)} writes failed"
    acknowledged = writers.acknowledged()
    present = existing_posts(stack, acknowledged)
    lost = {pk for pk, title in acknowledged.items() if present.get(pk) != title}
    assert not lost, f"{len(lost)} acknowledged writes are missing"
    counts = title_counts(stack, [o.title for o in writers.outcomes])
    duplicated = [title for title, n in counts.items() if n > 1]
    assert not duplicated, f"writes created twice: {duplicated}"

    outcomes = readers.outcomes + writers.outcomes
    slowest = max(o.seconds for o in outcomes)
    assert slowest < HOLD_LIMIT, f"a request was held {slowest:.1f} s"
    record(
        "web force-recreate under light load",
        sent=len(outcomes),
        reads=readers.sent(),
        writes=writers.sent(),
        failed_reads=len(failed_reads),
        failed_writes=len(failed_writes),
        # A failed write Django had seen and saved (the client cannot know: it must check).
        failed_writes_saved=sum(1 for o in failed_writes if o.title in counts),
        held_over_1s=sum(1 for o in outcomes if o.seconds > 1),
        slowest_seconds=round(slowest, 2),
    )
