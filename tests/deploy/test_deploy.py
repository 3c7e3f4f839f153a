"""`make deploy` and `make rollback` on the running prod stack under load
(docs/deploy-single-vm.md), with releases made from a copy of the working tree:

1. release 1 adds a migration (a nullable column) and changes the nginx image (a header);
   a long export runs while its worker is replaced;
2. release 2 cannot start its web container (health check fails): the deploy fails, the old
   containers keep serving;
3. `make rollback` goes back across the migration (old code on the new schema);
4. `make update` (docs/upgrades.md): every image rebuilt with its apt layers run again (none from
   the build cache), what changed printed, deployed; then `make rollback` to the images before.

A bounded read/write load through nginx runs during each (during make update from its deploy
step on: the image builds before it replace nothing that serves). Every request is sent once;
the only retry is of a request that met a reused idle keep-alive connection closed before any
byte of an answer (deploylib.KeepAlive), and nginx's access log must show that its first attempt
never reached nginx. Every title acknowledged with a 201 must be in the database exactly once.
Disruptive (replaces every app container), so this suite runs late."""

import datetime
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploylib import (
    ANSI,
    MAKE_TIMEOUT,
    UPDATE_TIMEOUT,
    KeepAlive,
    Load,
    MakeRun,
    NginxLogs,
    User,
    copy_working_tree,
    edit,
    evidence_problems,
    fresh_id,
    latest_migration,
    manage_json,
    new_tree,
    retry_summary,
    run_make,
    wait_exports_done,
    write,
)

from conftest import RESULTS_DIR, ROOT, record_timing

THREADS = 6
# The retry bound: each nginx reload (two per web container swapped) or graceful stop (when
# nginx is replaced) closes each of the 7 clients' idle connections at most once, and a retry
# needs a request sent in the instant of that close. Seen 0-6 per deploy; more than 10 means
# the race has become routine, which a user would notice.
MAX_RETRIES = 10
# The long export of (d): rows seeded with one INSERT, exported as JSON (~3x slower per row than
# CSV). It must outlast the new worker's start (5-15 s here) so it still runs when the old worker
# gets SIGTERM: 200,000 rows took 7 s on a quiet VM and 22 s on a busy one; with 400,000 it
# still ran 5-40 s after SIGTERM; 500,000 widen the margin.
BULK_POSTS = 500_000
RUN = fresh_id()
MIGRATION_FIELD = "deploy_checked_at"
RELEASE_HEADER = "X-Deploy-Release"
SERVICES = ("web", "worker", "beat", "nginx")
IMAGES = ("web", "worker", "nginx", "postgres", "redis")


# ---- the releases ------------------------------------------------------------------------------


@dataclass
class Releases:
    tag0: str  # what the stack runs now
    tag1: str
    tag2: str
    tree1: str
    tree2: str
    migration: str  # release 1's migration (app posts)


def make_release1(tree: str, tag: str) -> str:
    """A nullable column on posts (model + migration: expand only) and a response header in
    nginx's config (a new nginx image). Returns the migration's name."""
    edit(
        tree, "services/web/apps/posts/models.py",
        "    updated_at = models.DateTimeField(auto_now=True)\n",
        "    updated_at = models.DateTimeField(auto_now=True)\n"
        f"    {MIGRATION_FIELD} = models.DateTimeField(null=True, blank=True)\n",
    )  # fmt: skip
    previous = latest_migration(tree, "services/web/apps/posts")
    name = f"{int(previous[:4]) + 1:04d}_post_{MIGRATION_FIELD}"
    write(
        tree,
        f"services/web/apps/posts/migrations/{name}.py",
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        f"    dependencies = [('posts', '{previous}')]\n"
        "    operations = [\n"
        f"        migrations.AddField('post', '{MIGRATION_FIELD}', "
        "models.DateTimeField(null=True, blank=True)),\n"
        "    ]\n",
    )
    with (Path(tree) / "nginx/snippets/security-headers.conf").open("a") as f:
        f.write(f'add_header {RELEASE_HEADER} "{tag}" always;\n')
    return name


def break_web_start(tree: str) -> None:
    """gunicorn's workers cannot load the app, so the web container never gets healthy (the
    migrate step does not load the WSGI app and passes)."""
    edit(
        tree, "services/web/config/wsgi.py",
        "application = get_wsgi_application()",
        'raise RuntimeError("release broken on purpose by tests/deploy")\n'
        "application = get_wsgi_application()",
    )  # fmt: skip


@pytest.fixture(scope="module")
def releases(stack):
    tag0 = running_tags(stack, "web")
    assert len(tag0) == 1, tag0
    r = Releases(tag0.pop(), f"dt-{RUN}-r1", f"dt-{RUN}-r2", new_tree(), new_tree(), migration="")
    try:
        assert copy_working_tree(r.tree1) > 50
        r.migration = make_release1(r.tree1, r.tag1)
        assert copy_working_tree(r.tree2) > 50
        assert make_release1(r.tree2, r.tag1) == r.migration
        break_web_start(r.tree2)
        yield r
    finally:
        shutil.rmtree(r.tree1, ignore_errors=True)
        shutil.rmtree(r.tree2, ignore_errors=True)
        for tag in (r.tag1, r.tag2):
            subprocess.run(
                ["docker", "image", "rm", *(f"drs/{name}:{tag}" for name in IMAGES)],
                capture_output=True, check=False,
            )  # fmt: skip


# ---- the stack's state -------------------------------------------------------------------------


def tags(stack) -> dict[str, str]:
    with Path(stack.env_file + ".tags").open() as f:
        return dict(
            line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#")
        )


def running_tags(stack, service: str) -> set[str]:
    return {
        stack.inspect(c)["Config"]["Image"].rsplit(":", 1)[1] for c in stack.container_ids(service)
    }


def assert_runs(stack, current: str, previous: str) -> None:
    """The tags file records CURRENT after PREVIOUS, and every app service runs CURRENT."""
    recorded = tags(stack)
    assert {k: recorded.get(k) for k in ("DRS_TAG", "DRS_PREVIOUS_TAG")} == {
        "DRS_TAG": current,
        "DRS_PREVIOUS_TAG": previous,
    }
    for service in SERVICES:
        assert running_tags(stack, service) == {current}, service


def snapshot(stack) -> dict[str, list[str]]:
    return {service: sorted(stack.container_ids(service)) for service in SERVICES}


def project_images(stack) -> list[str]:
    """The images of every container of the project, stopped ones too."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={stack.project}",
         "--format", "{{.Image}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def container_ips(stack, cid: str) -> set[str]:
    networks = stack.inspect(cid)["NetworkSettings"]["Networks"].values()
    return {n["IPAddress"] for n in networks if n.get("IPAddress")}


def hold_rules_left() -> list[str]:
    out = subprocess.run(
        ["iptables", "-w", "-t", "raw", "-S", "PREROUTING"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "drs-deploy-hold" in line]


def release_header(base_url: str) -> str | None:
    conn = KeepAlive(base_url)
    try:
        reply = conn.send("GET", "/healthz")
    finally:
        conn.close()
    assert reply.status == 200, reply.body
    return {k.lower(): v for k, v in reply.headers.items()}.get(RELEASE_HEADER.lower())


def schema_state(stack, migration: str) -> dict:
    """Whether the migration is recorded (django_migrations) and the column exists."""
    return manage_json(
        stack,
        "import json\n"
        "from django.db import connection\n"
        "from apps.posts.models import Post\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT applied FROM django_migrations WHERE app = %s AND name = %s',"
        f" ['posts', {migration!r}])\n"
        "    row = c.fetchone()\n"
        "    c.execute('SELECT column_name FROM information_schema.columns WHERE table_name = %s',"
        " [Post._meta.db_table])\n"
        "    columns = [r[0] for r in c.fetchall()]\n"
        "print(json.dumps({'applied': row[0].timestamp() if row else None, 'columns': columns}))",
    )


def saved_titles(stack, prefix: str) -> dict[str, int]:
    return manage_json(
        stack,
        "import json\n"
        "from django.db.models import Count\n"
        "from apps.posts.models import Post\n"
        f"rows = Post.objects.filter(title__startswith={prefix!r}).values('title')"
        ".annotate(n=Count('id')).values_list('title', 'n')\n"
        "print(json.dumps(dict(rows)))",
    )


# ---- one phase: make under load ------------------------------------------------------------------


@dataclass
class Users:
    load: list
    # A new exporter for each phase: a phase asks for up to MAX_EXPORTS exports, and the daily
    # export quota (EXPORT_MAX_PER_USER_PER_DAY) counts per user, whatever the phase.
    new_exporter: Callable[[], User]
    bulk: User


def as_user(client, seed: bool = True) -> User:
    """The load's view of a make_user client; seed: with a post of its own to PATCH."""
    token = client.headers["Authorization"].split(" ", 1)[1]
    if not seed:
        return User(client.username, token)
    r = client.post("/api/posts/", json={"title": f"deploy seed {RUN}", "body": "x"})
    assert r.status_code == 201, r.text
    return User(client.username, token, r.json()["id"])


@pytest.fixture(scope="module")
def users(make_user) -> Users:
    return Users(
        [as_user(make_user(f"load{i}")) for i in range(THREADS)],
        lambda: as_user(make_user("exports")),
        as_user(make_user("bulk"), seed=False),
    )


@dataclass
class Phase:
    name: str
    make: MakeRun
    load: Load
    entries: list  # nginx access-log lines
    before: dict
    after: dict
    exports: dict  # export id -> final status

    def figures(self) -> str:
        load = self.load
        return (
            f"make {self.make.seconds:.0f}s (exit {self.make.returncode}); {len(load.done)} "
            f"requests ok, {len(load.failures)} failed, {retry_summary(load)} "
            f"(bound {MAX_RETRIES}; first attempts absent from nginx's log), {load.reopened} "
            f"idle connections found closed before use and reopened; "
            f"{len(load.acknowledged)} posts acknowledged; {len(self.exports)} exports, "
            f"{sum(s == 'done' for s in self.exports.values())} done"
        )


def save_output(name: str, run: MakeRun) -> None:
    """make's output with the second each line came, for reading a failure afterwards."""
    Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    with (Path(RESULTS_DIR) / f"deploy-{name}.log").open("w") as f:
        for t, line in run.lines:
            f.write(f"{t - run.started:7.1f}  {line}\n")
        f.write(f"exit {run.returncode}\n{run.stderr}")


def run_phase(
    stack,
    base_url,
    users,
    name,
    tree,
    target,
    env,
    watcher=None,
    timeout=MAKE_TIMEOUT,
    load_from=None,
) -> Phase:
    """make TARGET in tree under load; watcher.on_line sees make's output lines as they come.
    load_from: a piece of make's output from which on the load runs (None: from before make
    starts), for a target whose first steps change nothing that serves (make update's builds)."""
    before = snapshot(stack)
    logs = NginxLogs(stack)
    exporter = users.new_exporter()
    load = Load(base_url, users.load, exporter, prefix=f"deploy {RUN} {name}")
    if watcher is not None:
        watcher.load = load

    def on_line(line: str) -> None:
        if load_from is not None and not load.running() and load_from in line:
            load.start()
        if watcher is not None:
            watcher.on_line(line)

    try:
        if load_from is None:
            load.start()
            time.sleep(3)  # the load is flowing before make starts
        run = run_make(stack, tree, target, env, on_line, timeout)
        time.sleep(3)  # and goes on against what make left running
    finally:
        load.finish()
    entries = logs.collect()
    save_output(name, run)
    exports = wait_exports_done(base_url, exporter, load.export_ids)
    return Phase(name, run, load, entries, before, snapshot(stack), exports)


def assert_served_everything(stack, phase: Phase) -> None:
    """0 failed requests, retries bounded and proven unseen by nginx, every acknowledged write
    saved exactly once, every export done."""
    load = phase.load
    assert load.done, "the load sent nothing"
    assert load.failures == [], (
        f"{phase.name}: {len(load.failures)} of {len(load.done) + len(load.failures)} failed:\n"
        + "\n".join(map(str, load.failures[:20]))
    )
    assert len(load.retries) <= MAX_RETRIES, [vars(r) for r in load.retries]
    assert evidence_problems(load, phase.entries) == []
    assert load.acknowledged, "no post was written during the deploy"
    saved = saved_titles(stack, load.prefix)
    not_once = {t: saved.get(t, 0) for t in load.acknowledged if saved.get(t, 0) != 1}
    assert not_once == {}, f"acknowledged titles not saved exactly once: {not_once}"
    twice = {t: n for t, n in saved.items() if n > 1}
    assert twice == {}, f"titles saved more than once: {twice}"
    assert load.export_ids, "no export was asked for during the deploy"
    assert set(phase.exports.values()) == {"done"}, phase.exports


# ---- phase 1: release 1 (migration + nginx), with a long export across the worker swap -----


@dataclass
class LongExport:
    """The bulk user's export, asked for when the deploy starts a new worker beside the old
    one (so the old worker, the only one consuming then, takes it), and watched through nginx
    (its requests count in the load's figures and failures)."""

    base_url: str
    user: User
    load: Load | None = None
    id: str | None = None
    asked_at: float = 0.0
    seen: list = field(default_factory=list)  # (time, status)

    def on_line(self, line: str) -> None:
        if self.id is None and "worker: starting a new container" in line:
            conn = KeepAlive(self.base_url, self.user.token)
            reply = self.load.call(conn, "POST", "/api/exports/", {"format": "json"}, 202)
            self.asked_at = time.time()
            self.id = "" if reply is None else reply.json()["id"]  # a failure is in the load
            if self.id:
                threading.Thread(target=self._watch, args=(conn,), daemon=True).start()

    def _watch(self, conn) -> None:
        deadline = time.monotonic() + 600  # hang guard: the export's time limit is 300 s
        while time.monotonic() < deadline and not self.load.stop.is_set():
            reply = self.load.call(conn, "GET", f"/api/exports/{self.id}/", None, 200)
            if reply is not None:
                status = reply.json()["status"]
                self.seen.append((time.time(), status))
                if status in ("done", "failed"):
                    break
            time.sleep(0.5)
        conn.close()


def seed_bulk_posts(stack, user: User, count: int) -> int:
    return manage_json(
        stack,
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.db import connection\n"
        "from apps.posts.models import Post\n"
        f"author = get_user_model().objects.get(username={user.name!r})\n"
        "with connection.cursor() as c:\n"
        f"    c.execute('INSERT INTO ' + connection.ops.quote_name(Post._meta.db_table) + "
        "' (author_id, title, body, created_at, updated_at)"
        " SELECT %s, %s || i, %s, now(), now() FROM generate_series(1, %s) i',"
        f" [author.id, 'bulk ', '', {count}])\n"
        "    print(json.dumps(c.rowcount))",
    )


def export_state(stack, export_id: str) -> dict:
    return manage_json(
        stack,
        "import json, os\n"
        "from django.conf import settings\n"
        "from apps.exports.models import Export\n"
        f"e = Export.objects.get(pk={export_id!r})\n"
        "folder = os.path.join(settings.MEDIA_ROOT, 'exports')\n"
        f"names = sorted(n for n in os.listdir(folder) if {export_id!r} in n)\n"
        "entries = None\n"
        f"if {export_id + '.json'!r} in names:\n"
        f"    with open(os.path.join(folder, {export_id + '.json'!r}), encoding='utf-8') as f:\n"
        # Each post parsed into 0, not kept as a dict: 500,000 of them fit the web's memory.
        "        entries = len(json.load(f, object_hook=lambda _: 0))\n"
        "print(json.dumps({'status': e.status, 'attempts': e.attempts, 'rows': e.row_count,"
        " 'file': e.file, 'finished': e.finished_at.timestamp() if e.finished_at else None,"
        " 'names': names, 'entries': entries}))",
    )


@pytest.fixture(scope="module")
def release1(stack, base_url, users, releases):
    assert release_header(base_url) is None  # the running nginx is not release 1's
    assert seed_bulk_posts(stack, users.bulk, BULK_POSTS) == BULK_POSTS
    old_web_ips = set().union(*(container_ips(stack, c) for c in stack.container_ids("web")))
    long_export = LongExport(base_url, users.bulk)
    try:
        phase = run_phase(
            stack, base_url, users, "release1", releases.tree1, "deploy",
            {"DEPLOY_TAG": releases.tag1}, long_export,
        )  # fmt: skip
        return {
            "phase": phase,
            "long_export": long_export,
            "old_web_ips": old_web_ips,
            "schema": schema_state(stack, releases.migration),
            "header": release_header(base_url),
            "export": export_state(stack, long_export.id) if long_export.id else None,
            "hold_rules_left": hold_rules_left(),
        }
    finally:
        # The bulk rows go (the next phases and suites share the stack); one statement.
        stack.manage(
            "from django.db import connection\n"
            "from django.contrib.auth import get_user_model\n"
            "from apps.posts.models import Post\n"
            f"author = get_user_model().objects.get(username={users.bulk.name!r})\n"
            "with connection.cursor() as c:\n"
            "    c.execute('DELETE FROM ' + connection.ops.quote_name(Post._meta.db_table) +"
            " ' WHERE author_id = %s', [author.id])"
        )


def test_release_deploys_under_load_with_no_failed_request(stack, releases, release1):
    phase: Phase = release1["phase"]
    run = phase.make
    record_timing(f"deploy: release 1 (migration + nginx image): {phase.figures()}")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert_runs(stack, releases.tag1, releases.tag0)
    assert len(stack.container_ids("web")) == 1
    assert len(stack.container_ids("worker")) == 1
    assert_served_everything(stack, phase)


def test_release_migration_ran_while_old_code_served(releases, release1):
    """(a) The migration ran before any new web container started, and the old web container
    answered writes on the new schema after it."""
    phase: Phase = release1["phase"]
    run = phase.make
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    schema = release1["schema"]
    assert schema["applied"] is not None, f"{releases.migration} not in django_migrations"
    assert MIGRATION_FIELD in schema["columns"]
    assert run.when("applying migrations") <= schema["applied"]
    assert schema["applied"] <= run.when("web: starting a new container")
    old_writes = [
        e
        for e in phase.entries
        if e["method"] == "POST"
        and e["status"] == 201
        and e["upstream"].split(",")[-1].strip().rsplit(":", 1)[0] in release1["old_web_ips"]
        and datetime.datetime.fromisoformat(e["time"]).timestamp() > schema["applied"]
    ]
    record_timing(
        f"deploy: release 1 migration applied {schema['applied'] - run.started:.0f}s into "
        f"make deploy; {len(old_writes)} writes answered by the old web container after it"
    )
    assert old_writes, "no write reached the old web container after the migration"


def test_release_replaced_nginx_without_losing_a_request(stack, releases, release1):
    """(b) nginx's image changed, so it was replaced: new connections were held (not refused)
    while the old nginx stopped and the new one started on the same ports."""
    phase: Phase = release1["phase"]
    run = phase.make
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert phase.before["nginx"] != phase.after["nginx"], "nginx was not replaced"
    assert running_tags(stack, "nginx") == {releases.tag1}
    assert release1["header"] == releases.tag1, "the new nginx's config does not answer"
    swap_from = run.when("nginx: image changed")
    swap_to = run.when(" answers; new connections were", after=swap_from)
    failed = [str(f) for f in phase.load.failures if swap_from <= f.started <= swap_to]
    held = [t for t, line in run.lines if "nginx: holding new connections" in line]
    in_hold = phase.load.started_between(held[0] if held else swap_to, swap_to)
    slowest = max((d.finished - d.started for d in in_hold), default=0.0)
    record_timing(
        f"deploy: release 1 nginx replaced; new connections held "
        f"{swap_to - held[0] if held else 0:.1f}s; {len(in_hold)} requests sent during the "
        f"hold answered (slowest {slowest:.1f}s); {len(failed)} failed while nginx was replaced"
    )
    assert failed == [], f"{len(failed)} failed while nginx was replaced: {failed[:20]}"
    assert held, "new connections were not held while nginx was replaced"
    assert in_hold, "no request was sent while new connections were held"
    assert release1["hold_rules_left"] == []


def test_release_worker_swap_finishes_the_running_export_once(stack, release1):
    """(d) An export running on the old worker when it gets SIGTERM finishes there (warm
    shutdown): done once, one file, every row."""
    phase: Phase = release1["phase"]
    run = phase.make
    long_export: LongExport = release1["long_export"]
    assert long_export.id, "the deploy never started a new worker"
    state = release1["export"]
    sigterm = run.when("worker: stopping")
    old_worker_gone = run.line_after(sigterm)  # printed once `docker stop` returned
    running_after_sigterm = [t for t, s in long_export.seen if s == "running" and t > sigterm]
    asked = long_export.asked_at - run.started
    record_timing(
        f"deploy: long export of {state['rows']} rows asked {asked:.0f}s into make deploy, "
        f"seen running {len(running_after_sigterm)} times after the old worker's SIGTERM, "
        f"finished {state['finished'] - sigterm:.1f}s after it, attempts {state['attempts']}"
    )
    assert running_after_sigterm, f"the export was not running at SIGTERM: {long_export.seen}"
    assert state["status"] == "done", state
    assert state["attempts"] == 1, state  # started once: never interrupted, never run again
    assert state["rows"] == BULK_POSTS, state
    assert state["names"] == [f"{long_export.id}.json"], state  # one file, no temporary left
    assert state["entries"] == BULK_POSTS, state  # the file holds every row
    assert state["finished"] < old_worker_gone, "finished after the old worker had exited"


# ---- phase 2: a release whose web container never gets healthy ------------------------------


@pytest.fixture(scope="module")
def release2(stack, base_url, users, releases, release1):
    assert tags(stack)["DRS_TAG"] == releases.tag1, "release 1 is not deployed"
    phase = run_phase(
        stack, base_url, users, "release2", releases.tree2, "deploy",
        {"DEPLOY_TAG": releases.tag2, "DEPLOY_BACKUP": "0", "DEPLOY_HEALTH_TIMEOUT": "60"},
    )  # fmt: skip
    return {"phase": phase, "images": project_images(stack), "tags": tags(stack)}


def test_failing_release_leaves_the_old_containers_serving(stack, releases, release2):
    """(c) make deploy fails with a clear message; the old containers kept serving (0 failed
    requests), the running tag is unchanged, no new container is left behind."""
    phase: Phase = release2["phase"]
    run = phase.make
    record_timing(f"deploy: release 2 (web never healthy): {phase.figures()}")
    assert run.returncode != 0, run.stdout
    assert f"web: starting a new container ({releases.tag2})" in run.stdout
    # The broken app makes gunicorn exit: the deploy says so at once (not after a timeout).
    assert "error: the new web container" in run.stderr, run.stderr
    assert "exited while starting" in run.stderr, run.stderr
    assert f"the old containers still serve ({releases.tag1})" in run.stdout, run.stdout
    assert release2["tags"] == {"DRS_TAG": releases.tag1, "DRS_PREVIOUS_TAG": releases.tag0}
    assert phase.after == phase.before, "containers changed"
    leftovers = [i for i in release2["images"] if i.endswith(f":{releases.tag2}")]
    assert leftovers == [], leftovers
    for service in SERVICES:
        assert running_tags(stack, service) == {releases.tag1}, service
    assert_served_everything(stack, phase)


# ---- phase 3: rollback across the migration ------------------------------------------------------


@pytest.fixture(scope="module")
def rollback(stack, base_url, users, releases, release2):
    phase = run_phase(stack, base_url, users, "rollback", ROOT, "rollback", {})
    return {
        "phase": phase,
        "schema": schema_state(stack, releases.migration),
        "header": release_header(base_url),
        "hold_rules_left": hold_rules_left(),
    }


def test_rollback_across_the_migration_under_load(stack, releases, rollback):
    """make rollback returns to the first tag with 0 failed requests; the schema stays (expand/
    contract) and the old code keeps writing on it; nginx goes back to its old image too."""
    phase: Phase = rollback["phase"]
    run = phase.make
    record_timing(f"deploy: make rollback: {phase.figures()}")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert_runs(stack, releases.tag0, releases.tag1)
    assert phase.before["nginx"] != phase.after["nginx"], "nginx was not replaced"
    assert rollback["header"] is None
    assert rollback["hold_rules_left"] == []
    schema = rollback["schema"]
    assert schema["applied"] is not None, schema
    assert MIGRATION_FIELD in schema["columns"], schema
    finished = run.started + run.seconds
    writes_after = [d for d in phase.load.done if d.method == "POST" and d.started > finished]
    assert writes_after, "no write was answered by the old code after the rollback"
    assert_served_everything(stack, phase)
    stack.wait_healthy("nginx")


# ---- phase 4: make update (docs/upgrades.md) ----------------------------------------------

REPORTED = ("web", "nginx", "postgres", "redis")  # the images make update lists (worker = web)
REPORT_LINE = re.compile(r"^ +(\w+): (\d+) Debian packages, (\d+) Python packages changed")


def image_packages(image: str) -> dict[str, str]:
    """Package ("deb:NAME" / "py:NAME") -> version, read from the image here, not by the script."""
    code = (
        "import importlib.metadata as m, re\n"
        "for d in m.distributions():\n"
        "    print(re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(), d.version)"
    )
    deb = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "dpkg-query", image,
         "-W", "-f", "${binary:Package} ${Version}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {f"deb:{n}": v for n, v in (line.split(" ", 1) for line in deb.splitlines())}
    py = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
         f"[ ! -x /opt/venv/bin/python ] || /opt/venv/bin/python -c \"{code}\""],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found.update({f"py:{n}": v for n, v in (line.split(" ", 1) for line in py.splitlines())})
    return found


def apt_layers_built_at(image: str) -> list[float]:
    """When each layer of the image that ran `apt-get upgrade` was made (a cached layer keeps
    the time of the build that made it)."""
    out = subprocess.run(
        ["docker", "image", "history", "--no-trunc", "--format", "{{.CreatedAt}}\t{{.CreatedBy}}",
         image],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        datetime.datetime.fromisoformat(created).timestamp()
        for created, by in (line.split("\t", 1) for line in out.splitlines())
        if "apt-get upgrade" in by
    ]


def upgradable(image: str) -> list[str]:
    """What `apt-get upgrade` would still install in the image now (its package lists fetched
    again, as root, in a throwaway container)."""
    done = subprocess.run(
        ["docker", "run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c",
         "apt-get update -qq >/dev/null && apt-get -s upgrade"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("Inst ")]


def per_image(read, tag: str) -> dict:
    """read("drs/NAME:TAG") for each reported image, the four at once (each runs containers;
    upgradable's apt-get update mostly waits on the network)."""
    with ThreadPoolExecutor(len(REPORTED)) as pool:
        found = pool.map(read, (f"drs/{name}:{tag}" for name in REPORTED))
        return dict(zip(REPORTED, found, strict=True))


@pytest.fixture(scope="module")
def update(stack, base_url, users):
    """make update from whatever tag the stack runs (after the rollback: tag0; the phases above
    need not have passed), under load from its deploy step on. UPDATE_BASE=keep: this machine's
    base image is shared, and is made with debootstrap (minutes); the apt layers run again
    anyway, and that is what is checked. No backup before migrating (phase 1 covers it)."""
    (tag0,) = running_tags(stack, "web")
    tag = f"dt-{RUN}-update"
    before = per_image(image_packages, tag0)
    try:
        phase = run_phase(
            stack, base_url, users, "update", ROOT, "update",
            {"DEPLOY_TAG": tag, "UPDATE_BASE": "keep", "DEPLOY_BACKUP": "0"},
            timeout=UPDATE_TIMEOUT, load_from="[deploy] deploying",
        )  # fmt: skip
        state = {
            "phase": phase,
            "tag0": tag0,
            "tag": tag,
            "tags": tags(stack),
            "running": {service: running_tags(stack, service) for service in SERVICES},
            "before": before,
            "after": per_image(image_packages, tag),
            "apt_layers": per_image(apt_layers_built_at, tag),
            "upgradable": per_image(upgradable, tag),
        }
        # Back to the images before the update, so that this run's images can go.
        state["rollback"] = run_make(stack, ROOT, "rollback", {})
        state["after_rollback"] = tags(stack)
        yield state
    finally:
        subprocess.run(
            ["docker", "image", "rm", *(f"drs/{name}:{tag}" for name in IMAGES)],
            capture_output=True, check=False,
        )  # fmt: skip


def test_update_rebuilds_every_apt_layer_and_deploys_under_load(stack, update):
    """make update: every image's apt layer was made by this run (not taken from the build
    cache), nothing newer is left to upgrade in it, the new tag serves with 0 failed requests,
    and the Debian refresh is recorded for later builds."""
    phase: Phase = update["phase"]
    run = phase.make
    record_timing(f"deploy: make update: {phase.figures()}")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert update["running"] == {service: {update["tag"]} for service in SERVICES}
    recorded = update["tags"]
    assert recorded["DRS_TAG"] == update["tag"], recorded
    assert recorded["DRS_PREVIOUS_TAG"] == update["tag0"], recorded
    assert recorded.get("DEBIAN_REFRESH"), f"no Debian refresh recorded: {recorded}"
    assert f"DEBIAN_REFRESH={recorded['DEBIAN_REFRESH']}" in run.stdout
    for name, built in update["apt_layers"].items():
        assert built, f"drs/{name}:{update['tag']} has no apt-get upgrade layer"
        # Layer times have whole seconds: made after make started, not cached from before.
        assert min(built) >= int(run.started), f"{name}: an apt layer came from the build cache"
    # The load still ran while the deploy step replaced the containers.
    deployed = run.when("deployed ")
    swap = phase.load.started_between(run.when("web: starting a new container"), deployed)
    assert swap, "no request was sent while make update deployed"
    stale = {name: lines for name, lines in update["upgradable"].items() if lines}
    assert stale == {}, f"packages still upgradable in the new images: {stale}"
    assert_served_everything(stack, phase)


def test_update_prints_what_changed(update):
    """The report lists, per image, as many Debian and Python packages as really differ between
    the images before and after (read from the images here), each as OLD -> NEW."""
    run = update["phase"].make
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    printed = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in map(REPORT_LINE.match, run.stdout.splitlines())
        if m
    }
    counted = {}
    for name in REPORTED:
        before, after = update["before"][name], update["after"][name]
        differ = [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
        counted[name] = (
            sum(k.startswith("deb:") for k in differ),
            sum(k.startswith("py:") for k in differ),
        )
        for key in differ:
            kind, package = key.split(":", 1)
            old, new = before.get(key, "-"), after.get(key, "-")
            line = rf"^ +{kind} +{re.escape(package)} +{re.escape(old)} -> {re.escape(new)}$"
            assert re.search(line, run.stdout, re.MULTILINE), f"{name}: {key} not printed"
    record_timing(f"deploy: make update reported {printed} (packages changed: Debian, Python)")
    assert printed == counted


def test_update_report_lists_changed_added_and_removed_packages():
    """The report's comparison itself (scripts/update.sh, sourced), on package lists that
    differ in every way: a newer version, a package added, one removed, one unchanged."""
    folder = Path(new_tree())
    try:
        for name, lines in {
            "web.before": ["deb:libc6 2.41-12", "deb:libssl3t64 3.5.1-1", "deb:old 1",
                           "py:django 5.2.19"],
            "web.after": ["deb:libc6 2.41-12", "deb:libssl3t64 3.5.4-1", "deb:zz-new 2",
                          "py:django 5.2.20"],
        }.items():  # fmt: skip
            (folder / name).write_text("\n".join(lines) + "\n")
        for name in REPORTED[1:]:
            (folder / f"{name}.before").write_text("deb:libc6 2.41-12\n")
            (folder / f"{name}.after").write_text("deb:libc6 2.41-12\n")
        out = subprocess.run(
            ["bash", "-c", f'. scripts/update.sh && report "{folder}"'],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [ANSI.sub("", line).rstrip() for line in out.splitlines()]
    web = lines.index("  web: 3 Debian packages, 1 Python packages changed (the worker: the same)")
    assert [line.split() for line in lines[web + 1 : web + 5]] == [
        ["deb", "libssl3t64", "3.5.1-1", "->", "3.5.4-1"],
        ["deb", "old", "1", "->", "-"],
        ["deb", "zz-new", "-", "->", "2"],
        ["py", "django", "5.2.19", "->", "5.2.20"],
    ]
    assert "  nginx: 0 Debian packages, 0 Python packages changed" in lines


def test_rollback_after_update_returns_to_the_images_before(stack, update):
    run = update["rollback"]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert update["after_rollback"]["DRS_TAG"] == update["tag0"]
    for service in SERVICES:
        assert running_tags(stack, service) == {update["tag0"]}, service
