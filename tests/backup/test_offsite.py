"""Off-site copies as an operator sets them up (docs/backups.md, "Off-site copies"): an SFTP server
built from Debian's openssh-server (tests/backup/sftp) on the stack's `offsite` network, the
OFFSITE_* settings written into the stack's env file, the backup service recreated. Backups reach
it encrypted and are listed; a failed copy and data corrupted on the server are loud.
Runs after test_backup.py; the settings and the server are removed at the end."""

import os
import subprocess
import time
from pathlib import Path

import pytest
from test_backup import backup_names, make, remove_backup

from conftest import ROOT

SFTP_CONTEXT = Path(ROOT, "tests", "backup", "sftp")
REPOSITORY = "/home/drs/drs-repo"
# A key pair made on the server: the public half authorised, the private one printed (base64).
NEW_CLIENT_KEY = (
    "ssh-keygen -q -t ed25519 -N '' -C drs-test -f /tmp/id "
    "&& cat /tmp/id.pub >> /home/drs/.ssh/authorized_keys "
    "&& base64 -w0 /tmp/id && rm /tmp/id /tmp/id.pub"
)
# 64 random bytes written over the middle of the repository's largest pack file (size unchanged).
CORRUPT_LARGEST_PACK = (
    f"f=$(find {REPOSITORY}/data -type f -printf '%s %p\\n' | sort -n | tail -n1 | cut -d' ' -f2) "
    '&& chmod u+w "$f" && dd if=/dev/urandom of="$f" conv=notrunc bs=1 count=64 '
    'seek=$(( $(stat -c %s "$f") / 2 )) status=none'
)


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def build_sftp_image() -> str:
    tag = f"drs/test-sftp:{os.environ.get('DRS_TAG', 'latest')}"
    docker("build", "-q", "-t", tag, str(SFTP_CONTEXT), timeout=600)
    return tag


def server_sh(server: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return docker("exec", server, "sh", "-c", script, check=check)


def backup_health(stack) -> str:
    return stack.inspect(stack.container_ids("backup")[0])["State"]["Health"]["Status"]


def wait_health(stack, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while backup_health(stack) != status:
        assert time.monotonic() < deadline, f"the backup service not {status} after {timeout}s"
        time.sleep(1)


def set_env(env_file: str, values: dict[str, str]) -> None:
    """Rewrites the env file in place (its mode kept) with these settings replacing any earlier."""
    path = Path(env_file)
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.split("=", 1)[0] not in values
    ]
    path.write_text("\n".join([*kept, *(f"{k}={v}" for k, v in values.items())]) + "\n")


@pytest.fixture(scope="module")
def offsite(stack):
    """The SFTP server, named `offsite` on the stack's offsite network, with a key made for this
    run; the stack's env file points the backup service at it. Undone afterwards."""
    image = build_sftp_image()
    server = f"{stack.project}-offsite-sftp"
    docker("rm", "-f", server, check=False)
    docker("run", "-d", "--name", server, "--network", f"{stack.project}_offsite",
           "--network-alias", "offsite", image)  # fmt: skip
    original = Path(stack.env_file).read_text(encoding="utf-8")
    try:
        key = server_sh(server, NEW_CLIENT_KEY).stdout
        host_key = server_sh(server, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        set_env(stack.env_file, {
            "OFFSITE_REPOSITORY": f"sftp:drs@offsite:{REPOSITORY}",
            "OFFSITE_SSH_KEY": key.strip(),
            "OFFSITE_SSH_KNOWN_HOSTS": f"offsite {host_key[0]} {host_key[1]}",
        })  # fmt: skip
        stack.compose("up", "-d", "--no-deps", "--wait", "backup", timeout=300)
        yield server
    finally:
        Path(stack.env_file).write_text(original, encoding="utf-8")
        stack.compose(
            "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "backup", "-c",
            "rm -rf /backups/.offsite-* /backups/.restic-cache /backups/.restic-tmp",
        )  # fmt: skip
        stack.compose("up", "-d", "--no-deps", "--wait", "backup", timeout=300)
        docker("rm", "-fv", server, check=False)


def test_backups_reach_the_offsite_server_encrypted_and_are_listed(stack, offsite):
    out = make(stack, "backup")
    name = out.stdout.strip().split("make restore FILE=")[-1].rstrip(")").strip()
    assert name.startswith("backup-"), out.stdout
    assert "every checksum matches" in out.stderr + out.stdout, out.stderr
    # On the server: snapshots and their data (the backup's copy, and the WAL shipper's
    # snapshots of archived WAL and media: docs/backups.md, "Point-in-time recovery").
    snapshots = server_sh(offsite, f"ls {REPOSITORY}/snapshots").stdout.split()
    assert snapshots, "no snapshot on the server"
    assert server_sh(offsite, f"find {REPOSITORY}/data -type f | wc -l").stdout.strip() != "0"
    listing = make(stack, "backups").stdout
    assert f"off-site: last good copy {name}" in listing, listing
    assert "sftp:drs@offsite:" in listing, listing
    copies = stack.compose("run", "--rm", "--no-deps", "-T", "backup", "offsite-snapshots")
    assert name in copies, copies
    # Encrypted client-side: without the key (here a wrong one) nothing can be read.
    wrong = stack.run("run", "--rm", "--no-deps", "-T", "-e", "OFFSITE_PASSWORD=not-the-key",
                      "backup", "offsite-snapshots")  # fmt: skip
    assert wrong.returncode != 0, wrong.stdout
    assert name not in wrong.stdout
    assert subprocess.run(
        ["docker", "exec", stack.container_ids("backup")[0], "backup-healthcheck"],
        capture_output=True, text=True, check=False,
    ).returncode == 0  # fmt: skip
    # Gone here (as on a new VM): fetched back from the server, checked, listed again.
    remove_backup(stack, name)
    assert name not in backup_names(stack)
    fetched = make(stack, "offsite-fetch", f"FILE={name}")
    assert "checksums match" in fetched.stderr, fetched.stderr
    assert name in backup_names(stack)


def test_a_failed_copy_is_loud_and_the_next_good_one_clears_it(stack, offsite):
    last_good = make(stack, "backups").stdout
    docker("stop", offsite)
    try:
        failed = make(stack, "backup", check=False)
        assert failed.returncode != 0, failed.stdout
        assert "OFF-SITE COPY FAILED" in failed.stderr, failed.stderr
        listing = make(stack, "backups", check=False)
        assert listing.returncode != 0, listing.stdout
        assert "LAST OFF-SITE COPY FAILED" in listing.stdout, listing.stdout
        # The last good copy is still named (the one before the failure).
        good_line = next(x for x in last_good.splitlines() if x.startswith("off-site: last good"))
        assert good_line.split(" at ")[0] in listing.stdout, listing.stdout
        wait_health(stack, "unhealthy")
    finally:
        docker("start", offsite)
    make(stack, "backup")
    wait_health(stack, "healthy")
    assert "LAST OFF-SITE COPY FAILED" not in make(stack, "backups").stdout


def test_data_corrupted_on_the_server_is_found_by_offsite_check(stack, offsite):
    assert "every off-site copy is intact" in make(stack, "offsite-check").stdout
    server_sh(offsite, CORRUPT_LARGEST_PACK)
    check = make(stack, "offsite-check", check=False)
    assert check.returncode != 0, check.stdout
    assert "OFF-SITE CHECK FAILED" in check.stderr, check.stderr
    listing = make(stack, "backups", check=False)
    assert listing.returncode != 0
    assert "LAST OFF-SITE CHECK FAILED" in listing.stdout, listing.stdout
    wait_health(stack, "unhealthy")
