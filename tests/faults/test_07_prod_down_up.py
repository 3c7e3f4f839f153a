"""Fault 4: `make prod-down` then `make prod-up` keep users, posts, exports and their files.
Runs last: the stack comes back on a new loopback port."""

import hashlib
import os
import subprocess
from urllib.parse import urlsplit

from faultlib import ROOT, record, wait_for


def make(stack, target: str) -> None:
    done = subprocess.run(
        ["make", target, f"PROD_PROJECT={stack.project}", f"PROD_ENV={stack.env_file}"],
        cwd=ROOT, check=False, capture_output=True, text=True, timeout=600,
        env={**os.environ, "COMPOSE_BAKE": "false"},
    )  # fmt: skip
    assert done.returncode == 0, (
        f"make {target} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )


def test_prod_down_then_up_keeps_everything(stack, make_user):
    alice = make_user("keeper")
    post = alice.post("/api/posts/", json={"title": "survivor", "body": "still here"}).json()
    export = alice.post("/api/exports/", json={"format": "csv"}).json()
    url = f"/api/exports/{export['id']}/"
    wait_for(lambda: alice.get(url).json()["status"] == "done", 60, "export not done")
    file_before = hashlib.sha256(alice.get(url + "download/").content).hexdigest()

    make(stack, "prod-down")
    assert stack.container_ids("web") == []
    make(stack, "prod-up")

    # Same scheme as before (HTTPS on 8443 when the stack serves TLS), new free port.
    scheme = urlsplit(alice.base_url).scheme
    port = stack.compose("port", "nginx", "8443" if scheme == "https" else "8080")
    after = type(alice)(f"{scheme}://127.0.0.1:{port.strip().rsplit(':', 1)[1]}")
    after.headers["Authorization"] = alice.headers["Authorization"]  # the user and token
    me = after.get("/api/me/").json()
    assert me["username"] == alice.username
    kept_post = after.get(f"/api/posts/{post['id']}/").json()
    assert kept_post["body"] == "still here"
    kept = after.get(url).json()
    assert kept["status"] == "done", kept
    r = after.get(url + "download/")
    assert r.status_code == 200
    file_after = hashlib.sha256(r.content).hexdigest()
    assert file_after == file_before
    record(
        "prod-down/prod-up",
        users_kept=int(me["username"] == alice.username),
        posts_kept=int(kept_post["body"] == "still here"),
        exports_kept=int(kept["status"] == "done"),
        files_kept=int(file_after == file_before),
    )
