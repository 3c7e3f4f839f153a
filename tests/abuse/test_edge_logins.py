"""Password guessing from one address, at the edge: POST /admin/login/ and POST
/api/auth/token/ share one nginx limit_req bucket per client address (NGINX_LOGIN_RATE,
NGINX_LOGIN_BURST). Beyond it nginx answers the API's JSON 429 with Retry-After before gunicorn
(and its PBKDF2 hash) sees the request; another address still logs in meanwhile. /readyz is not
served to the public (docs/reliability.md, "Threats and limits")."""

import re
import subprocess
import threading
import time
import uuid

from abuselib import record_figures

from conftest import Client

ATTACK_SECONDS = 30
ATTACKERS = 4  # threads, each alternating admin login and token endpoint
PAUSE = 0.1  # seconds between one attacker's requests: at most ~40 attempts a second in all
EDGE_DETAIL = "Too many login attempts"  # nginx's refusal (snippets/json-errors.conf)


def nginx_env(stack) -> dict:
    (container,) = stack.container_ids("nginx")
    pairs = (item.split("=", 1) for item in stack.inspect(container)["Config"]["Env"])
    return dict(pairs)


def per_second(rate: str) -> float:
    number, unit = re.fullmatch(r"(\d+)r/([sm])", rate).groups()
    return int(number) / (60 if unit == "m" else 1)


class Attack:
    """ATTACKERS threads guessing passwords of unknown users for ATTACK_SECONDS; every answer
    is classified. Unknown users: Django hashes the guess anyway (timing), and no per-username
    lockout gets involved."""

    def __init__(self, client_factory):
        self.client_factory = client_factory
        self.lock = threading.Lock()
        self.counts = {"hashed": 0, "app_throttled": 0, "edge_refused": 0}
        self.others: list[str] = []
        self.refusals: list = []  # a few of nginx's 429s, checked after the run
        self.stop = threading.Event()

    def count(self, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1

    def classify(self, r, hashed_status: int, what: str) -> None:
        # The admin form shown again with its error, the token endpoint's 400: a guess checked.
        checked = what == "token" or "enter the correct" in r.text
        if r.status_code == hashed_status and checked:
            self.count("hashed")
        elif r.status_code == 429 and EDGE_DETAIL in r.text:
            self.count("edge_refused")
            with self.lock:
                if len(self.refusals) < 20:
                    self.refusals.append(r)
        elif r.status_code == 429 and what == "token":
            self.count("app_throttled")  # the API's own throttle (10/min): no hash either
        else:
            with self.lock:
                self.others.append(f"{what} {r.status_code} {r.text[:200]}")

    def attacker(self) -> None:
        with self.client_factory() as c:
            form = c.get("/admin/login/")
            assert form.status_code == 200, form.status_code
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            # Django compares the Referer with the Host nginx passes on ($host: no port).
            referer = "https://localhost/admin/login/"
            while not self.stop.is_set():
                guess = {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "guess"}
                r = c.post(
                    "/admin/login/",
                    data={**guess, "csrfmiddlewaretoken": csrf},
                    headers={"Referer": referer},
                )
                self.classify(r, 200, "admin")
                r = c.post("/api/auth/token/", json=guess)
                self.classify(r, 400, "token")
                self.stop.wait(PAUSE)

    def run(self, during) -> tuple[float, object]:
        threads = [threading.Thread(target=self.attacker) for _ in range(ATTACKERS)]
        start = time.monotonic()
        for t in threads:
            t.start()
        try:
            time.sleep(ATTACK_SECONDS / 3)
            result = during()
            time.sleep(max(0.0, ATTACK_SECONDS - (time.monotonic() - start)))
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=30)
        return time.monotonic() - start, result


def login_from_another_address(stack, username: str, password: str) -> tuple[int, float]:
    """The right password sent from another address: a container on the stack's frontend
    network (the web image's Python), straight to nginx's HTTPS port. TLS unverified: the
    certificate names localhost, not the nginx service."""
    (web,) = stack.container_ids("web")[:1]
    image = stack.inspect(web)["Config"]["Image"]
    script = (
        "import json, ssl, sys, time, urllib.request, urllib.error\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        f"body = json.dumps({{'username': {username!r}, 'password': {password!r}}}).encode()\n"
        "req = urllib.request.Request('https://nginx:8443/api/auth/token/', data=body, headers="
        "{'Host': 'localhost', 'Content-Type': 'application/json'})\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    status = urllib.request.urlopen(req, context=ctx, timeout=20).status\n"
        "except urllib.error.HTTPError as e:\n"
        "    status = e.code\n"
        "print('RESULT', status, round(time.monotonic() - start, 3))\n"
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", f"{stack.project}_frontend", image,
         "python", "-c", script],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "RESULT" in done.stdout, done.stdout + done.stderr
    status, seconds = done.stdout.split("RESULT", 1)[1].split()
    return int(status), float(seconds)


def test_password_guessing_from_one_address_is_refused_at_the_edge(request, stack, base_url):
    env = nginx_env(stack)
    rate, burst = env["NGINX_LOGIN_RATE"], int(env["NGINX_LOGIN_BURST"])
    username, password = f"edge-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    stack.manage(
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({username!r}, password={password!r})"
    )
    attack = Attack(lambda: Client(base_url))
    elapsed, (other_status, other_seconds) = attack.run(
        lambda: login_from_another_address(stack, username, password)
    )

    counts = attack.counts
    reached = counts["hashed"] + counts["app_throttled"]
    allowed = burst + per_second(rate) * elapsed
    record_figures(
        request,
        "edge: password guessing from one address (admin login + token endpoint)",
        seconds=round(elapsed, 1),
        attempts=reached + counts["edge_refused"] + len(attack.others),
        refused_by_nginx=counts["edge_refused"],
        reached_gunicorn=reached,
        passwords_hashed=counts["hashed"],
        hashed_per_minute=round(counts["hashed"] * 60 / elapsed, 1),
        refused_per_minute=round(counts["edge_refused"] * 60 / elapsed, 1),
        edge_rate=rate,
        edge_burst=burst,
        other_address_login_status=other_status,
        other_address_login_seconds=other_seconds,
    )
    assert not attack.others, attack.others[:5]
    assert counts["edge_refused"] > 0, counts
    # The bucket: the burst at once, then the rate (nginx counts in milliseconds; one spare).
    assert reached <= allowed + 1, (counts, allowed)
    for r in attack.refusals:
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        error = r.json()["error"]
        assert (error["status"], error["code"]) == (429, "throttled"), error
        assert int(r.headers["Retry-After"]) >= 1, r.headers
    # The limit is per address: the right password from another address logs in meanwhile.
    assert other_status == 200, other_status
    # No wait for the bucket to refill: the suites after this one make their users without a
    # login request (conftest.make_user), and the few logins left wait for Retry-After when
    # refused (conftest.log_in, test_auth_login.past_the_edge).


def test_readyz_is_not_served_to_the_public(request, client):
    """Readiness names the stack's dependencies: nginx answers it as an unknown path (monitors
    use `make readyz`, tested in tests/e2e); the liveness probe stays public."""
    r = client.get("/readyz")
    record_figures(request, "edge: /readyz from outside", status=r.status_code)
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert r.json()["error"]["code"] == "not_found", r.text
    assert "database" not in r.text
    assert client.get("/healthz").status_code == 200
