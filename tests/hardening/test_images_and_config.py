"""No secret (or the build CA) in any image; check --deploy; hadolint and compose-lint."""

import base64
import os
import re
import subprocess
import sys

from conftest import ROOT

SECRET_KEYS = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
CHUNK = 1 << 20


def env_values(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        pairs = (line.strip().split("=", 1) for line in handle if "=" in line and line[0] != "#")
        return {k: v for k, v in pairs}


def stack_images(stack) -> list[str]:
    images = {stack.inspect(c)["Config"]["Image"] for c in stack.compose("ps", "-q").split()}
    return sorted(images)


def pem_certs(data: str) -> list[bytes]:
    blocks = re.findall(
        r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", data, re.DOTALL
    )
    return [base64.b64decode("".join(b.split())) for b in blocks]


def build_ca_needles(stack) -> list[bytes]:
    """Certificates of the build CA bundle that Debian's own ca-certificates does not ship:
    the proxy CA handed to pip as a BuildKit secret. As PEM lines and as DER bytes."""
    bundle = os.environ.get("BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    if not os.path.isfile(bundle) or os.path.getsize(bundle) == 0:
        return []
    with open(bundle, encoding="utf-8", errors="replace") as handle:
        host = pem_certs(handle.read())
    image = stack.inspect(stack.container_ids("web")[0])["Config"]["Image"]
    shipped = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image, "/etc/ssl/certs/ca-certificates.crt"],
        check=False, capture_output=True, text=True,
    ).stdout  # fmt: skip
    extra = [der for der in host if der not in set(pem_certs(shipped))]
    needles = []
    for der in extra:
        needles.append(der[-64:])  # the signature: unique to the certificate
        needles.append(base64.b64encode(der)[-128:-64])  # a line of its PEM form
    return needles


def scan_saved_images(images: list[str], needles: dict[str, bytes]) -> set[str]:
    """Stream `docker save` (every layer, uncompressed) and report which needles occur."""
    found: set[str] = set()
    longest = max(len(n) for n in needles.values())
    proc = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    tail = b""
    while chunk := proc.stdout.read(CHUNK):
        window = tail + chunk
        found |= {name for name, needle in needles.items() if needle in window}
        tail = window[-longest:]
    assert proc.wait() == 0, "docker save failed"
    return found


def test_no_secret_or_build_ca_in_any_image_layer_or_history(stack):
    env = env_values(stack.env_file)
    needles = {key: env[key].encode() for key in SECRET_KEYS if len(env.get(key, "")) >= 16}
    needles |= {f"build CA #{i}": n for i, n in enumerate(build_ca_needles(stack))}
    images = stack_images(stack)
    for image in images:
        config = stack.inspect(image)["Config"]
        names = {e.split("=", 1)[0] for e in config.get("Env") or []}
        assert not names & {*SECRET_KEYS, "PIP_CERT", "REQUESTS_CA_BUNDLE"}, (image, names)
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        leaked = [k for k, n in needles.items() if n.decode(errors="ignore") in history]
        assert not leaked, (image, leaked)
    assert not scan_saved_images(images, needles)


def test_check_deploy_passes_in_the_running_web_container(stack):
    env = env_values(stack.env_file)
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


def test_hadolint_passes_on_every_dockerfile():
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "*Dockerfile"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert files
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    done = subprocess.run(
        [hadolint, "--config", ".hadolint.yaml", *files],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_lint_passes_on_the_prod_configuration(tmp_path):
    env = {**os.environ, "DRS_ENV_FILE": "compose/prod.env.example"}
    rendered = subprocess.run(
        ["docker", "compose", "--env-file", "compose/prod.env.example", "-f", "docker-compose.yml",
         "-f", "docker-compose.prod.yml", "config", "--no-interpolate"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    merged = tmp_path / "docker-compose.prod.merged.yml"
    merged.write_text(rendered)
    lint = os.path.join(os.path.dirname(sys.executable), "compose-lint")
    done = subprocess.run(
        [lint, "check", "--no-env", "--fail-on", "low", "--strict-config",
         "--config", os.path.join(ROOT, ".compose-lint.yml"), str(merged)],
        cwd=ROOT, check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
