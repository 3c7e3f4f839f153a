"""drs/postgres's backup health and clean-up (docs/backups.md, "Health and leftovers"): the
health check fails when no backup succeeded for BACKUP_INTERVAL plus BACKUP_HEALTH_GRACE (a hung
scheduler is not healthy), and what a killed run leaves (its .tmp-backup-* folder, its scratch
database) is removed by the next run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from imagetools import HARDENED, docker
from test_postgres_backup import PASSWORD, sh, start

LOCK_HOLDER = "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;"


def healthcheck(name: str, interval: str, grace: str):
    return sh(
        name, f"BACKUP_INTERVAL={interval} BACKUP_HEALTH_GRACE={grace} backup-healthcheck",
        check=False,
    )  # fmt: skip


def backup_name(ago: timedelta) -> str:
    return "backup-" + (datetime.now(UTC) - ago).strftime("%Y%m%dT%H%M%SZ")


def wait_until(name: str, script: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sh(name, script, check=False).returncode != 0:
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_health_fails_once_the_next_backup_is_overdue_by_more_than_the_grace(
    containers, postgres_image
):
    name = start(containers, postgres_image)
    # The newest backup started 90 s ago: the next one was due 30 s after it.
    sh(name, f"mkdir /backups/{backup_name(timedelta(seconds=90))}")
    assert healthcheck(name, "30s", "2m").returncode == 0  # 60 s late: within the grace
    late = healthcheck(name, "30s", "30s")
    assert late.returncode == 1
    assert "no backup succeeded for" in late.stdout
    assert "BACKUP_HEALTH_GRACE=30s" in late.stdout
    assert healthcheck(name, "1d", "2h").returncode == 0  # the defaults: not due yet
    # A fresh good backup makes it healthy again with the same settings.
    sh(name, "psql -X -q -d app -c 'CREATE TABLE t (id int)'")
    sh(name, "backup")
    assert healthcheck(name, "30s", "30s").returncode == 0
    # A malformed grace is an error, not a silent default.
    bad = healthcheck(name, "1d", "soon")
    assert bad.returncode != 0
    assert "use a number with s, m, h or d" in bad.stderr


def test_a_hung_scheduler_turns_unhealthy(containers, postgres_image):
    """The scheduler's first backup waits forever (another run holds the lock): healthy at first,
    unhealthy once BACKUP_INTERVAL + BACKUP_HEALTH_GRACE have passed since it started."""
    name = start(containers, postgres_image)
    sh(name, "psql -X -q -d app -c 'CREATE TABLE t (id int)'")
    docker("exec", "-d", name, "flock", "/backups/.lock", "sleep", "120")
    wait_until(name, "! flock -n /backups/.lock true", "the lock holder never took the lock")
    docker("exec", "-d", "-e", "BACKUP_INTERVAL=4s", name, "backup-scheduler")
    wait_until(name, "test -s /backups/.scheduler-started", "the scheduler never started")
    started = time.monotonic()
    assert healthcheck(name, "4s", "4s").returncode == 0, "unhealthy at once"
    deadline = started + 30
    while (check := healthcheck(name, "4s", "4s")).returncode == 0:
        assert time.monotonic() < deadline, "still healthy 30 s after a scheduler hung"
        time.sleep(0.5)
    # Neither too early (interval 4 s + grace 4 s) nor silent about why.
    assert time.monotonic() - started >= 7, "unhealthy before interval + grace had passed"
    assert "no backup succeeded for" in check.stdout
    assert "the scheduler start" in check.stdout
    assert sh(name, "ls /backups | grep -c '^backup-'", check=False).stdout.strip() == "0"


def test_leftovers_of_a_killed_backup_are_removed_by_the_next_run(containers, postgres_image):
    """As in production: the backup runs in its own container (the backup service's), which is
    SIGKILLed (docker kill) while pg_dump runs; the next run, in a new container on the same
    backups volume, removes its temporary folder and any stale scratch database."""
    server = start(containers, postgres_image)
    sh(server, "psql -X -q -d app -c 'CREATE TABLE t (id int); INSERT INTO t VALUES (1)' "
               "-c 'CREATE DATABASE app_verify_keep'")  # fmt: skip
    backups = containers.volume()
    env = {"PGHOST": server, "PGUSER": "postgres", "PGPASSWORD": PASSWORD, "PGDATABASE": "app"}
    opts = (*HARDENED, "--tmpfs", "/var/run/postgresql", "-v", f"{backups}:/backups")
    # pg_dump is held up by a lock on t, then its container is killed.
    docker("exec", "-d", server, "psql", "-X", "-q", "-d", "app", "-c", LOCK_HOLDER)
    wait_until(server,
               "psql -X -tA -d app -c \"SELECT 1 FROM pg_locks "
               "WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'\" | grep -q 1",
               "the lock was never taken")  # fmt: skip
    killed = containers.run(postgres_image, "backup", env=env, opts=opts)
    wait_until(killed, "ls -d /backups/.tmp-backup-*/db.dump", "the backup never reached pg_dump")
    docker("kill", killed)
    # What a run killed during its verification leaves too (made here: this one died earlier).
    sh(server, "psql -X -q -d app -c 'CREATE DATABASE app_verify_4242'")
    sh(server, "psql -X -q -d app -c \"SELECT pg_terminate_backend(pid) FROM pg_locks "
               "WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'\"")  # fmt: skip
    code, listing = containers.run_to_exit(postgres_image, "ls", "-A", "/backups", opts=opts)
    leftover = [entry for entry in listing.split() if entry.startswith(".tmp-backup-")]
    assert code == 0, f"listing /backups failed: {listing}"
    assert len(leftover) == 1, listing

    code, log = containers.run_to_exit(postgres_image, "backup", env=env, opts=opts)
    assert code == 0, log
    assert f"removed {leftover[0]}, left by an interrupted run" in log
    assert "dropped the scratch database app_verify_4242" in log, log
    code, listing = containers.run_to_exit(postgres_image, "ls", "-A", "/backups", opts=opts)
    assert not [entry for entry in listing.split() if entry.startswith(".tmp-")], listing
    assert len([entry for entry in listing.split() if entry.startswith("backup-")]) == 1, listing
    dbs = sh(server, "psql -X -tA -d postgres -c 'SELECT datname FROM pg_database'").stdout.split()
    assert "app_verify_4242" not in dbs
    assert "app_verify_keep" in dbs  # not a name the backup gives its scratch databases
