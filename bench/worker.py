"""The worker's throughput: many small exports at once, then one export of every post while
the worker's peak RSS is sampled."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from bench.config import SMALL_EXPORTS
from bench.console import fail, log, run
from bench.stack import Stack


class WorkerSampler(threading.Thread):
    """Samples the worker container: peak RSS of its processes (VmHWM) and cgroup RSS."""

    def __init__(self, container: str):
        super().__init__(daemon=True)
        self.container = container
        self.stop = threading.Event()
        self.peak_process_mib = 0.0
        self.peak_cgroup_rss_mib = 0.0

    def sample(self) -> None:
        out = run(
            [
                "docker",
                "exec",
                self.container,
                "sh",
                "-c",
                "cat /proc/[0-9]*/status 2>/dev/null | grep VmHWM",
            ],
            check=False,
        ).stdout
        for kb in re.findall(r"VmHWM:\s+(\d+) kB", out):
            self.peak_process_mib = max(self.peak_process_mib, int(kb) / 1024)
        stat = Path(f"/sys/fs/cgroup/memory/docker/{self.container}/memory.stat")
        if stat.exists():
            match = re.search(r"(?m)^total_rss (\d+)$", stat.read_text())
            if match:
                self.peak_cgroup_rss_mib = max(self.peak_cgroup_rss_mib, int(match.group(1)) / 2**20)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.25)


def wait_exports(stack: Stack, owner: str, total: int, limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        done = int(
            stack.psql(
                "SELECT count(*) FROM exports_export e JOIN auth_user u ON u.id = e.owner_id "
                f"WHERE u.username = '{owner}' AND e.status IN ('done', 'failed');"
            )
        )
        if done >= total:
            return time.monotonic() - start
        time.sleep(0.5)
    fail(f"{owner}'s {total} exports not finished within {limit:.0f}s")
    return limit


def exports(stack: Stack) -> dict:
    """SMALL_EXPORTS small exports queued at once and drained; then one export of every post."""
    stack.psql("""
        INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                               is_staff, is_active, date_joined)
        VALUES ('!', false, 'export-small', '', '', '', false, true, now()),
               ('!', false, 'export-all', '', '', '', false, true, now());
        INSERT INTO posts_post (author_id, title, body, created_at, updated_at)
        SELECT u.id, 'Small export post ' || i, 'A short post.', now(), now()
        FROM generate_series(1, 10) AS i, auth_user AS u WHERE u.username = 'export-small';
    """)
    log(f"worker: queueing {SMALL_EXPORTS} small exports (10 posts each)")
    start = time.monotonic()
    stack.manage_shell(
        "from django.contrib.auth import get_user_model\n"
        "from apps.exports import services\n"
        "user = get_user_model().objects.get(username='export-small')\n"
        f"for i in range({SMALL_EXPORTS}):\n"
        "    services.export_create(user=user, export_format='csv' if i % 2 else 'json')\n"
    )
    queued = time.monotonic() - start
    wait_exports(stack, "export-small", SMALL_EXPORTS, 600)
    drained = time.monotonic() - start
    failed = int(stack.psql("SELECT count(*) FROM exports_export WHERE status = 'failed';"))
    log(
        f"worker: {SMALL_EXPORTS} small exports queued in {queued:.1f}s, all finished after "
        f"{drained:.1f}s ({failed} failed)"
    )

    total = int(
        stack.psql(
            # The seeded posts only (not those S6 wrote): all of them, to one owner.
            "DELETE FROM posts_post WHERE title LIKE 'bench post %';"
            "UPDATE posts_post SET author_id = (SELECT id FROM auth_user WHERE username = 'export-all') "
            "WHERE author_id IN (SELECT id FROM auth_user WHERE username LIKE 'bench%');"
            "SELECT count(*) FROM posts_post p JOIN auth_user u ON u.id = p.author_id "
            "WHERE u.username = 'export-all';"
        ).splitlines()[-1]
    )
    stack.psql("VACUUM ANALYZE posts_post;")
    # Fresh worker: the peak RSS then belongs to this export alone.
    stack.compose("restart", "worker")
    stack.compose("up", "-d", "--no-deps", "--wait", "worker", timeout=180)
    worker = stack.container("worker")
    sampler = WorkerSampler(worker)
    sampler.sample()
    baseline = sampler.peak_process_mib
    sampler.start()
    log(f"worker: one CSV export of all {total:,} posts (worker peak RSS sampled every 0.25s)")
    start = time.monotonic()
    stack.manage_shell(
        "from django.contrib.auth import get_user_model\n"
        "from apps.exports import services\n"
        "user = get_user_model().objects.get(username='export-all')\n"
        "services.export_create(user=user, export_format='csv')\n"
    )
    wait_exports(stack, "export-all", 1, 600)
    wall = time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    row = stack.psql(
        "SELECT e.status, coalesce(e.row_count, 0), extract(epoch FROM e.finished_at - e.started_at) "
        "FROM exports_export e JOIN auth_user u ON u.id = e.owner_id WHERE u.username = 'export-all';"
    )
    status, rows, run_s = row.split("|")
    log(
        f"worker: export of {int(rows):,} rows {status} in {wall:.1f}s (task {float(run_s):.1f}s), "
        f"peak process RSS {sampler.peak_process_mib:.0f} MiB (idle {baseline:.0f} MiB)"
    )
    return {
        "small_exports": SMALL_EXPORTS,
        "small_queued_s": round(queued, 1),
        "small_drained_s": round(drained, 1),
        "small_failed": failed,
        "big_rows": int(rows),
        "big_status": status,
        "big_wall_s": round(wall, 1),
        "big_task_s": round(float(run_s), 1),
        "worker_peak_rss_mib": round(sampler.peak_process_mib, 1),
        "worker_idle_rss_mib": round(baseline, 1),
        "worker_cgroup_peak_rss_mib": round(sampler.peak_cgroup_rss_mib, 1),
    }
