"""The dataset: seeded users with API tokens and posts, a static file to load, and the cursor of
a deep page."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.parse
import urllib.request

from bench.config import HOST, POSTS, USERS
from bench.console import fail, log
from bench.stack import Stack


def seed(stack: Stack) -> dict:
    """USERS users with API tokens and POSTS posts, straight into PostgreSQL in batches of
    10,000 rows (INSERT ... SELECT generate_series): ~100,000 posts in seconds."""
    start = time.monotonic()
    stack.psql(f"""
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        SELECT '!', false, 'bench' || lpad(i::text, 3, '0'), '', '', '', false, true, now()
        FROM generate_series(1, {USERS}) AS i;
    """)
    # API tokens as knox stores them (apps/accounts): the SHA-512 digest and the first 15
    # characters; the tokens themselves stay here, for the load generator.
    ids = stack.psql("SELECT id FROM auth_user WHERE username LIKE 'bench%' ORDER BY id;").split()
    tokens = [secrets.token_hex(32) for _ in ids]
    rows = ", ".join(
        f"('{hashlib.sha512(t.encode()).hexdigest()}', '{t[:15]}', {int(i)}, now())"
        for t, i in zip(tokens, ids, strict=True)
    )
    stack.psql(f"INSERT INTO knox_authtoken (digest, token_key, user_id, created) VALUES {rows};")
    batch = 10_000
    for low in range(1, POSTS + 1, batch):
        high = min(low + batch - 1, POSTS)
        stack.psql(f"""
            INSERT INTO posts_post (author_id, title, body, created_at, updated_at)
            SELECT u.ids[1 + i % {USERS}],
                   'Benchmark post number ' || i,
                   'Post ' || i || ' of the benchmark dataset. ' ||
                   repeat('Django REST stack behind nginx with PostgreSQL and Redis. ', 5),
                   now() - ({POSTS} - i) * interval '1 second',
                   now() - ({POSTS} - i) * interval '1 second'
            FROM generate_series({low}, {high}) AS i,
                 (SELECT array_agg(id ORDER BY id) AS ids FROM auth_user
                  WHERE username LIKE 'bench%') AS u;
        """)
        log(f"seed: posts {high:,}/{POSTS:,}")
    stack.psql("VACUUM ANALYZE;")
    low, high = stack.psql("SELECT min(id) || ' ' || max(id) FROM posts_post;").split()
    seconds = round(time.monotonic() - start, 1)
    log(f"seed: {USERS} users, {POSTS:,} posts in {seconds}s")
    return {"tokens": tokens, "id_min": int(low), "id_max": int(high), "seconds": seconds}


def static_path(stack: Stack) -> str:
    """A ~1 KB file collected into the nginx image."""
    out = stack.compose(
        "exec",
        "-T",
        "nginx",
        "sh",
        "-c",
        "find /srv/static -type f -name '*.svg' -size -1300c -size +700c | sort | head -1",
    ).stdout.strip()
    if not out:
        fail("no ~1 KB static file found in the nginx image")
    return out.replace("/srv/static/", "/static/", 1)


def deep_cursor_path(nginx: str, token: str, page: int, page_size: int = 20) -> str:
    """The path of page `page` (of `page_size` posts) by cursor: `?cursor=` pages of up to 100
    posts are followed past the posts before it, and the `next` link's cursor is kept (the
    page size is a parameter of each request, not part of the cursor)."""
    skip = (page - 1) * page_size
    query = {"cursor": ""}
    while skip > 0:
        size = min(100, skip)
        url = f"{nginx}/api/posts/?{urllib.parse.urlencode({**query, 'page_size': size})}"
        request = urllib.request.Request(url, headers={"Host": HOST, "Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        if not body.get("next"):
            fail(f"the cursor walk to page {page} ran out of posts ({url})")
        query = {"cursor": urllib.parse.parse_qs(urllib.parse.urlsplit(body["next"]).query)["cursor"][0]}
        skip -= size
    return "/api/posts/?" + urllib.parse.urlencode(query)
