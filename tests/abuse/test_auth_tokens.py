"""Token revocation through nginx on the prod stack: a revoked token (logout, password change,
deactivation) is refused by the very next request, on whichever web worker answers it; the
database holds digests, never a usable token."""

import json
import time

from abuselib import record_figures

ME = "/api/me/"
FOLLOW_UPS = 5  # requests right after each revocation: every one must be refused


def refused_after(client, revoke) -> tuple[list[int], float]:
    """Revoke (a callable), then FOLLOW_UPS requests with the old token: their statuses and the
    milliseconds from the revocation's end to the first answer."""
    assert client.get(ME).status_code == 200
    revoke()
    done = time.monotonic()
    statuses = [client.get(ME).status_code for _ in range(FOLLOW_UPS)]
    return statuses, round((time.monotonic() - done) * 1000 / FOLLOW_UPS, 1)


def on_user(stack, username: str, code: str) -> None:
    stack.manage(
        "from django.contrib.auth import get_user_model; "
        f"u = get_user_model().objects.get(username={username!r}); {code}"
    )


def test_revoked_tokens_are_refused_by_the_next_request(request, stack, make_user):
    logged_out = make_user("logout")
    statuses, logout_ms = refused_after(
        logged_out, lambda: logged_out.post("/api/auth/logout/").raise_for_status()
    )
    assert statuses == [401] * FOLLOW_UPS, statuses

    changed = make_user("password")
    statuses_pw, _ = refused_after(
        changed,
        lambda: on_user(stack, changed.username, "u.set_password('An0ther-pass'); u.save()"),
    )
    assert statuses_pw == [401] * FOLLOW_UPS, statuses_pw

    deactivated = make_user("inactive")
    statuses_off, _ = refused_after(
        deactivated, lambda: on_user(stack, deactivated.username, "u.is_active = False; u.save()")
    )
    assert statuses_off == [401] * FOLLOW_UPS, statuses_off

    record_figures(
        request,
        "auth_token_revocation",
        served_after_logout=statuses.count(200),
        served_after_password_change=statuses_pw.count(200),
        served_after_deactivation=statuses_off.count(200),
        refused_answer_ms=logout_ms,
    )


def test_the_database_holds_no_usable_token(request, stack, make_user):
    """What a backup would hold: the token table's rows. None of them is the token, and the
    digest sent as a token is refused."""
    client = make_user("digest")
    token = client.headers["Authorization"].split(" ", 1)[1]
    rows = (
        stack.manage(
            "from knox.models import AuthToken; "
            f"print(list(AuthToken.objects.filter(user__username={client.username!r})"
            ".values_list('digest', 'token_key')))"
        )
        .strip()
        .splitlines()[-1]
    )
    assert token not in rows
    digest = rows.split("'")[1]
    assert client.get(ME, headers={"Authorization": f"Token {digest}"}).status_code == 401
    assert client.get(ME).status_code == 200
    record_figures(
        request, "auth_token_at_rest", token_in_table=token in rows, digest_chars=len(digest)
    )


# What authenticating one request costs in a web container now (apps/accounts/authentication.py:
# the token with its user by primary key, one query) against knox's stock class (two queries),
# DRF's authtoken lookup it replaced (one joined query) and the former cache hit (one Redis GET
# of the pickled user). In-process, one thread: recorded, never asserted.
LOOKUP_COST = """
import json, statistics, time
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import RequestFactory
from knox.models import AuthToken
from knox.auth import TokenAuthentication as KnoxStock
from apps.accounts.authentication import TokenAuthentication
ROUNDS, N = 5, 60
user = get_user_model().objects.get(username=USERNAME)
row, token = AuthToken.objects.create(user=user)
request = RequestFactory().get("/api/me/", HTTP_AUTHORIZATION="Token " + token)
ours, stock = TokenAuthentication(), KnoxStock()
assert ours.authenticate(request)[0] == user and stock.authenticate(request)[0] == user
cache.set("abuse:auth:user", user, 60)
calls = {
    "authenticate_ms": lambda: ours.authenticate(request),
    "knox_stock_authenticate_ms": lambda: stock.authenticate(request),
    "one_joined_query_ms": lambda: AuthToken.objects.select_related("user").get(pk=row.pk),
    "redis_get_user_ms": lambda: cache.get("abuse:auth:user"),
}
rounds = {name: [] for name in calls}
for _ in range(ROUNDS):  # interleaved, so a busy moment of the machine hits every kind alike
    for name, fn in calls.items():
        start = time.perf_counter()
        for _ in range(N):
            fn()
        rounds[name].append((time.perf_counter() - start) * 1000 / N)
cache.delete("abuse:auth:user")
row.delete()
figures = {name: round(statistics.median(ms), 3) for name, ms in rounds.items()}
print(json.dumps({"calls": ROUNDS * N, **figures}))
"""


def test_token_lookup_cost_per_request(request, stack, make_user):
    client = make_user("cost")
    out = stack.manage(LOOKUP_COST.replace("USERNAME", repr(client.username)))
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["calls"] == 300, figures
    assert figures["authenticate_ms"] > 0, figures
    record_figures(request, "auth_token_lookup_cost", **figures)
