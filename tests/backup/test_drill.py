"""Point-in-time recovery and the rebuild drill (docs/backups.md, "Point-in-time recovery", "The
restore drill"), against an SFTP repository built from Debian's openssh-server (tests/backup/sftp).

A source prod stack of its own (project <stack>-src, the same images and CA as the suite's stack)
archives its WAL to the repository. First a point-in-time restore of that live stack to a moment
between two known writes. Then the drill: the source stack under a write loop through nginx is
destroyed with all its volumes (`down -v`: database, media, backups, WAL spool) and `make drill`
rebuilds it under another project name from the repository and the env file alone. Figures:
writes lost (RPO, seconds of acknowledged writes), time from nothing to healthy (RTO).

WAL_ARCHIVE_TIMEOUT is 10 s here (60 by default) so that segments reach the repository within
the test's short write loop."""

import hashlib
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_backup import make
from test_offsite import build_sftp_image, docker, server_sh, set_env

from conftest import RESULTS_DIR, ROOT, Client, Stack, record_timing

REPOSITORY = "/home/drs/drs-repo"
ARCHIVE_TIMEOUT = 10
NEW_CLIENT_KEY = (
    "ssh-keygen -q -t ed25519 -N '' -C drs-drill -f /tmp/id "
    "&& cat /tmp/id.pub >> /home/drs/.ssh/authorized_keys "
    "&& base64 -w0 /tmp/id && rm /tmp/id /tmp/id.pub"
)
POSTS_ROWS = "SELECT id || ' ' || md5(p::text) FROM posts_post p ORDER BY id"
MEDIA_SUMS = "cd /srv/media && find . -type f ! -name '.*' -exec sha256sum {} + | sort -k2"


def record_figures(request, case: str, **figures) -> None:
    """The drill's figures into the junit properties and the run's timings (as tests/abuse)."""
    for name, value in figures.items():
        request.node.user_properties.append((name, value))
    record_timing(f"{case}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    print(case, figures)


def psql(stack: Stack, sql: str) -> str:
    """As the superuser over the socket in the stack's postgres container (also mid-restore)."""
    done = subprocess.run(
        [*stack.compose_command, "exec", "-T", "postgres", "sh", "-c",
         'psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d "$POSTGRES_DB" -c "$0"', sql],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def api_user(stack: Stack) -> Client:
    """A user made in the stack's database, with a token, talking to the stack's nginx."""
    username, password = f"drill-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    stack.manage(
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({username!r}, password={password!r})"
    )
    client = Client("https://" + stack.compose("port", "nginx", "8443").strip())
    r = client.post("/api/auth/token/", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Token {r.json()['token']}"
    return client


def reconnected(client: Client, stack: Stack) -> Client:
    """``client``'s token on a new client for the stack's nginx port as it is now."""
    again = Client("https://" + stack.compose("port", "nginx", "8443").strip())
    again.headers["Authorization"] = client.headers["Authorization"]
    return again


def wal_sent(stack: Stack, timeout: float = 300) -> None:
    """Until the WAL segment being written now is archived and sent off-site, by the server's
    archive_timeout and the shipper's own round (nothing forced)."""
    segment = psql(stack, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    deadline = time.monotonic() + timeout
    archived = 0.0
    while time.monotonic() < deadline:
        name, at = psql(
            stack,
            "SELECT coalesce(last_archived_wal, ''), "
            "coalesce(extract(epoch FROM last_archived_time), 0) FROM pg_stat_archiver",
        ).split("|")
        if name[:24] >= segment:
            archived = float(at)
            break
        time.sleep(1)
    assert archived, f"segment {segment} not archived within {timeout}s"
    while time.monotonic() < deadline:
        sent = stack.compose(
            "exec", "-T", "backup", "sh", "-c", "cat /backups/.wal-last-ship || true"
        )
        if sent.split() and float(sent.split()[3]) > archived:
            return
        time.sleep(1)
    pytest.fail(f"the segment archived at {archived} was not sent off-site within {timeout}s")


@pytest.fixture(scope="module")
def source(stack):
    """The SFTP server and a source stack sending its backups and WAL to it. Removed afterwards,
    with the drill's stack."""
    image = build_sftp_image()
    project, drill = f"{stack.project}-src", f"{stack.project}-drill"
    server = f"{stack.project}-drill-sftp"
    env_file = Path(ROOT, ".cache", f"{project}.env")
    env_file.unlink(missing_ok=True)
    subprocess.run([str(Path(ROOT, "scripts", "prod-env.sh")), str(env_file)],
                   check=True, capture_output=True)  # fmt: skip
    src = Stack(project, str(env_file))
    drill_stack = Stack(drill, str(env_file))
    docker("rm", "-fv", server, check=False)
    docker("run", "-d", "--name", server, image)
    try:
        key = server_sh(server, NEW_CLIENT_KEY).stdout.strip()
        host_key = server_sh(server, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        set_env(str(env_file), {
            "HTTP_PORT": "", "HTTPS_PORT": "", "HTTP_BIND": "127.0.0.1",
            "TLS_CERTS_DIR": stack.env_value("TLS_CERTS_DIR"),
            "OFFSITE_REPOSITORY": f"sftp:drs@offsite:{REPOSITORY}",
            "OFFSITE_SSH_KEY": key,
            "OFFSITE_SSH_KNOWN_HOSTS": f"offsite {host_key[0]} {host_key[1]}",
            "WAL_ARCHIVE_TIMEOUT": str(ARCHIVE_TIMEOUT),
        })  # fmt: skip
        # The server joins each project's offsite network as `offsite` (on a real VM: a remote
        # host). The drill's project is created here, nothing started and its volumes empty, so
        # the server can join its network before the drill begins.
        for each in (src, drill_stack):
            each.compose("up", "--no-start", timeout=600)
            docker("network", "connect", "--alias", "offsite", f"{each.project}_offsite", server)
        started = src.run("up", "-d", "--wait", "--wait-timeout", "240", timeout=400)
        assert started.returncode == 0, started.stderr + src.run("logs", "--tail", "40").stdout
        yield src, drill_stack, server
    finally:
        docker("rm", "-fv", server, check=False)
        for each in (src, drill_stack):
            each.run("--profile", "flower", "down", "-v", "--remove-orphans", timeout=300)
        Path(ROOT, ".cache", f"drill-{drill}.env").unlink(missing_ok=True)
        env_file.unlink(missing_ok=True)


def first_base_backup_sent(src: Stack) -> None:
    deadline = time.monotonic() + 600
    while "off-site WAL: last sent" not in (out := make(src, "backups", check=False).stdout):
        assert time.monotonic() < deadline, f"no WAL sent off-site within 600s:\n{out}"
        time.sleep(2)


def test_restore_to_a_time_between_two_writes(source, request):
    src, _, _ = source
    first_base_backup_sent(src)
    alice = api_user(src)
    assert (
        alice.post("/api/posts/", json={"title": "pitr first", "body": "kept"}).status_code == 201
    )
    time.sleep(1.5)
    between = psql(
        src, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' UTC'"
    )
    time.sleep(1.5)
    assert (
        alice.post("/api/posts/", json={"title": "pitr second", "body": "gone"}).status_code == 201
    )
    wal_sent(src)

    start = time.monotonic()
    done = make(src, "restore", f"TIME={between}")
    took = time.monotonic() - start
    titles = psql(src, "SELECT title FROM posts_post WHERE title LIKE 'pitr %' ORDER BY id").split(
        "\n"
    )
    assert titles == ["pitr first"], (titles, done.stdout[-2000:])
    assert psql(src, "SELECT pg_is_in_recovery()") == "f"
    # The restored stack serves, and the same token (made before the time) still works. The
    # restore stopped nginx too, and this test's nginx port is an ephemeral one, given anew when
    # it started again (a server's 443 stays): the client follows it.
    src.wait_healthy("web")
    alice = reconnected(alice, src)
    assert alice.get("/api/me/").status_code == 200
    assert "the spool continues" in done.stderr, done.stderr[-2000:]
    record_figures(request, "point-in-time restore", seconds=round(took, 1), target=between)


def test_drill_rebuilds_the_destroyed_stack_from_the_repository_alone(source, request):
    src, drill, server = source
    alice = api_user(src)
    export = alice.post("/api/exports/", json={"format": "csv"}).json()
    deadline = time.monotonic() + 60
    while alice.get(f"/api/exports/{export['id']}/").json()["status"] != "done":
        assert time.monotonic() < deadline, "export not done within 60 s"
        time.sleep(0.5)
    media_before = src.compose("exec", "-T", "web", "sh", "-c", MEDIA_SUMS)
    assert media_before.strip(), "no media file to bring back"

    # The write loop: every acknowledged post, with the time of its acknowledgement.
    acked: list[tuple[int, float]] = []
    stop = threading.Event()

    def write_loop() -> None:
        i = 0
        while not stop.is_set():
            try:
                r = alice.post(
                    "/api/posts/", json={"title": f"loop {i}", "body": "x" * 200}, timeout=5
                )
            except OSError:
                continue
            if r.status_code == 201:
                acked.append((r.json()["id"], time.time()))
            i += 1

    loop = threading.Thread(target=write_loop, daemon=True)
    loop.start()
    # The loop runs until its first writes are off-site: the WAL segment being written once they
    # are acknowledged is archived (the server's archive_timeout) and sent (the shipper's round).
    deadline = time.monotonic() + 60
    while not acked:
        assert time.monotonic() < deadline, "the write loop got no post acknowledged in 60 s"
        time.sleep(0.2)
    wal_sent(src)
    rows_before = dict(line.split(" ", 1) for line in psql(src, POSTS_ROWS).splitlines())
    # Destroyed under the loop: the server leaves the network first (compose removes it).
    docker("network", "disconnect", f"{src.project}_offsite", server)
    src.run("--profile", "flower", "down", "-v", "--remove-orphans", "-t", "1", timeout=300)
    stop.set()
    loop.join(timeout=30)
    assert not src.compose("ps", "-aq").strip()
    volumes = docker(
        "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={src.project}"
    )
    assert not volumes.stdout.strip(), volumes.stdout
    assert acked, "the write loop got no post acknowledged"

    start = time.monotonic()
    done = subprocess.run(
        ["make", "-s", "drill", f"PROD_PROJECT={src.project}", f"PROD_ENV={src.env_file}",
         f"DRILL_PROJECT={drill.project}", "DRILL_KEEP=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    took = time.monotonic() - start
    Path(RESULTS_DIR, "drill.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rto = int(re.search(r"drill: RTO (\d+)s", done.stdout).group(1))
    drill = Stack(drill.project, str(Path(ROOT, ".cache", f"drill-{drill.project}.env")))

    rows_after = dict(line.split(" ", 1) for line in psql(drill, POSTS_ROWS).splitlines())
    last = max(int(i) for i in rows_after)
    loop_ids = [i for i, _ in acked]
    # WAL beyond the base backup was replayed: writes of the loop came back, with no gap.
    assert last >= loop_ids[0], (last, loop_ids[0])
    assert all(str(i) in rows_after for i in loop_ids if i <= last)
    # The posts table, row for row, up to the recovery point.
    upto = min(last, max(int(i) for i in rows_before))
    same = {i: h for i, h in rows_before.items() if int(i) <= upto}
    assert {i: h for i, h in rows_after.items() if int(i) <= upto} == same
    checksum = hashlib.sha256("\n".join(f"{i} {same[i]}" for i in sorted(same, key=int)).encode())
    # Media identical.
    assert drill.compose("exec", "-T", "web", "sh", "-c", MEDIA_SUMS) == media_before
    # Writes lost: acknowledged after the recovery point.
    lost = [(i, t) for i, t in acked if i > last]
    kept_at = max((t for i, t in acked if i <= last), default=acked[0][1])
    rpo = round(acked[-1][1] - kept_at, 1) if lost else 0.0
    record_figures(
        request, "drill", rto_seconds=rto, drill_seconds=round(took, 1), rpo_seconds=rpo,
        writes_acked=len(acked), writes_lost=len(lost), posts_compared=len(same),
        posts_sha256=checksum.hexdigest()[:16], wal_archive_timeout=ARCHIVE_TIMEOUT,
    )  # fmt: skip
    assert drill.readyz()[0] == 0
