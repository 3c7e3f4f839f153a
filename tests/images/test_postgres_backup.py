"""Contract tests of drs/postgres's backup commands (backup, list-backups, restore,
backup-healthcheck) in the image alone: inside the database container over the Unix socket,
hardened (read-only root, no capabilities). The prod stack's use of them is tested by
tests/backup."""

from __future__ import annotations

import time

from imagetools import HARDENED, docker, wait_healthy

PASSWORD = "correct horse battery staple"


def sh(name: str, script: str, check: bool = True):
    proc = docker("exec", name, "bash", "-c", script, check=False, timeout=120)
    if check:
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
    return proc


def start(containers, image: str) -> str:
    opts = (*HARDENED, "--tmpfs", "/var/run/postgresql", "--tmpfs", "/backups:mode=1777",
            "--tmpfs", "/srv/media:mode=1777")  # fmt: skip
    env = {"POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": "app"}
    name = containers.run(image, env=env, opts=opts)
    wait_healthy(name)
    return name


def test_backup_verify_restore_roundtrip_inside_the_container(containers, postgres_image):
    name = start(containers, postgres_image)
    sh(name, "psql -X -q -d app -c \"CREATE TABLE t (id int PRIMARY KEY, s text); "
             "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g;\" "
             "&& echo hello > /srv/media/file.txt")  # fmt: skip
    backup = sh(name, "backup")
    backup_name = backup.stdout.strip()
    assert backup_name.startswith("backup-")
    assert "rows match" in backup.stderr
    listing = sh(name, "list-backups").stdout
    assert f"{backup_name}" in listing, listing
    assert "verified" in listing, listing
    assert "last run: ok" in listing, listing
    assert sh(name, f"ls /backups/{backup_name}").stdout.split() == [
        "SHA256SUMS", "db.dump", "globals.sql", "media.tar.gz", "rows.txt",
    ]  # fmt: skip
    assert sh(name, f"cat /backups/{backup_name}/rows.txt").stdout.strip() == "public.t 500"

    sh(name, "psql -X -q -d app -c 'DELETE FROM t WHERE id > 100' && rm /srv/media/file.txt")
    sh(name, f"restore {backup_name}")
    assert sh(name, "psql -X -tA -d app -c 'SELECT count(*) FROM t'").stdout.strip() == "500"
    assert sh(name, "cat /srv/media/file.txt").stdout.strip() == "hello"
    # No scratch database is left behind by the verification.
    dbs = sh(name, "psql -X -tA -d postgres -c 'SELECT datname FROM pg_database'").stdout.split()
    assert not [d for d in dbs if "verify" in d], dbs


def test_failed_backup_is_loud_and_leaves_nothing_half_written(containers, postgres_image):
    name = start(containers, postgres_image)
    sh(name, "backup")
    # The database to back up does not exist: the dump fails.
    failed = sh(name, "PGDATABASE=nope backup", check=False)
    assert failed.returncode != 0
    assert "BACKUP FAILED" in failed.stderr
    assert len(sh(name, "ls -d /backups/backup-*").stdout.split()) == 1
    assert sh(name, "ls -A /backups | grep -c '^.tmp-'", check=False).stdout.strip() == "0"
    assert sh(name, "backup-healthcheck", check=False).returncode != 0
    listing = sh(name, "list-backups", check=False)
    assert listing.returncode != 0, f"list-backups passed after a failed run: {listing.stdout}"
    assert "LAST BACKUP RUN FAILED" in listing.stdout, listing.stdout
    # The next good run clears it.
    sh(name, "backup")
    assert sh(name, "backup-healthcheck", check=False).returncode == 0


def test_backup_while_the_media_folder_is_being_written(containers, postgres_image):
    """Exports are written (temporary file, then rename) and purged while backups run: every
    backup succeeds and holds whole files only, never a temporary one."""
    name = start(containers, postgres_image)
    # The churn: files written, renamed into place and deleted 20 later, in subfolders, until
    # told to stop (bounded: 10 minutes); /tmp/churn-at counts the files written so far.
    sh(name, "mkdir -p /srv/media/exports && (i=0; "
             "while [ ! -e /tmp/churn-stop ] && [ $SECONDS -lt 600 ]; do i=$((i + 1)); "
             "d=/srv/media/exports/$((i % 7)); mkdir -p $d; "
             "printf 'row %s\\n' $i > $d/.f$i.csv.x.tmp; mv $d/.f$i.csv.x.tmp $d/f$i.csv; "
             "rm -f /srv/media/exports/$(( (i - 20) % 7 ))/f$((i - 20)).csv; "
             "echo $i > /tmp/churn-at; "
             "done; touch /tmp/churn-done) >/dev/null 2>&1 &")  # fmt: skip

    def written() -> int:
        return int(sh(name, "cat /tmp/churn-at 2>/dev/null || echo 0").stdout.strip() or 0)

    deadline = time.monotonic() + 30
    while written() < 50:
        assert time.monotonic() < deadline, "the churn never got going"
        time.sleep(0.2)
    names = []
    for _ in range(3):
        before = written()
        done = sh(name, "backup", check=False)
        assert done.returncode == 0, f"backup failed while media was written:\n{done.stderr}"
        names.append(done.stdout.strip())
        assert written() > before, "no file was written while the backup ran: nothing was tested"
    # Still churning after the last backup: each one ran while files were written.
    assert sh(name, "test -e /tmp/churn-done", check=False).returncode != 0, "the churn ended"
    sh(name, "touch /tmp/churn-stop")
    deadline = time.monotonic() + 30
    while sh(name, "test -e /tmp/churn-done", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the churn did not stop when told"
        time.sleep(0.2)
    checked = 0
    for backup_name in names:
        listing = sh(name, f"tar -tzvf /backups/{backup_name}/media.tar.gz").stdout
        assert ".tmp" not in listing, listing
        # Each archived file is whole: one line naming itself.
        check = sh(name, f"mkdir /tmp/{backup_name} && tar -C /tmp/{backup_name} -xzf "
                         f"/backups/{backup_name}/media.tar.gz && cd /tmp/{backup_name} && "
                         "for f in $(find . -name 'f*.csv'); do n=${f##*/f}; "
                         '[ "$(cat $f)" = "row ${n%.csv}" ] || echo "bad $f"; echo checked; done; '
                         f"rm -rf /tmp/{backup_name}")  # fmt: skip
        assert "bad" not in check.stdout, check.stdout
        checked += check.stdout.count("checked")
    assert checked, "no export file in any backup's media archive: nothing was checked"
    assert sh(name, "backup-healthcheck", check=False).returncode == 0


def test_backup_dir_must_be_writable(containers, postgres_image):
    proc = containers.client(postgres_image, "bash", "-c", "BACKUP_DIR=/nonexistent backup")
    assert proc.returncode != 0
    assert "mount the backups volume there" in proc.stderr


def test_wal_archive_spools_each_segment_once_and_never_overwrites(containers, postgres_image):
    """The server's archive_command (docs/backups.md, "Point-in-time recovery"): a segment,
    gzipped into the spool, group-readable for the backup service; archived again with the same
    content it succeeds (PostgreSQL retries after a crash), with other content it fails."""
    name = start(containers, postgres_image)
    spool = "WAL_SPOOL_DIR=/backups/spool"
    sh(name, "mkdir /backups/spool && head -c 65536 /dev/urandom > /tmp/seg "
             "&& head -c 65536 /dev/urandom > /tmp/other")  # fmt: skip
    sh(name, f"{spool} wal-archive /tmp/seg 000000010000000000000042")
    assert sh(name, "stat -c %a /backups/spool/000000010000000000000042.gz").stdout.strip() == "640"
    sh(name, "gzip -dc /backups/spool/000000010000000000000042.gz | cmp - /tmp/seg")
    sh(name, f"{spool} wal-archive /tmp/seg 000000010000000000000042")
    other = sh(name, f"{spool} wal-archive /tmp/other 000000010000000000000042", check=False)
    assert other.returncode != 0
    assert "not overwriting" in other.stderr, other.stderr
    sh(name, "gzip -dc /backups/spool/000000010000000000000042.gz | cmp - /tmp/seg")
    assert sh(name, "ls -A /backups/spool").stdout.split() == ["000000010000000000000042.gz"]
