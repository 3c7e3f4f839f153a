"""Hostile and malformed requests through nginx (issue 5, "Bad input"): never a 5xx, never a
hang, always the JSON error shape, and the data unchanged. Everything goes to the stack's
nginx on 127.0.0.1; every loop is bounded in count and time."""

import json
import re
import select
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest

from conftest import Client, raw_request

POSTS = "/api/posts/"
# The posts table as the database sees it: row count and a digest of every row.
CHECKSUM = (
    "import hashlib; from apps.posts.models import Post; "
    "rows = list(Post.objects.order_by('id').values_list('id', 'author_id', 'title', 'body', "
    "'updated_at')); print('CHECKSUM', len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())"
)


# Each within the search's term limit (DJANGO_SEARCH_MAX_TERMS, 5 by default), so it is searched.
SQL_LOOKING = (
    "' OR '1'='1",
    "'; DROP TABLE posts_post; --",
    '" UNION SELECT password--',
    "%' AND 1=1 --",
)


def size_in_bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    value = value.strip().lower()
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def manage_last_line(stack, code: str) -> str:
    """The last line a Django shell snippet printed in the web container."""
    return stack.manage(code).strip().splitlines()[-1]


def posts_checksum(stack) -> str:
    return manage_last_line(stack, CHECKSUM)


def assert_json_error(response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["status"] == response.status_code
    return error


@pytest.fixture(scope="module")
def alice(make_user):
    user = make_user("bad-alice")
    r = user.post(POSTS, json={"title": "alice's post", "body": "keep me"})
    assert r.status_code == 201, r.text
    user.post_id = r.json()["id"]
    return user


@pytest.fixture(scope="module")
def bob(make_user):
    return make_user("bad-bob")


# --- body size ---------------------------------------------------------------------------------


def test_bodies_over_nginx_limit_are_413_json(stack, alice):
    limit = size_in_bytes(stack.env_value("NGINX_CLIENT_MAX_BODY_SIZE", "2m"))
    before = posts_checksum(stack)
    for size in (limit + 1, limit * 5):
        body = b'{"title": "x", "body": "' + b"a" * size + b'"}'
        r = alice.post(POSTS, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert_json_error(r, 413)
    # A 10 MB string in a JSON field: nginx refuses it before Django sees it.
    r = alice.post(POSTS, json={"title": "y" * 10_000_000}, timeout=60)
    assert_json_error(r, 413)
    assert posts_checksum(stack) == before


def test_body_over_django_limit_is_4xx_json(stack, alice):
    django_limit = int(stack.env_value("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", str(1024 * 1024)))
    nginx_limit = size_in_bytes(stack.env_value("NGINX_CLIENT_MAX_BODY_SIZE", "2m"))
    assert django_limit < nginx_limit, "Django's limit must be below nginx's for this test"
    before = posts_checksum(stack)
    body = {"title": "x", "body": "b" * (django_limit + 1000)}
    error = assert_json_error(alice.post(POSTS, json=body, timeout=60), 400, 413)
    assert error["code"] == "payload_too_large"
    assert posts_checksum(stack) == before


# --- malformed bodies --------------------------------------------------------------------------


def test_malformed_json_is_400(alice):
    for body in (b'{"title": ', b"{'title': 'x'}", b"\xff\xfe", b'{"title": "x"} trailing'):
        r = alice.post(POSTS, data=body, headers={"Content-Type": "application/json"})
        assert assert_json_error(r, 400)["code"] == "parse_error", body


def test_wrong_content_type_is_415(alice):
    # The API takes JSON only: form bodies too are refused (the schema lists JSON only).
    for content_type in (
        "text/plain",
        "application/xml",
        "image/png",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        r = alice.post(POSTS, data=b"title=x", headers={"Content-Type": content_type})
        assert_json_error(r, 415)


def test_hostile_bodies_are_4xx_and_change_nothing(stack, alice):
    before = posts_checksum(stack)
    deep = ("[" * 200_000 + "]" * 200_000).encode()  # 400 KB: under both size limits
    cases = [
        (POSTS, {"json": {"title": "nul\x00byte"}}),
        (POSTS, {"json": {"title": "ok", "body": "nul\x00byte"}}),
        (POSTS, {"data": deep, "headers": {"Content-Type": "application/json"}}),
        (POSTS, {"data": b'{"title":' * 100_000, "headers": {"Content-Type": "application/json"}}),
        (POSTS, {"json": {"title": {"nested": {"deeper": ["x"]}}}}),
        (POSTS, {"json": {"title": 12345}}),
        (POSTS, {"json": {"title": "x", "author": 1, "is_staff": True}}),
        (f"{POSTS}{alice.post_id}/", {"json": {"title": "x\x00"}, "method": "PATCH"}),
        ("/api/exports/", {"json": {"format": "csv; DROP TABLE posts_post;--"}}),
    ]
    for url, kwargs in cases:
        method = kwargs.pop("method", "POST")
        r = alice.request(method, url, **kwargs)
        assert_json_error(r, 400)
    assert posts_checksum(stack) == before


# --- query strings and paths -------------------------------------------------------------------


def test_hostile_query_strings_are_4xx_or_harmless(stack, alice):
    before = posts_checksum(stack)
    for params in (
        {"page_size": "100000000000000000000"},
        {"page_size": "1000"},
        {"page_size": "-1"},
        {"page": "0"},
        {"search": "a\x00b"},
        {"author_username": "\x00"},
        {"author": "1 OR 1=1"},
        {"ordering": "password"},
    ):
        assert_json_error(alice.get(POSTS, params=params), 400)
    # SQL-looking search text is just text: searched for, found nowhere, nothing changed; one
    # without a word of 3 letters or digits cannot use the search index and is refused (400).
    for text in SQL_LOOKING:
        r = alice.get(POSTS, params={"search": text})
        if re.search(r"[^\W_]{3}", text):
            assert r.status_code == 200, r.text
            assert r.json()["count"] == 0
        else:
            assert_json_error(r, 400)
    assert posts_checksum(stack) == before


def test_path_traversal_ids_are_404(stack, alice, client):
    before = posts_checksum(stack)
    for path in (
        "/api/posts/..%2F..%2Fetc%2Fpasswd/",
        "/api/posts/1%00/",
        "/api/posts/-1/",
        "/api/posts/99999999999999999999999/",
        "/api/exports/..%2F..%2F..%2Fetc%2Fpasswd/download/",
        "/api/exports/%2e%2e/download/",
        "/api/exports/00000000-0000-0000-0000-000000000000/download/",
        "/static/../config/settings.py",
        "/static/..%2F..%2Fapp%2Fconfig%2Fsettings.py",
        "/_protected/media/exports/",
    ):
        r = alice.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert "root:" not in r.text, path
        assert "SECRET_KEY" not in r.text, path
    assert posts_checksum(stack) == before


# --- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["https", "http"])
@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1"])
def test_unknown_host_is_dropped(base_url, http_url, which, host):
    """An unknown or bare-IP Host gets nginx's 444: the connection closed without a byte of
    response. The served name on the same port is answered, so nginx is there."""
    url = base_url if which == "https" else http_url
    assert raw_request(url, "localhost", POSTS).startswith(b"HTTP/1.1 "), url
    assert raw_request(url, host, POSTS) == b"", (url, host)


def test_spoofed_forwarded_proto_is_overwritten(alice, http_url):
    """Django trusts X-Forwarded-Proto from nginx only: a client claiming plain HTTP over HTTPS
    gets no redirect and the links the API builds stay https; claiming HTTPS over plain HTTP
    still gets the redirect to HTTPS."""
    alice.post(POSTS, json={"title": "second", "body": ""})
    r = alice.get(POSTS, params={"page_size": 1}, headers={"X-Forwarded-Proto": "http"})
    assert r.status_code == 200, r.status_code
    assert r.json()["next"].startswith("https://"), r.json()["next"]
    with Client(http_url) as plain:
        r = plain.get(POSTS, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert r.status_code in (301, 308), r.status_code
    assert r.headers["Location"].startswith("https://"), r.headers["Location"]


# The login throttle's counters in Redis (redis-py, the same server as Django's cache).
LOGIN_COUNTERS = (
    "import json, redis; from django.conf import settings; "
    "r = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True); "
    "keys = r.keys('*throttle_login_*'); "
)


def test_login_brute_force_is_throttled_whatever_x_forwarded_for_says(stack, base_url):
    """Bad passwords over fresh connections, each claiming another client address: the login
    throttle counts by the address nginx saw, in Redis (so across gunicorn workers), and answers
    429 with Retry-After by the (rate+1)th attempt at the latest."""
    rate = int(stack.env_value("DJANGO_THROTTLE_LOGIN", "10/min").split("/")[0])
    # A fresh window: one opened by earlier logins (make_user) could close half-way through
    # and let a new one start, so the 429 would come later than the rate says.
    manage_last_line(stack, LOGIN_COUNTERS + "r.delete(*keys) if keys else None; print('reset')")
    statuses = []
    for attempt in range(rate + 3):
        with Client(base_url) as c:
            spoofed = f"203.0.113.{attempt + 1}"
            r = c.post(
                "/api/auth/token/",
                json={"username": f"nobody-{uuid.uuid4().hex[:6]}", "password": "guess"},
                headers={"X-Forwarded-For": spoofed, "X-Real-IP": spoofed, "Connection": "close"},
            )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) > 0
            assert r.json()["error"]["code"] == "throttled"
            break
    assert 429 in statuses, statuses
    assert len(statuses) <= rate + 1, statuses
    assert set(statuses) <= {400, 429}, statuses
    # The counter lives in Redis, under nginx's view of the client, never a spoofed address
    # (a hit count: apps/core/cache.py).
    counts = json.loads(
        manage_last_line(
            stack, LOGIN_COUNTERS + "print(json.dumps({k: int(r.get(k)) for k in keys}))"
        )
    )
    assert counts
    assert max(counts.values()) >= rate, counts
    assert not any("203.0.113." in key for key in counts), counts


# --- slow clients ------------------------------------------------------------------------------


def test_slow_header_clients_are_cut_off_while_others_are_served(http_url, client):
    """Slowloris, bounded: a few sockets send header lines one at a time, a second apart.
    nginx's client_header_timeout closes each; a normal request meanwhile completes."""
    host, port = urlsplit(http_url).hostname, urlsplit(http_url).port
    assert host == "127.0.0.1"
    slow = []
    for _ in range(5):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /api/posts/ HTTP/1.1\r\nHost: localhost\r\n")
        slow.append(s)
    open_sockets, served = set(slow), None
    deadline = time.monotonic() + 60
    try:
        for tick in range(60):
            if not open_sockets or time.monotonic() > deadline:
                break
            for s in list(open_sockets):
                try:
                    s.sendall(f"X-Slow-{tick}: x\r\n".encode())
                    # Readable: nginx closed it (EOF) or answered it (408/400): cut off.
                    readable, _, _ = select.select([s], [], [], 0)
                    if readable:
                        open_sockets.discard(s)
                except OSError:
                    open_sockets.discard(s)
            if tick == 3:  # all slow clients are holding their connections now
                served = client.get(POSTS).status_code
            time.sleep(1)
    finally:
        for s in slow:
            s.close()
    assert served == 200
    assert not open_sockets, f"{len(open_sockets)} slow clients still connected after 60 s"


# --- other users' data -------------------------------------------------------------------------


def wait_for_export(user, export_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = user.get(f"/api/exports/{export_id}/").json()
        if export["status"] in ("done", "failed"):
            return export
        time.sleep(0.5)
    pytest.fail(f"export {export_id} not finished after {timeout}s")


def test_another_users_export_and_post_are_out_of_reach(stack, alice, bob, client):
    r = alice.post("/api/exports/", json={"format": "json"})
    assert r.status_code == 202, r.text
    export = wait_for_export(alice, r.json()["id"])
    assert export["status"] == "done"
    own = f"/api/exports/{export['id']}/"
    assert alice.get(own + "download/").status_code == 200
    before = posts_checksum(stack)

    # Exports: bob sees none of alice's, by id or in his list; anonymous clients get 401.
    for path in (own, own + "download/"):
        assert_json_error(bob.get(path), 404)
        assert_json_error(client.get(path), 401)
    assert export["id"] not in [e["id"] for e in bob.get("/api/exports/").json()["results"]]
    for method in ("PUT", "PATCH", "DELETE"):
        assert_json_error(bob.request(method, own, json={"format": "csv"}), 404, 405)
    # nginx's file location is internal: the file cannot be fetched directly.
    code = "from apps.exports.models import Export; print(Export.objects.get(pk=%r).relative_path)"
    relative = manage_last_line(stack, code % export["id"])
    assert client.get(f"/_protected/media/{relative}").status_code == 404

    # Posts are public to read; only the author changes or deletes them.
    post = f"{POSTS}{alice.post_id}/"
    assert_json_error(bob.patch(post, json={"title": "hijacked"}), 403)
    assert_json_error(bob.put(post, json={"title": "hijacked", "body": ""}), 403)
    assert_json_error(bob.delete(post), 403)
    assert_json_error(client.patch(post, json={"title": "hijacked"}), 401)
    assert_json_error(client.delete(post), 401)
    assert posts_checksum(stack) == before
    assert alice.get(post).json()["title"] == "alice's post"


def test_the_stack_is_still_healthy_afterwards(stack, client):
    """None of the requests above left web or nginx unhealthy."""
    stack.wait_healthy("web", timeout=30)
    stack.wait_healthy("nginx", timeout=30)
    assert client.get(POSTS).status_code == 200
