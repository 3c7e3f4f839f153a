"""CORS through nginx: a browser page on an allowed origin (DJANGO_CORS_ALLOWED_ORIGINS, which
scripts/test.sh sets for the test stack) gets its preflight and its answers allowed; any other
origin gets no CORS header, so the browser keeps the answer from the page."""

import time

import pytest

POSTS = "/api/posts/"


@pytest.fixture(scope="module")
def allowed_origin(stack) -> str:
    origins = [o for o in stack.env_value("DJANGO_CORS_ALLOWED_ORIGINS").split(",") if o]
    assert origins, "the test stack's env file sets no DJANGO_CORS_ALLOWED_ORIGINS"
    return origins[0]


def preflight(client, origin: str):
    """What a browser sends before a cross-origin POST with a token and a JSON body."""
    return client.options(
        POSTS,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_preflight_from_the_allowed_origin_passes_nginx(client, allowed_origin):
    r = preflight(client, allowed_origin)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Access-Control-Allow-Origin"] == allowed_origin
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "origin" in r.headers["Vary"].lower()


def test_preflight_from_another_origin_gets_no_cors_headers(client, allowed_origin):
    r = preflight(client, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Methods" not in r.headers


def test_the_allowed_origin_reads_answers_and_their_headers(make_user, allowed_origin):
    alice = make_user("cors")
    r = alice.post(POSTS, json={"title": "cors", "body": ""}, headers={"Origin": allowed_origin})
    assert r.status_code == 201, r.text[:300]
    assert r.headers["Access-Control-Allow-Origin"] == allowed_origin
    exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "X-Request-ID"} <= exposed
    r = alice.get(POSTS, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers


def test_the_allowed_origin_reads_an_export_download(make_user, allowed_origin):
    """nginx streams the file from its internal location (X-Accel-Redirect), which keeps the
    API's CORS headers: a page on the allowed origin can read the download, another cannot."""
    alice = make_user("cors-export")
    r = alice.post("/api/exports/", json={"format": "csv"})
    assert r.status_code == 202, r.text[:300]
    url = f"/api/exports/{r.json()['id']}/"
    deadline = time.monotonic() + 60
    while alice.get(url).json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, "export not finished after 60 s"
        time.sleep(0.25)
    r = alice.get(url + "download/", headers={"Origin": allowed_origin})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Access-Control-Allow-Origin"] == allowed_origin
    assert "Content-Disposition" in r.headers["Access-Control-Expose-Headers"]
    r = alice.get(url + "download/", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers
