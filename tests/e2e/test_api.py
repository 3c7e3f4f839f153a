"""The API through nginx, as a client sees it: tokens, posts, permissions, exports."""

import csv
import io
import json
import time

import pytest

from conftest import log_in


def test_token_and_me(make_user, client):
    alice = make_user("alice")
    r = log_in(client, alice.username, alice.password)
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Token {r.json()['token']}"
    r = client.get("/api/me/")
    assert r.status_code == 200
    assert r.json()["username"] == alice.username


def test_wrong_password_gets_no_token(client):
    r = client.post("/api/auth/token/", json={"username": "nobody", "password": "wrong"})
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/json")


def test_post_crud_and_permissions(make_user, client):
    alice, bob = make_user("alice"), make_user("bob")

    r = client.post("/api/posts/", json={"title": "anon", "body": "x"})
    assert r.status_code == 401

    r = alice.post("/api/posts/", json={"title": "Hello", "body": "First post"})
    assert r.status_code == 201, r.text
    post = r.json()
    assert post["author"]["username"] == alice.username
    url = f"/api/posts/{post['id']}/"

    # Reads are public.
    assert client.get(url).json()["title"] == "Hello"

    # Only the author may change or delete.
    assert bob.patch(url, json={"title": "mine now"}).status_code == 403
    assert bob.delete(url).status_code == 403
    r = alice.patch(url, json={"title": "Hello again"})
    assert r.status_code == 200, r.status_code
    assert r.json()["title"] == "Hello again"

    listing = client.get("/api/posts/", params={"author": post["author"]["id"]}).json()
    assert [p["id"] for p in listing["results"]] == [post["id"]]

    assert alice.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_validation_error_is_json_400(make_user):
    alice = make_user("alice")
    r = alice.post("/api/posts/", json={"title": "", "body": "x"})
    assert r.status_code == 400
    assert "title" in json.dumps(r.json())


def wait_for_export(user, export_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        export = user.get(f"/api/exports/{export_id}/").json()
        if export["status"] in ("done", "failed"):
            return export
        time.sleep(0.25)
    pytest.fail(f"export {export_id} not finished after {timeout}s: {export}")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_runs_on_the_worker_and_downloads_through_nginx(make_user, fmt):
    alice, bob = make_user("alice"), make_user("bob")
    titles = [f'Post {i}, with "quotes" and commas' for i in range(25)]
    for i, title in enumerate(titles):
        r = alice.post("/api/posts/", json={"title": title, "body": f"body {i}\nline two"})
        assert r.status_code == 201
    bob.post("/api/posts/", json={"title": "not alice's", "body": "-"})

    r = alice.post("/api/exports/", json={"format": fmt})
    assert r.status_code == 202, r.text
    export = r.json()
    assert export["status"] == "queued"
    assert r.headers["Location"].endswith(f"/api/exports/{export['id']}/")

    export = wait_for_export(alice, export["id"])
    assert export["status"] == "done", export
    assert export["row_count"] == 25

    # Another user cannot see or download it.
    assert bob.get(f"/api/exports/{export['id']}/").status_code == 404
    assert bob.get(f"/api/exports/{export['id']}/download/").status_code == 404

    r = alice.get(f"/api/exports/{export['id']}/download/", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert "attachment" in r.headers["Content-Disposition"]
    # Streamed by nginx from the media volume (X-Accel-Redirect): nginx's static-file
    # handler adds ETag and byte ranges, and the internal location's Cache-Control.
    assert r.headers.get("Accept-Ranges") == "bytes"
    assert "ETag" in r.headers
    assert r.headers["Cache-Control"] == "private, no-store"

    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))
    else:
        rows = r.json()
    assert sorted(row["title"] for row in rows) == sorted(titles)
    by_title = {row["title"]: row for row in rows}
    for i, title in enumerate(titles):
        assert by_title[title]["body"] == f"body {i}\nline two"


def test_protected_media_is_not_reachable_directly(make_user):
    """The finished file exists and its owner downloads it (nginx serves it from the internal
    location by X-Accel-Redirect); the same file at the internal location's URL is a 404."""
    alice = make_user("alice")
    r = alice.post("/api/exports/", json={"format": "csv"})
    assert r.status_code == 202, r.text
    export = wait_for_export(alice, r.json()["id"])
    assert export["status"] == "done", export
    download = alice.get(f"/api/exports/{export['id']}/download/")
    assert download.status_code == 200, download.status_code
    assert download.content
    r = alice.get(f"/_protected/media/exports/{export['id']}.csv")
    assert r.status_code == 404
