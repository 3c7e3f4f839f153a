"""A backup whose dump outlasts the server's timeouts still succeeds (issue: the session holding
the dump's snapshot sits idle in its transaction while pg_dump runs, and
idle_in_transaction_session_timeout used to kill it, failing every backup longer than that).
Made cheap: the timeouts (idle in transaction and statement) are lowered to 1 s for the database,
and pg_dump is held up for several seconds by a lock on a table, so the dump outlasts them without
a large database."""

from __future__ import annotations

import time

from imagetools import docker
from test_postgres_backup import sh, start

HOLD_SECONDS = 6  # how long pg_dump waits behind the lock: several times the 1 s timeout


def test_a_dump_longer_than_the_server_timeouts_succeeds(containers, postgres_image):
    name = start(containers, postgres_image)
    sh(name, "psql -X -q -d app -c \"CREATE TABLE t (id int PRIMARY KEY); "
             "INSERT INTO t SELECT generate_series(1, 100); "
             "ALTER DATABASE app SET idle_in_transaction_session_timeout = '1s'; "
             "ALTER DATABASE app SET statement_timeout = '1s';\"")  # fmt: skip
    # Another session takes the table and keeps it: pg_dump waits for it (no lock_timeout).
    docker("exec", "-d", "-e", "PGOPTIONS=-c statement_timeout=0", name, "psql", "-X", "-q",
           "-d", "app", "-c",
           f"BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({HOLD_SECONDS}); "
           "COMMIT;")  # fmt: skip
    lock_query = (
        "SELECT count(*) FROM pg_locks "
        "WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock'"
    )
    deadline = time.monotonic() + 30  # hang guard, generous
    while sh(name, f'psql -X -tA -d app -c "{lock_query}"').stdout.strip() != "1":
        assert time.monotonic() < deadline, "the lock holder never got its lock"
        time.sleep(0.2)

    started = time.monotonic()
    backup = sh(name, "backup", check=False)
    took = time.monotonic() - started
    # The dump really outlasted the 1 s timeout, else this test proves nothing.
    assert took > 2, f"the backup took {took:.1f} s: the lock did not hold pg_dump up"
    assert backup.returncode == 0, backup.stderr
    assert "rows match" in backup.stderr
    backup_name = backup.stdout.strip()
    assert sh(name, f"cat /backups/{backup_name}/rows.txt").stdout.strip() == "public.t 100"
