"""Export floods through nginx on the prod stack (issue 10, "Quotas"; docs/reliability.md,
"Threats and limits"): one user asking for exports as fast as it can gets a few and then 429s
with Retry-After; parallel requests of one user cannot slip past a cap together; the daily cap
says when a slot frees up; the broker's backlog, bounded by EXPORT_MAX_ACTIVE_TOTAL, fits in
Redis's maxmemory many times over. The caps are read from the running stack, not assumed."""

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from abuselib import record_figures

from conftest import Client, seed_posts

FLOOD = 40  # exports one user asks for, back to back
FLOOD_THREADS = 8
FLOOD_POSTS = 5_000  # the flooding user's posts: each export takes a moment to write
PARALLEL = 20  # requests of one user released at the same instant
DAY_SECONDS = 24 * 3600
# The share of Redis's maxmemory the broker's backlog may take at EXPORT_MAX_ACTIVE_TOTAL
# (docs/reliability.md): the rest is for throttle counters, the cache and beat's lock.
BACKLOG_SHARE_MAX = 0.10
WAIT_DONE_SECONDS = 120


def manage_json(stack, code: str):
    """Run ``code`` (Python, in the web container) whose last act is printing RESULT + JSON."""
    return json.loads(stack.manage(code).split("RESULT", 1)[1])


def stack_settings(stack) -> dict:
    names = [
        "EXPORT_MAX_ACTIVE_PER_USER", "EXPORT_MAX_PER_USER_PER_DAY", "EXPORT_MAX_ACTIVE_TOTAL",
        "MEDIA_ROOT",
    ]  # fmt: skip
    return manage_json(
        stack,
        "import json; from django.conf import settings; "
        f"print('RESULT' + json.dumps({{n: str(getattr(settings, n)) for n in {names!r}}}))",
    )


@pytest.fixture(scope="module")
def caps(stack) -> dict:
    found = stack_settings(stack)
    caps = {name: int(value) for name, value in found.items() if name.startswith("EXPORT_")}
    assert all(caps.values()), f"a cap is off on the stack under test: {caps}"
    caps["MEDIA_ROOT"] = found["MEDIA_ROOT"]
    return caps


def media_bytes(stack, media_root: str) -> int:
    """The media volume's size as du sees it in the web container."""
    return int(stack.compose("exec", "-T", "web", "du", "-sb", media_root).split()[0])


def export_statuses(user: Client) -> dict:
    """The user's exports, as the API lists them (the database's rows): status -> count."""
    r = user.get("/api/exports/", params={"page_size": 100})
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["count"] == len(page["results"]), "more exports than one page holds"
    statuses: dict = {}
    for export in page["results"]:
        statuses[export["status"]] = statuses.get(export["status"], 0) + 1
    return statuses


def wait_all_finished(user: Client) -> dict:
    deadline = time.monotonic() + WAIT_DONE_SECONDS
    statuses = export_statuses(user)
    while set(statuses) - {"done", "failed"} and time.monotonic() < deadline:
        time.sleep(0.5)
        statuses = export_statuses(user)
    return statuses


def remove_user(stack, username: str) -> None:
    """The user, its posts, its exports and their files: the stack as it was."""
    stack.manage(
        "from django.contrib.auth import get_user_model; "
        "from apps.exports import services; from apps.exports.models import Export; "
        f"exports = list(Export.objects.filter(owner__username={username!r})); "
        "[services.export_path(e).unlink(missing_ok=True) for e in exports]; "
        f"get_user_model().objects.filter(username={username!r}).delete()"
    )


def post_exports(base_url: str, user: Client, count: int, threads: int) -> list:
    """``count`` POST /api/exports/ of ``user`` from ``threads`` connections released together;
    each answer as (status, Retry-After, JSON body)."""
    start = threading.Barrier(threads)
    shares = [count // threads + (i < count % threads) for i in range(threads)]

    def send(share: int) -> list:
        with Client(base_url) as c:
            c.headers.update({k: user.headers[k] for k in ("Authorization", "Host")})
            start.wait(timeout=30)
            answers = []
            for _ in range(share):
                r = c.post("/api/exports/", json={"format": "csv"})
                json_body = r.headers.get("Content-Type", "").startswith("application/json")
                body = r.json() if json_body else r.text[:200]
                answers.append((r.status_code, r.headers.get("Retry-After"), body))
            return answers

    with ThreadPoolExecutor(threads) as pool:
        return [a for answers in pool.map(send, shares) for a in answers]


def refusals(answers, status: int) -> list:
    """The refused answers, each checked against the documented contract: the API's error shape
    with the status and code, and an integer Retry-After of at least a second."""
    refused = [a for a in answers if a[0] != 202]
    for code, retry_after, body in refused:
        assert code == status, body
        assert isinstance(body, dict), body
        assert body["error"]["status"] == status, body
        assert body["error"]["code"] == "export_quota_exceeded", body
        assert retry_after is not None
        assert retry_after.isdigit(), retry_after
        assert int(retry_after) >= 1, retry_after
    return refused


def worker_ids(stack) -> list[str]:
    ids = stack.container_ids("worker")
    assert ids, "no worker container"
    return ids


def backlog_in_broker(stack) -> dict:
    """Celery's default queue in Redis, read through the app's own broker connection: the sizes
    of the export messages waiting, how many messages wait in all (beat's tasks too), the list's
    memory and Redis's maxmemory."""
    return manage_json(
        stack,
        "import json; from config.celery import app\n"
        "with app.connection_for_write() as conn:\n"
        "    redis = conn.default_channel.client\n"
        "    waiting = redis.lrange('celery', 0, -1)\n"
        "    used = redis.memory_usage('celery', samples=0) or 0\n"
        "    maxmemory = redis.info('memory')['maxmemory']\n"
        "sizes = [len(m) for m in waiting if b'apps.exports.tasks.run_export' in m]\n"
        "print('RESULT' + json.dumps({'sizes': sizes, 'messages': len(waiting), 'used': used,"
        " 'maxmemory': maxmemory}))",
    )


def test_one_user_flooding_exports_gets_a_few_then_429(stack, make_user, caps, request):
    user = make_user("flood")
    try:
        seed_posts(stack, user.username, FLOOD_POSTS)
        before = media_bytes(stack, caps["MEDIA_ROOT"])
        started = time.monotonic()
        answers = post_exports(user.base_url, user, FLOOD, FLOOD_THREADS)
        seconds = time.monotonic() - started
        accepted = [a for a in answers if a[0] == 202]
        refused = refusals(answers, 429)
        rows = wait_all_finished(user)
        after = media_bytes(stack, caps["MEDIA_ROOT"])
        record_figures(
            request,
            "export flood (one user)",
            attempts=len(answers),
            accepted=len(accepted),
            refused_429=len(refused),
            active_cap=caps["EXPORT_MAX_ACTIVE_PER_USER"],
            retry_after_seconds=sorted({int(a[1]) for a in refused}),
            flood_seconds=round(seconds, 2),
            media_bytes_before=before,
            media_bytes_after=after,
            media_bytes_added=after - before,
        )
        assert len(answers) == FLOOD
        assert len(accepted) >= caps["EXPORT_MAX_ACTIVE_PER_USER"], answers[:3]
        assert refused, "every export of the flood was accepted"
        # Nothing half-made: one row per 202, each finished.
        assert rows == {"done": len(accepted)}, rows
        assert after > before
    finally:
        remove_user(stack, user.username)


def test_parallel_requests_of_one_user_accept_exactly_the_active_cap(
    stack, make_user, caps, request
):
    """The worker is paused, so nothing finishes during the burst: exactly the cap is accepted.
    Meanwhile the queued messages are weighed in Redis (the broker's bytes per export)."""
    user = make_user("race")
    cap = caps["EXPORT_MAX_ACTIVE_PER_USER"]
    workers = worker_ids(stack)
    try:
        subprocess.run(["docker", "pause", *workers], check=True, capture_output=True)
        try:
            answers = post_exports(user.base_url, user, PARALLEL, PARALLEL)
            backlog = backlog_in_broker(stack)
        finally:
            subprocess.run(["docker", "unpause", *workers], check=True, capture_output=True)
        accepted = [a for a in answers if a[0] == 202]
        refused = refusals(answers, 429)
        rows = wait_all_finished(user)
        sizes = backlog["sizes"]
        assert sizes, "no export message waiting in the broker while the worker was paused"
        per_message = max(backlog["used"] / backlog["messages"], max(sizes))
        backlog_bytes = per_message * caps["EXPORT_MAX_ACTIVE_TOTAL"]
        record_figures(
            request,
            "export race (one user, parallel)",
            parallel=len(answers),
            accepted=len(accepted),
            refused_429=len(refused),
            active_cap=cap,
            export_messages_seen=len(sizes),
            messages_seen=backlog["messages"],
            message_bytes=max(sizes),
            redis_bytes_per_message=round(per_message),
            total_cap=caps["EXPORT_MAX_ACTIVE_TOTAL"],
            backlog_bytes_at_total_cap=round(backlog_bytes),
            redis_maxmemory=backlog["maxmemory"],
        )
        assert len(answers) == PARALLEL
        assert len(accepted) == cap, [a[0] for a in answers]
        assert rows == {"done": cap}, rows
        # The global cap keeps the broker's backlog a small part of Redis's memory.
        assert backlog["maxmemory"] > 0, "Redis has no maxmemory: the backlog is unbounded"
        assert backlog_bytes <= BACKLOG_SHARE_MAX * backlog["maxmemory"], backlog_bytes
    finally:
        remove_user(stack, user.username)


def test_daily_cap_holds_under_parallel_requests_and_says_when_a_slot_frees(
    stack, make_user, caps, request
):
    """The user already asked for all but 3 of the day's exports 23 hours ago: of 20 parallel
    requests exactly 3 are accepted, and the next answer says to come back in about an hour
    (when those 23-hour-old requests turn 24 hours old)."""
    user = make_user("daily")
    left = 3
    daily = caps["EXPORT_MAX_PER_USER_PER_DAY"]
    assert caps["EXPORT_MAX_ACTIVE_PER_USER"] >= left
    try:
        seeding = time.time()
        stack.manage(
            "from datetime import timedelta; from django.utils import timezone; "
            "from django.contrib.auth import get_user_model; "
            "from apps.exports.models import Export; "
            f"owner = get_user_model().objects.get(username={user.username!r}); "
            "made = Export.objects.bulk_create("
            f"[Export(owner=owner, format='csv', status='done') for _ in range({daily - left})]); "
            "Export.objects.filter(pk__in=[e.pk for e in made])"
            ".update(created_at=timezone.now() - timedelta(hours=23))"
        )
        seeded = time.time()
        answers = post_exports(user.base_url, user, PARALLEL, PARALLEL)
        accepted = [a for a in answers if a[0] == 202]
        refused = refusals(answers, 429)
        asked = time.time()
        r = user.post("/api/exports/", json={"format": "json"})
        answered = time.time()
        retry_after = int(r.headers["Retry-After"])
        rows = wait_all_finished(user)
        record_figures(
            request,
            "export daily cap (one user, parallel)",
            daily_cap=daily,
            parallel=len(answers),
            accepted=len(accepted),
            refused_429=len(refused),
            retry_after_seconds=retry_after,
        )
        assert len(accepted) == left, [a[0] for a in answers]
        assert all("24 hours" in a[2]["error"]["detail"] for a in refused), refused[:1]
        assert r.status_code == 429, r.text
        assert "24 hours" in r.json()["error"]["detail"]
        # The seeded requests count as made 23 hours before a moment between `seeding` and
        # `seeded`: the first slot frees 24 hours after that moment.
        low, high = 3600 - (answered - seeding), 3600 - (asked - seeded) + 1
        assert low <= retry_after <= high, (low, retry_after, high)
        assert rows == {"done": daily}, rows
    finally:
        remove_user(stack, user.username)
