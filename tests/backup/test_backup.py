"""Backups as an operator runs them (docs/backups.md): `make backup`, `make backups`,
`make restore FILE=...` against the running prod stack, and the rotation rules.
Disruptive: restore stops and restarts web/worker/beat, so this suite runs late."""

import subprocess
import time
from pathlib import Path

import pytest

from conftest import record_timing

ROOT = Path(__file__).resolve().parents[2]


def make(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A Make target against the test stack, exactly as the runbook has it."""
    done = subprocess.run(
        ["make", "-s", *args, f"PROD_PROJECT={stack.project}", f"PROD_ENV={stack.env_file}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(
            f"make {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def psql(stack, sql: str) -> str:
    postgres = stack.container_ids("postgres")[0]
    done = subprocess.run(
        ["docker", "exec", "-i", postgres, "sh", "-c",
         'psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" "$POSTGRES_DB"'],
        input=sql, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def table_checksums(stack) -> dict[str, str]:
    """md5 over every row of every table in the public schema, order-independent."""
    tables = psql(
        stack, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;"
    ).split()
    sql = "\n".join(
        f"SELECT '{t}', count(*), "
        f"coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '-') "
        f'FROM public."{t}" x;'
        for t in tables
    )
    rows = [line.split("|") for line in psql(stack, sql).splitlines()]
    return {t: f"{n}:{h}" for t, n, h in rows}


def backup_names(stack) -> list[str]:
    out = make(stack, "backups").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("backup-")]


@pytest.fixture(scope="module")
def quiet_stack(stack):
    """No scheduled backup runs in the middle: the scheduler's first backup is done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = stack.compose("run", "--rm", "--no-deps", "-T", "backup", "list-backups", check=False)
        if "last run:" in out and "none yet" not in out:
            return stack
        time.sleep(2)
    pytest.fail("the backup service took no backup at start within 120s")


def test_scheduler_took_a_verified_backup_at_start(quiet_stack):
    out = make(quiet_stack, "backups").stdout
    assert "verified" in out, out
    assert "last run: ok" in out, out
    backup = quiet_stack.container_ids("backup")[0]
    assert quiet_stack.inspect(backup)["State"]["Running"]


def test_backup_change_restore_gives_identical_tables(quiet_stack, make_user):
    stack = quiet_stack
    alice = make_user("backup")
    ids = []
    for i in range(30):
        r = alice.post(
            "/api/posts/",
            json={"title": f"kept {i}", "body": "ünïcode, 'quotes', \\ and\nnewlines"},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    # An export file in the media volume, to come back with the restore.
    export = alice.post("/api/exports/", json={"format": "csv"}).json()
    deadline = time.monotonic() + 60
    while alice.get(f"/api/exports/{export['id']}/").json()["status"] != "done":
        assert time.monotonic() < deadline, "export not done within 60 s"
        time.sleep(0.5)
    export_file = alice.get(f"/api/exports/{export['id']}/download/").content
    before = table_checksums(stack)
    assert int(before["posts_post"].split(":")[0]) >= 30

    start = time.monotonic()
    out = make(stack, "backup").stdout
    took_backup = time.monotonic() - start
    name = out.strip().split("make restore FILE=")[-1].rstrip(")").strip()
    assert name.startswith("backup-"), out
    assert name in backup_names(stack), out

    # Change and delete data after the backup.
    for post_id in ids[:10]:
        assert alice.delete(f"/api/posts/{post_id}/").status_code == 204
    assert alice.patch(f"/api/posts/{ids[10]}/", json={"title": "changed"}).status_code == 200
    assert alice.post("/api/posts/", json={"title": "new", "body": "after"}).status_code == 201
    assert table_checksums(stack) != before

    start = time.monotonic()
    out = make(stack, "restore", f"FILE={name}")
    took_restore = time.monotonic() - start
    assert table_checksums(stack) == before, out.stdout

    # The writers are back and serve the restored data.
    assert alice.get(f"/api/posts/{ids[0]}/").json()["title"] == "kept 0"
    assert alice.get(f"/api/posts/{ids[10]}/").json()["title"] == "kept 10"
    # The restored media files are readable by nginx again (archived modes, not umask 077).
    r = alice.get(f"/api/exports/{export['id']}/download/")
    assert r.status_code == 200, r.status_code
    assert r.content == export_file
    record_timing(f"backup: make backup {took_backup:.1f}s, make restore {took_restore:.1f}s")


CORRUPTIONS = {
    "truncated to half": 'truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"',
    "emptied": 'truncate -s 0 "$f"',
    "bytes overwritten": 'dd if=/dev/zero of="$f" conv=notrunc bs=1 count=64 seek=100 status=none',
}


def remove_backup(stack, name: str) -> None:
    """Delete a backup folder a test made, through the backup service's own image."""
    stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "rm", "backup", "-rf", f"/backups/{name}"
    )  # fmt: skip


def _corrupt_copy(stack, name: str, how: str) -> str:
    bad = "backup-20000101T000000Z"
    stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "bash", "backup", "-c",
        f"rm -rf /backups/{bad} && cp -a /backups/{name} /backups/{bad} && "
        f"f=/backups/{bad}/db.dump && {how}",
    )  # fmt: skip
    return bad


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_or_truncated_backup_is_refused_and_nothing_changes(quiet_stack, make_user, how):
    stack = quiet_stack
    name = backup_names(stack)[0]
    bad = _corrupt_copy(stack, name, CORRUPTIONS[how])
    try:
        alice = make_user("refused")
        assert (
            alice.post("/api/posts/", json={"title": "after the backup", "body": "x"}).status_code
            == 201
        )
        before = table_checksums(stack)
        web_before = stack.container_ids("web")
        assert web_before, "no running web container to watch"
        started = {c: stack.inspect(c)["State"]["StartedAt"] for c in web_before}

        done = make(stack, "restore", f"FILE={bad}", check=False)
        assert done.returncode != 0
        assert "refusing to restore" in done.stderr + done.stdout, done.stderr
        assert table_checksums(stack) == before
        # Refused before anything was stopped.
        assert {
            c: stack.inspect(c)["State"]["StartedAt"] for c in stack.container_ids("web")
        } == started
    finally:
        remove_backup(stack, bad)


# The shortest cut from the dump's end that `pg_restore --list` (the restore's last check)
# still reads but a full read fails: its table of contents whole, its data cut short. The
# checksums are then rewritten to match, so only the restore itself can find out (written
# outside the folder first: a file made there while `*` expands would list itself).
PAST_THE_CHECKS = (
    'cp "$f" "$f.orig" && size=$(stat -c %s "$f") && found= && '
    "for cut in 1 8 64 512 4096; do "
    'head -c $((size - cut)) "$f.orig" > "$f"; '
    'if pg_restore --list "$f" >/dev/null 2>&1 && ! pg_restore -f /dev/null "$f" 2>/dev/null; '
    "then found=$cut; break; fi; done; "
    'rm "$f.orig"; [ -n "$found" ] || { echo "no cut passes the checks" >&2; exit 1; }; '
    'cd "${f%/*}" && sha256sum -- * | grep -v SHA256SUMS > /tmp/S && mv /tmp/S SHA256SUMS'
)


def test_truncated_dump_with_matching_checksums_is_rolled_back(quiet_stack, make_user):
    """Past the checks (checksums rewritten to match, the archive's table of contents intact):
    the one-transaction restore fails part-way, rolls back, and the writers come back on the
    untouched database."""
    stack = quiet_stack
    name = backup_names(stack)[0]
    bad = _corrupt_copy(stack, name, PAST_THE_CHECKS)
    try:
        alice = make_user("rollback")
        assert alice.post("/api/posts/", json={"title": "survives", "body": "x"}).status_code == 201
        before = table_checksums(stack)
        done = make(stack, "restore", f"FILE={bad}", check=False)
        assert done.returncode != 0, done.stdout
        # Past the checks, into pg_restore's one transaction, and rolled back there.
        output = done.stdout + done.stderr
        assert "refusing to restore" not in output, output
        assert "failed and was rolled back" in output, output
        assert table_checksums(stack) == before
        stack.wait_healthy("web")
        assert alice.get("/api/me/").status_code == 200
    finally:
        remove_backup(stack, bad)


def test_restore_of_an_unknown_name_is_refused(quiet_stack):
    done = make(quiet_stack, "restore", "FILE=backup-19990101T000000Z", check=False)
    assert done.returncode != 0
    assert "no backup named" in done.stderr


# ---- rotation: fabricated, dated backups in a scratch folder, with the stack's image --------


def rotate(stack, names: list[str], daily: int, weekly: int) -> tuple[list[str], str]:
    image = stack.inspect(stack.container_ids("backup")[0])["Config"]["Image"]
    script = " && ".join(
        [f"mkdir /backups/{n} && touch /backups/{n}/SHA256SUMS" for n in names]
        + ["rotate-backups", "ls /backups"]
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--tmpfs", "/backups:mode=1777",
         "-e", f"BACKUP_KEEP_DAILY={daily}", "-e", f"BACKUP_KEEP_WEEKLY={weekly}",
         image, "bash", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.split()), done.stderr


def test_rotation_keeps_newest_per_day_and_per_week(stack):
    names = [
        # Two on the newest day: only the later one is that day's.
        "backup-20250312T230000Z", "backup-20250312T030000Z",
        "backup-20250311T030000Z", "backup-20250310T030000Z",  # Tue, Mon (ISO week 11)
        "backup-20250309T030000Z", "backup-20250308T030000Z",  # Sun, Sat (week 10)
        "backup-20250301T030000Z",  # Sat (week 9)
        "backup-20250220T030000Z",  # Thu (week 8)
        "backup-20250213T030000Z",  # Thu (week 7)
        "failed-backup-20250101T030000Z",  # older than every kept backup: removed
    ]  # fmt: skip
    kept, log = rotate(stack, names, daily=3, weekly=3)
    assert kept == sorted([
        "backup-20250312T230000Z",  # daily 1, weekly (week 11)
        "backup-20250311T030000Z",  # daily 2
        "backup-20250310T030000Z",  # daily 3
        "backup-20250309T030000Z",  # weekly (week 10)
        "backup-20250301T030000Z",  # weekly (week 9)
    ]), log  # fmt: skip
    assert "rotate: removed backup-20250312T030000Z" in log
    assert "kept 5, removed 5" in log


def test_rotation_with_zero_weekly_keeps_exactly_n_days(stack):
    names = [f"backup-202501{d:02d}T010203Z" for d in range(1, 21)]
    kept, _ = rotate(stack, names, daily=7, weekly=0)
    assert kept == [f"backup-202501{d:02d}T010203Z" for d in range(14, 21)]


def test_rotation_keeps_weekly_across_a_year_boundary(stack):
    # 2024-12-30 is Monday of ISO week 2025-W01: the same week as 2025-01-02.
    names = ["backup-20250102T000000Z", "backup-20241230T000000Z", "backup-20241229T000000Z"]
    kept, _ = rotate(stack, names, daily=0, weekly=2)
    assert kept == ["backup-20241229T000000Z", "backup-20250102T000000Z"]
