"""Password guessing through nginx on the prod stack: the per-username lockout on the token
endpoint and /admin/login/ (apps/accounts/lockout.py), another user's login during the attack,
and the login limits failing closed while Redis is full.

All test traffic reaches nginx from one address, where an attacker and a user would not share
one: each case starts with the per-address login counters at zero (LoginRateThrottle) so what
answers is the per-username lockout, and leaves every counter it touched cleared.
"""

import re
import statistics
import subprocess
import time
import uuid

import pytest
from abuselib import record_figures, timed

from conftest import ROOT, Client

TOKEN_URL = "/api/auth/token/"
ADMIN_LOGIN = "/admin/login/"
HASHED_ADMIN = "Please enter the correct"
LOCKED_ADMIN = "Too many login attempts for this username"
UNAVAILABLE_ADMIN = "Login is temporarily unavailable"
CHUNK = 1024 * 1024  # bytes per junk key while filling Redis
JUNK = "abuse:auth:junk:"

# The login counters in Redis (the cache's database): the per-address throttle and the
# per-username lockout.
LOGIN_KEYS = (
    "import redis; from django.conf import settings; "
    "r = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True); "
    "keys = r.keys('*throttle_login_*') + r.keys('*login:attempts:*'); "
    "r.delete(*keys) if keys else None; print(len(keys))"
)


@pytest.fixture
def lockout_attempts(stack) -> int:
    return int(stack.env_value("DJANGO_LOGIN_LOCKOUT_ATTEMPTS", "5"))


@pytest.fixture
def login_counters(stack):
    """Login counters at zero before the case and cleared after it (the stack stays usable)."""
    stack.manage(LOGIN_KEYS)
    yield
    stack.manage(LOGIN_KEYS)


@pytest.fixture
def users(stack):
    """make(staff=False) -> (username, password) of a new user in the stack's database."""

    def make(prefix: str, staff: bool = False) -> tuple[str, str]:
        username, password = f"{prefix}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        stack.manage(
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_user({username!r}, password={password!r}, "
            f"is_staff={staff!r})"
        )
        return username, password

    return make


# nginx's per-address login bucket (NGINX_LOGIN_BURST, NGINX_LOGIN_RATE) is shared by every
# suite on the stack (fuzz and e2e log in too), so it may be empty when a case starts. Its
# refusal comes before gunicorn: the app never sees that attempt.
EDGE_REFUSAL = "Too many login attempts from this address"
EDGE_WAIT_BOUND = 90


def past_the_edge(send):
    """``send()`` once; when nginx's login bucket refused it (its JSON 429, not the app's), wait
    its Retry-After and send again, as a client does, for at most EDGE_WAIT_BOUND seconds."""
    deadline = time.monotonic() + EDGE_WAIT_BOUND
    while True:
        response, seconds = send()
        if response.status_code != 429 or EDGE_REFUSAL not in response.text:
            return response, seconds
        assert time.monotonic() < deadline, "nginx's login limit never let the login through"
        time.sleep(int(response.headers["Retry-After"]))


def token_login(base_url: str, username: str, password: str):
    def send():
        with Client(base_url) as c:
            return timed(c.post, TOKEN_URL, json={"username": username, "password": password})

    return past_the_edge(send)


def admin_login(stack, base_url: str, username: str, password: str):
    """One admin login as a browser does it: the form (CSRF cookie), then the POST, from the
    site's public origin (nginx passes the Host without the test's port)."""
    return past_the_edge(lambda: _admin_login_once(stack, base_url, username, password))


def _admin_login_once(stack, base_url: str, username: str, password: str):
    origin = stack.env_value("DJANGO_CSRF_TRUSTED_ORIGINS", "https://localhost").split(",")[0]
    with Client(base_url) as browser:
        page = browser.get(ADMIN_LOGIN)
        assert page.status_code == 200, page.status_code
        form = {
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            "username": username,
            "password": password,
            "next": "/admin/",
        }
        headers = {"Origin": origin, "Referer": origin + ADMIN_LOGIN}
        return timed(browser.post, ADMIN_LOGIN, data=form, headers=headers)


def median_ms(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds) * 1000, 1) if seconds else None


@pytest.mark.usefixtures("login_counters")
def test_token_brute_force_on_one_username(request, base_url, users, lockout_attempts):
    """Wrong passwords for one username: the first DJANGO_LOGIN_LOCKOUT_ATTEMPTS reach the
    password hasher (400), every later one, the right password included, is refused before it
    (429 login_locked, Retry-After); another user logs in meanwhile."""
    victim, victim_password = users("victim")
    other, other_password = users("bystander")
    attempts = lockout_attempts + 3  # with the right passwords below: under 10/min per address
    started = time.monotonic()
    answers = [token_login(base_url, victim, f"guess-{i}") for i in range(attempts)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r, _ in answers]
    assert statuses == [400] * lockout_attempts + [429] * 3, statuses
    for r, _ in answers[lockout_attempts:]:
        assert r.json()["error"]["code"] == "login_locked"
        assert int(r.headers["Retry-After"]) > 0

    right, _ = token_login(base_url, victim, victim_password)
    assert right.status_code == 429, right.text
    assert right.json()["error"]["code"] == "login_locked"
    theirs, other_seconds = token_login(base_url, other, other_password)
    assert theirs.status_code == 200, theirs.text
    with Client(base_url) as c:
        me = c.get("/api/me/", headers={"Authorization": f"Token {theirs.json()['token']}"})
    assert me.json()["username"] == other

    window = int(request.getfixturevalue("stack").env_value("DJANGO_LOGIN_LOCKOUT_SECONDS", "900"))
    record_figures(
        request,
        "auth_token_brute_force",
        attempts=attempts + 1,
        hashed=statuses.count(400),
        refused_before_hasher=statuses.count(429) + 1,
        hashed_answer_median_ms=median_ms([s for r, s in answers if r.status_code == 400]),
        refused_answer_median_ms=median_ms([s for r, s in answers if r.status_code == 429]),
        attack_seconds=round(elapsed, 2),
        hashed_per_minute_at_most=round(lockout_attempts * 60 / window, 2),
        other_user_login_ms=round(other_seconds * 1000, 1),
    )


@pytest.mark.usefixtures("login_counters")
def test_admin_brute_force_on_one_username(request, stack, base_url, users, lockout_attempts):
    """The same on /admin/login/, which has no per-address limit in the app: the form says
    "wrong password" DJANGO_LOGIN_LOCKOUT_ATTEMPTS times, then that the username is locked,
    also for the right password; another staff user gets in meanwhile."""
    victim, victim_password = users("admin-victim", staff=True)
    other, other_password = users("admin-bystander", staff=True)
    attempts = lockout_attempts + 5
    started = time.monotonic()
    answers = [admin_login(stack, base_url, victim, f"guess-{i}") for i in range(attempts)]
    elapsed = time.monotonic() - started
    kinds = []
    for r, _ in answers:
        assert r.status_code == 200, r.status_code  # the form again: not logged in
        kinds.append(
            "hashed" if HASHED_ADMIN in r.text else "locked" if LOCKED_ADMIN in r.text else "?"
        )
    assert kinds == ["hashed"] * lockout_attempts + ["locked"] * 5, kinds

    right, _ = admin_login(stack, base_url, victim, victim_password)
    assert right.status_code == 200, right.status_code
    assert LOCKED_ADMIN in right.text
    theirs, other_seconds = admin_login(stack, base_url, other, other_password)
    assert theirs.status_code == 302, theirs.status_code
    assert theirs.headers["Location"] == "/admin/"

    hashed = [s for (r, s), kind in zip(answers, kinds, strict=True) if kind == "hashed"]
    refused = [s for (r, s), kind in zip(answers, kinds, strict=True) if kind == "locked"]
    record_figures(
        request,
        "auth_admin_brute_force",
        attempts=attempts + 1,
        hashed=len(hashed),
        refused_before_hasher=len(refused) + 1,
        hashed_answer_median_ms=median_ms(hashed),
        refused_answer_median_ms=median_ms(refused),
        attack_seconds=round(elapsed, 2),
        other_user_login_ms=round(other_seconds * 1000, 1),
    )


# --- Redis full: the login limits fail closed ---------------------------------------------------


def redis_cli(stack, *args: str, stdin: str = "") -> str:
    """redis-cli in the redis container, authenticated as its health check is; its output
    (error replies included: redis-cli exits non-zero on them)."""
    script = (
        ". /usr/local/bin/docker-entrypoint.sh; file_env REDIS_PASSWORD; "
        'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli --no-auth-warning "$@"'
    )
    cmd = [*stack.compose_command, "exec", "-T", "redis", "bash", "-c", script, "redis-cli", *args]
    done = subprocess.run(
        cmd, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout + done.stderr


def memory(stack) -> tuple[int, int]:
    info = redis_cli(stack, "INFO", "memory")
    used = int(re.search(r"^used_memory:(\d+)", info, re.MULTILINE).group(1))
    limit = int(re.search(r"^maxmemory:(\d+)", info, re.MULTILINE).group(1))
    return used, limit


@pytest.mark.usefixtures("login_counters")
def test_logins_are_refused_while_redis_is_full(request, stack, base_url, users):
    """Redis filled to maxmemory (noeviction: writes answer OOM) with a bounded number of
    1 MiB junk keys: token and admin logins are refused (503 login_unavailable, the form says
    so), anonymous reads stay served (their throttle fails open); with the keys deleted,
    logins work again."""
    username, password = users("redis-full", staff=True)
    used, limit = memory(stack)
    assert limit > 0, "redis has no maxmemory: it cannot be filled to a limit"
    keys = [f"{JUNK}{i}" for i in range((limit - used) // CHUNK + 16)] + [f"{JUNK}probe"]
    try:
        redis_cli(stack, stdin="".join(f"SETRANGE {k} {CHUNK - 1} x\n" for k in keys[:-1]))
        probe = redis_cli(stack, "SET", f"{JUNK}probe", "x")
        assert "OOM" in probe, f"redis still takes writes: {probe!r} ({memory(stack)})"

        token, token_seconds = token_login(base_url, username, password)
        assert token.status_code == 503, token.text
        assert token.json()["error"]["code"] == "login_unavailable"
        assert int(token.headers["Retry-After"]) > 0
        admin, _ = admin_login(stack, base_url, username, password)
        assert admin.status_code == 200, admin.status_code
        assert UNAVAILABLE_ADMIN in admin.text
        with Client(base_url) as c:
            reads = c.get("/api/posts/", params={"page_size": 1})
        assert reads.status_code == 200, reads.status_code
    finally:
        for low in range(0, len(keys), 200):
            redis_cli(stack, "DEL", *keys[low : low + 200])
    assert redis_cli(stack, "EXISTS", *keys).strip() == "0"
    again, _ = token_login(base_url, username, password)
    assert again.status_code == 200, again.text
    record_figures(
        request,
        "auth_redis_full_login",
        junk_keys=len(keys),
        maxmemory_mib=round(limit / CHUNK, 1),
        refused_status=token.status_code,
        refused_answer_ms=round(token_seconds * 1000, 1),
        anonymous_read_status=reads.status_code,
        login_after_cleanup_status=again.status_code,
    )
