"""Build times: a cold build of the prod images, and a rebuild after a one-line change."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.config import PROJECT, ROOT
from bench.console import log, run
from bench.stack import compose


def builds(env_file: Path) -> dict:
    """Cold build of the prod images (no layer cache; pip's download cache mount stays), then a
    rebuild after a one-line Python change. Both on a temporary copy of services/web, tagged
    bench-build, so the tree and the real images are never touched."""
    tag = "bench-build"
    with tempfile.TemporaryDirectory(prefix="drs-bench-build-") as tmp:
        web = Path(tmp) / "web"
        shutil.copytree(
            ROOT / "services" / "web",
            web,
            ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"),
        )
        fragment = Path(tmp) / "build.yml"
        fragment.write_text(
            f"services:\n  web:\n    build:\n      context: {web}\n"
            f"  migrate:\n    build:\n      context: {web}\n"
        )

        def build(*args: str, timeout: float) -> None:
            compose(
                f"{PROJECT}-build",
                env_file,
                "build",
                *args,
                stack="prod",
                extra_files=(str(fragment),),
                tag=tag,
                timeout=timeout,
            )

        log("build: cold build of the prod images (no layer cache), tag bench-build")
        start = time.monotonic()
        build("--no-cache", "postgres", "redis", "web", "worker", "nginx", timeout=1800)
        cold = time.monotonic() - start
        log(f"build: cold {cold:.0f}s; now a one-line change in apps/posts/views.py")
        with (web / "apps" / "posts" / "views.py").open("a") as handle:
            handle.write("# benchmark: a one-line change\n")
        start = time.monotonic()
        build("web", "worker", "nginx", timeout=900)
        rebuild = time.monotonic() - start
        log(f"build: rebuild after a one-line change {rebuild:.1f}s")
    images = [f"drs/{name}:{tag}" for name in ("web", "worker", "nginx", "redis", "postgres")]
    run(["docker", "image", "rm", *images], check=False)
    return {"cold_build_s": round(cold, 1), "rebuild_one_line_s": round(rebuild, 1)}
