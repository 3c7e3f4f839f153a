"""drs/postgres's off-site copies (docs/backups.md, "Off-site copies") in the image alone, to a
restic repository on a local path (the tests/backup suite uses an SFTP server): every verified
backup is copied, read back and listed; a copy restored from the repository is the backup, byte
for byte; a failed copy and a corrupt repository are loud (exit 1, health check, listing)."""

from __future__ import annotations

from test_postgres_backup import sh, start

REPO = "/backups/offsite-repo"  # on the test's tmpfs: a local path stands for any repository
KEY = "an off-site key for the tests only"
OFFSITE = f"OFFSITE_REPOSITORY={REPO} OFFSITE_PASSWORD='{KEY}'"
# 64 random bytes written over the middle of the repository's largest pack file (size unchanged).
CORRUPT_LARGEST_PACK = (
    "f=$(find {repo}/data -type f -printf '%s %p\\n' | sort -n | tail -n1 | cut -d' ' -f2) && "
    'chmod u+w "$f" && dd if=/dev/urandom of="$f" conv=notrunc bs=1 count=64 '
    'seek=$(( $(stat -c %s "$f") / 2 )) status=none'
)


def backup_with_offsite(name: str, env: str = OFFSITE, check: bool = True):
    return sh(name, f"{env} backup", check=check)


def with_data(containers, postgres_image) -> str:
    name = start(containers, postgres_image)
    sh(name, "psql -X -q -d app -c \"CREATE TABLE t (id int PRIMARY KEY, s text); "
             "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300) g;\" "
             "&& mkdir -p /srv/media/exports && echo hello > /srv/media/exports/a.csv")  # fmt: skip
    return name


def test_a_verified_backup_is_copied_read_back_and_restorable_from_the_repository(
    containers, postgres_image
):
    name = with_data(containers, postgres_image)
    done = backup_with_offsite(name)
    backup = done.stdout.strip()
    assert backup.startswith("backup-"), done.stdout
    assert "no repository at" in done.stderr, done.stderr  # created on first use
    assert "every checksum matches" in done.stderr, done.stderr
    assert f"off-site: {backup} copied as snapshot" in done.stderr, done.stderr
    listing = sh(name, f"{OFFSITE} list-backups").stdout
    assert f"off-site: last good copy {backup}" in listing, listing
    assert backup in sh(name, f"{OFFSITE} offsite-snapshots").stdout
    assert sh(name, f"{OFFSITE} backup-healthcheck", check=False).returncode == 0
    # The copy, restored with restic alone, is the verified backup byte for byte.
    sh(name, f"RESTIC_PASSWORD='{KEY}' restic --no-cache -r {REPO} restore latest --target /tmp/r "
             f"&& cd /tmp/r/backups/{backup} && sha256sum --quiet -c SHA256SUMS "
             f"&& cmp SHA256SUMS /backups/{backup}/SHA256SUMS")  # fmt: skip
    # Encrypted: the key is needed to read anything.
    wrong = sh(name, f"RESTIC_PASSWORD=wrong restic --no-cache -r {REPO} snapshots", check=False)
    assert wrong.returncode != 0, wrong.stdout
    # Retention: with one copy a day kept, a second backup the same day replaces the first.
    second = backup_with_offsite(name, f"{OFFSITE} OFFSITE_KEEP_WEEKLY=0 OFFSITE_KEEP_MONTHLY=0 "
                                       "OFFSITE_KEEP_DAILY=1").stdout.strip()  # fmt: skip
    snapshots = sh(name, f"{OFFSITE} offsite-snapshots").stdout
    assert second in snapshots, snapshots
    assert backup not in snapshots, snapshots


def test_a_backup_gone_here_is_fetched_back_and_restored(containers, postgres_image):
    """The local copy lost (a new VM, or rotated away): offsite-fetch brings it back, checked
    against its SHA256SUMS, and restore restores it."""
    name = with_data(containers, postgres_image)
    backup = backup_with_offsite(name).stdout.strip()
    sh(name, f"rm -rf /backups/{backup} && psql -X -q -d app -c 'DELETE FROM t WHERE id > 10' "
             "&& rm /srv/media/exports/a.csv")  # fmt: skip
    fetched = sh(name, f"{OFFSITE} offsite-fetch {backup}")
    assert fetched.stdout.strip() == backup, fetched.stderr
    assert "checksums match" in fetched.stderr, fetched.stderr
    sh(name, f"restore {backup}")
    assert sh(name, "psql -X -tA -d app -c 'SELECT count(*) FROM t'").stdout.strip() == "300"
    assert sh(name, "cat /srv/media/exports/a.csv").stdout.strip() == "hello"
    unknown = sh(name, f"{OFFSITE} offsite-fetch backup-19990101T000000Z", check=False)
    assert unknown.returncode == 1
    assert "no off-site copy of backup-19990101T000000Z" in unknown.stderr, unknown.stderr


def test_a_failed_copy_is_loud_and_keeps_the_local_backup(containers, postgres_image):
    name = with_data(containers, postgres_image)
    first = backup_with_offsite(name).stdout.strip()
    # The repository's key is wrong (a changed env file): the copy fails, the backup stays.
    failed = backup_with_offsite(
        name, f"OFFSITE_REPOSITORY={REPO} OFFSITE_PASSWORD=not-the-key", check=False
    )
    assert failed.returncode == 1, failed.stderr
    assert "OFF-SITE COPY FAILED" in failed.stderr, failed.stderr
    assert len(sh(name, "ls -d /backups/backup-*").stdout.split()) == 2
    health = sh(name, f"{OFFSITE} backup-healthcheck", check=False)
    assert health.returncode == 1
    assert "OFF-SITE COPY FAILED" in health.stdout, health.stdout
    listing = sh(name, f"{OFFSITE} list-backups", check=False)
    assert listing.returncode == 1, listing.stdout
    assert "LAST OFF-SITE COPY FAILED" in listing.stdout, listing.stdout
    assert f"off-site: last good copy {first}" in listing.stdout, listing.stdout
    # Without off-site copies configured, the local state alone counts.
    assert sh(name, "backup-healthcheck", check=False).returncode == 0
    # The next good copy clears it.
    backup_with_offsite(name)
    assert sh(name, f"{OFFSITE} backup-healthcheck", check=False).returncode == 0


def test_corrupt_data_in_the_repository_is_found_by_the_check(containers, postgres_image):
    name = with_data(containers, postgres_image)
    backup_with_offsite(name)
    assert "check passed" in sh(name, f"{OFFSITE} offsite-check").stderr
    assert "last full check ok" in sh(name, f"{OFFSITE} list-backups").stdout
    sh(name, CORRUPT_LARGEST_PACK.format(repo=REPO))
    check = sh(name, f"{OFFSITE} offsite-check", check=False)
    assert check.returncode == 1, check.stderr
    assert "OFF-SITE CHECK FAILED" in check.stderr, check.stderr
    health = sh(name, f"{OFFSITE} backup-healthcheck", check=False)
    assert health.returncode == 1
    assert "OFF-SITE CHECK FAILED" in health.stdout, health.stdout
    listing = sh(name, f"{OFFSITE} list-backups", check=False)
    assert listing.returncode == 1
    assert "LAST OFF-SITE CHECK FAILED" in listing.stdout, listing.stdout
