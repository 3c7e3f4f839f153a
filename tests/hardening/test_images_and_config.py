"""No secret (or the build CA) in any image; check --deploy; compose-lint (hadolint runs in
lint)."""

import base64
import json
import os
import posixpath
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

from conftest import COMPOSE, ROOT

SECRET_KEYS = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
FORBIDDEN_ENV = {*SECRET_KEYS, "PIP_CERT", "REQUESTS_CA_BUNDLE"}
CHUNK = 1 << 20


def stack_images(stack) -> dict[str, str]:
    """The images the stack's containers run, by ID (a tag may since point elsewhere): names."""
    images: dict[str, set[str]] = {}
    for cid in stack.compose("ps", "-q").split():
        container = stack.inspect(cid)
        images.setdefault(container["Image"], set()).add(container["Config"]["Image"])
    return {image: " ".join(sorted(names)) for image, names in images.items()}


def pem_certs(data: str) -> list[bytes]:
    blocks = re.findall(
        r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", data, re.DOTALL
    )
    return [base64.b64decode("".join(b.split())) for b in blocks]


def cert_needles(label: str, der: bytes) -> dict[str, bytes]:
    """A certificate as it would sit in a layer: its signature (the DER's last 64 bytes, unique
    to it) and the last whole 64-character line of its PEM form."""
    b64 = base64.b64encode(der)
    last_full = len(b64) // 64 - 1
    return {
        f"{label} (DER)": der[-64:],
        f"{label} (PEM)": b64[last_full * 64 : last_full * 64 + 64],
    }


def build_ca_needles(stack) -> dict[str, bytes]:
    """Certificates of the build CA bundle that Debian's own ca-certificates does not ship:
    the proxy CA handed to pip as a BuildKit secret (the file scripts/compose.sh gives builds)."""
    config = json.loads(stack.compose("config", "--format", "json"))
    bundle = config["secrets"]["ca_bundle"]["file"]
    bundle_path = Path(bundle)
    if not bundle_path.is_file() or bundle_path.stat().st_size == 0:
        return {}
    with bundle_path.open(encoding="utf-8", errors="replace") as handle:
        host = pem_certs(handle.read())
    image = stack.inspect(stack.container_ids("web")[0])["Config"]["Image"]
    shipped = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image,
         "/etc/ssl/certs/ca-certificates.crt"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    shipped_certs = set(pem_certs(shipped))
    assert shipped_certs, "the web image ships no CA certificates to compare with"
    needles = {}
    for i, der in enumerate(d for d in host if d not in shipped_certs):
        needles |= cert_needles(f"build CA #{i}", der)
    return needles


def scan_saved_images(images: list[str], needles: dict[str, bytes]) -> dict[str, set[str]]:
    """Stream one `docker save` of every image (by ID; each layer uncompressed, shared layers
    once) and report, per image, which needles occur in its layers or its config (Env,
    history)."""
    longest = max(len(n) for n in needles.values())
    hits: dict[str, set[str]] = {}  # archive member -> needles found in it
    links: dict[str, str] = {}  # a layer saved once, linked from another image's folder
    manifest = None
    proc = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        for member in archive:
            if member.issym():
                links[member.name] = posixpath.normpath(
                    posixpath.join(posixpath.dirname(member.name), member.linkname)
                )
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if member.name == "manifest.json":
                manifest = json.load(handle)
                continue
            tail, found = b"", set()
            while chunk := handle.read(CHUNK):
                window = tail + chunk
                found |= {name for name, needle in needles.items() if needle in window}
                tail = window[-longest:]
            hits[member.name] = found
    assert proc.wait() == 0, "docker save failed"
    assert manifest, "docker save wrote no manifest.json"
    by_image = {}
    for entry in manifest:
        parts = [links.get(p, p) for p in (entry["Config"], *entry["Layers"])]
        assert all(p in hits for p in parts), (entry["Config"], parts, sorted(hits))
        image = "sha256:" + re.search(r"[0-9a-f]{64}", entry["Config"]).group(0)
        by_image[image] = set().union(*(hits[p] for p in parts))
    assert sorted(by_image) == sorted(images), (sorted(by_image), images)
    return by_image


def leaks(images: list[str], needles: dict[str, bytes]) -> dict[str, set[str]]:
    """Per image: forbidden variable names in its Env, needles in `docker history`, and
    needles anywhere in what `docker save` writes. Names only: never a secret's value."""
    found: dict[str, set[str]] = {image: set() for image in images}
    for image in images:
        env = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        names = {e.split("=", 1)[0] for e in json.loads(env) or []}
        found[image] |= {f"env {name}" for name in names & FORBIDDEN_ENV}
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert history.strip(), f"{image} has no history"
        found[image] |= {f"history {k}" for k, n in needles.items() if n in history.encode()}
    for image, names in scan_saved_images(images, needles).items():
        found[image] |= {f"saved {name}" for name in names}
    return found


# A throwaway image built as the real ones are (Compose with BuildKit and the `ca_bundle` build
# secret, FROM the stack's web image) that makes each mistake the scan exists to catch once.
CANARY_DOCKERFILE = """\
ARG WEB_IMAGE
FROM ${WEB_IMAGE}
ARG LEAKED_POSTGRES_PASSWORD
ARG LEAKED_REDIS_PASSWORD
USER root
# The env file copied in: a secret in a layer.
COPY leaked.env /srv/leaked.env
# A secret as a variable of the image: in its config and history.
ENV REDIS_PASSWORD=${LEAKED_REDIS_PASSWORD}
# The build secret copied out of its mount: the CA in a layer.
RUN --mount=type=secret,id=ca_bundle cp /run/secrets/ca_bundle /srv/build-ca.pem
# A build argument used by a RUN: recorded in the history.
RUN test -n "${LEAKED_POSTGRES_PASSWORD}"
"""
CANARY_COMPOSE = """\
services:
  canary:
    image: ${CANARY_IMAGE}
    build:
      context: .
      args:
        WEB_IMAGE: ${WEB_IMAGE}
        LEAKED_POSTGRES_PASSWORD: ${LEAKED_POSTGRES_PASSWORD}
        LEAKED_REDIS_PASSWORD: ${LEAKED_REDIS_PASSWORD}
      secrets: [ca_bundle]
secrets:
  ca_bundle:
    file: ./ca.pem
"""
# Where the scan must find each planted mistake.
CANARY_FINDINGS = {
    "saved DJANGO_SECRET_KEY",
    "env REDIS_PASSWORD",
    "history REDIS_PASSWORD",
    "saved REDIS_PASSWORD",
    "history POSTGRES_PASSWORD",
    "saved POSTGRES_PASSWORD",
    "saved canary CA (PEM)",
}


def build_canary(tag: str, web_image: str, secrets: dict[str, str], folder: str) -> dict:
    """Builds the canary image `tag` in `folder`; returns the canary CA's needles.
    Without the layer cache: BuildKit's cache key ignores a secret's content, so a cached layer
    would hold an earlier run's CA."""
    base = Path(folder)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=drs canary build CA",
         "-keyout", base / "ca-key.pem", "-out", base / "ca.pem"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with (base / "ca.pem").open(encoding="ascii") as handle:
        (canary_ca,) = pem_certs(handle.read())
    with (base / "leaked.env").open("w", encoding="utf-8") as handle:
        handle.write(f"DJANGO_SECRET_KEY={secrets['DJANGO_SECRET_KEY']}\n")
    with (base / "Dockerfile").open("w", encoding="utf-8") as handle:
        handle.write(CANARY_DOCKERFILE)
    with (base / "compose.yml").open("w", encoding="utf-8") as handle:
        handle.write(CANARY_COMPOSE)
    env = {
        **os.environ, "COMPOSE_BAKE": "false", "DOCKER_BUILDKIT": "1", "CANARY_IMAGE": tag,
        "WEB_IMAGE": web_image,
        "LEAKED_POSTGRES_PASSWORD": secrets["POSTGRES_PASSWORD"],
        "LEAKED_REDIS_PASSWORD": secrets["REDIS_PASSWORD"],
    }  # fmt: skip
    done = subprocess.run(
        ["docker", "compose", "-p", f"drs-canary-{uuid.uuid4().hex[:8]}", "-f", "compose.yml",
         "build", "--no-cache", "canary"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, "building the canary image failed:\n" + done.stderr[-3000:]
    return cert_needles("canary CA", canary_ca)


def image_id(name: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", name],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_no_secret_or_build_ca_in_any_image_layer_or_history(stack):
    """The scan is first shown to work: a canary image built as ours are, with the stack's own
    secrets and a CA leaked into it the ways a build can leak them, is caught each way. Then
    the same scan, in the same pass, finds nothing in the images the stack runs."""
    env = stack.env_values()
    secrets = {key: env.get(key, "") for key in SECRET_KEYS}
    short = [key for key, value in secrets.items() if len(value) < 16]
    assert not short, f"the env file has no generated value for {short}: nothing to look for"
    needles = {key: value.encode() for key, value in secrets.items()}
    needles |= build_ca_needles(stack)
    images = stack_images(stack)
    # web, worker (beat too), nginx, postgres (backup too), redis
    assert len(images) >= 5, images
    web_image = stack.inspect(stack.container_ids("web")[0])["Config"]["Image"]
    tag = f"drs-canary/leaky:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="drs-canary-") as folder:
        try:
            canary_needles = build_canary(tag, web_image, secrets, folder)
            canary = image_id(tag)
            found = leaks([*images, canary], needles | canary_needles)
        finally:
            subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
    gone = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    assert gone.returncode != 0, f"the canary image {tag} was not removed"
    missed = CANARY_FINDINGS - found.pop(canary)
    assert not missed, f"the scan missed leaks planted in the canary image: {sorted(missed)}"
    assert {images[i]: f for i, f in found.items()} == {name: set() for name in images.values()}


def test_check_deploy_passes_in_the_running_web_container(stack):
    env = stack.env_values()
    # The stack under test may serve plain HTTP on loopback: give the TLS settings a deployment
    # behind HTTPS has, unless the env file sets them itself.
    extra = []
    if env.get("DJANGO_SECURE_SSL_REDIRECT", "0") in ("", "0"):
        extra += ["-e", "DJANGO_SECURE_SSL_REDIRECT=1"]
    if env.get("DJANGO_HSTS_SECONDS", "0") in ("", "0"):
        extra += ["-e", "DJANGO_HSTS_SECONDS=31536000"]
    out = stack.compose(
        "exec", "-T", *extra, "web", "python", "manage.py", "check", "--deploy",
        "--fail-level", "WARNING",
    )  # fmt: skip
    assert "no issues" in out, out


def test_compose_lint_passes_on_the_prod_configuration(tmp_path):
    """With the opt-in profiles' services too (flower)."""
    rendered = subprocess.run(
        [COMPOSE, "--env-file", "compose/prod.env.example", "prod", "--profile", "flower",
         "config", "--no-interpolate"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    merged = tmp_path / "docker-compose.prod.merged.yml"
    merged.write_text(rendered)
    lint = Path(sys.executable).parent / "compose-lint"
    done = subprocess.run(
        [lint, "check", "--no-env", "--fail-on", "low", "--strict-config",
         "--config", Path(ROOT) / ".compose-lint.yml", str(merged)],
        cwd=ROOT, check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
