#!/usr/bin/env python3
"""Turns `docker compose config --format json` of the prod stack + compose/swarm.yml (stdin) into
a stack file for `docker stack deploy` (docs/swarm.md), fixing what stack deploy rejects or
ignores, and writes the migrate service's definition apart (scripts/swarm.sh runs it as a job).

  swarm-render.py STACK_FILE MIGRATE_FILE < config.json
  swarm-render.py data STACK_FILE OUT        the stack file with Postgres and Redis only
  swarm-render.py job MIGRATE_FILE STACK TAG run the migrations once, as a replicated job
                                             (Engine 20.10's stack files reject one), and wait

Environment: DRS_SECRET_VALUES_FILE (the env file: each secret's value, to prove none is left
in the output), REGISTRY (optional: images are pulled from there), DRS_SECRET_<KEY> (the Docker
secrets' names, from scripts/swarm.sh), SWARM_MEDIA_DIR (optional: media on shared storage).
Fix-ups: no top-level `name`; no build, depends_on, env_file, restart, security_opt, shm_size,
profiles; group_add (one group) as the user's primary group; no secret variable in any environment; nginx publishes in host mode (client IPs);
names of networks and volumes left to the stack (STACK_...); `version: "3.9"`.
"""

import json
import os
import re
import subprocess
import sys
import time

# Variables whose values are secrets (or hold one: DATA_SOURCE_NAME is a URL with the password):
# Docker secrets (or nothing) stand for them in the stack.
SECRET_VARS = (
    "DJANGO_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "PGPASSWORD",
    "POSTGRES_BACKUP_PASSWORD",
    "FLOWER_PASSWORD",
    "OFFSITE_PASSWORD",
    "OFFSITE_S3_SECRET_ACCESS_KEY",
    "OFFSITE_SSH_KEY",
    "SENTRY_DSN",
    "EMAIL_URL",
    "ALERTMANAGER_WEBHOOK_URL",
    "DATA_SOURCE_NAME",
)
DJANGO = {"migrate": 10001, "web": 10001, "worker": 10001, "beat": 10001}
# The secrets made only when the env file sets them (scripts/swarm.sh exports DRS_SECRET_<KEY>,
# the secret's content-hashed name): key -> (variable, {service: uid reading it}). Each service
# gets /run/secrets/<key> and <variable>_FILE pointing there. (The three required secrets are
# wired in compose/swarm.yml.)
OPTIONAL_SECRETS = {
    "postgres_backup_password": ("POSTGRES_BACKUP_PASSWORD", {"postgres": 999, "backup": 10001}),
    "flower_password": ("FLOWER_PASSWORD", {"flower": 10001}),
    "offsite_password": ("OFFSITE_PASSWORD", {"backup": 10001}),
    "offsite_s3_secret_access_key": ("OFFSITE_S3_SECRET_ACCESS_KEY", {"backup": 10001}),
    "offsite_ssh_key": ("OFFSITE_SSH_KEY", {"backup": 10001}),
    "sentry_dsn": ("SENTRY_DSN", DJANGO),
    "email_url": ("EMAIL_URL", DJANGO),
    "alertmanager_webhook_url": ("ALERTMANAGER_WEBHOOK_URL", {"alertmanager": 10090}),
}
DATA_SERVICES = ("postgres", "redis")
DROPPED_KEYS = (
    "build",
    "depends_on",
    "env_file",
    "restart",
    "security_opt",
    "shm_size",
    "profiles",
)


def die(message: str) -> None:
    sys.exit(f"swarm-render: error: {message}")


def secret_values(env_file: str) -> list[str]:
    values = []
    with open(env_file, encoding="utf-8") as handle:
        for line in handle:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep and name in SECRET_VARS and len(value) >= 8 and value != "change-me":
                values.append(value)
    return values


def size_bytes(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def tmpfs_mounts(entries: list[str]) -> list[dict]:
    """`tmpfs:` entries as tmpfs mounts: stack deploy ignores the `tmpfs` key. A swarm's tmpfs
    takes a size and a mode only (mode 1777 by default): uid/gid options are dropped."""
    mounts = []
    for entry in entries:
        target, _, options = entry.partition(":")
        mount = {"type": "tmpfs", "target": target}
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key == "size":
                mount["tmpfs"] = {"size": size_bytes(value)}
        mounts.append(mount)
    return mounts


def fix_service(name: str, service: dict, registry: str) -> None:
    for key in DROPPED_KEYS + tuple(k for k, v in service.items() if v is None):
        service.pop(key, None)
    groups = service.pop("group_add", None)
    if groups:  # stack files have no group_add: the one extra group becomes the primary group
        uid = str(service.get("user", "")).partition(":")[0]
        if len(groups) != 1 or not uid:
            die(f"{name}: group_add {groups} needs one group and a user: a stack file has none")
        service["user"] = f"{uid}:{groups[0]}"
    env = service.get("environment") or {}
    for var in SECRET_VARS:
        env.pop(var, None)
    if registry and "image" in service:
        service["image"] = f"{registry.rstrip('/')}/{service['image']}"
    service["volumes"] = service.get("volumes", []) + tmpfs_mounts(service.pop("tmpfs", []))
    for volume in service.get("volumes", []):
        volume.pop("bind", None)  # create_host_path: not in the stack file schema
    for port in service.get("ports", []):
        port.pop("host_ip", None)  # a swarm publishes on every address of a node
        port["mode"] = "host"  # the routing mesh would hide the client's address
        if port.get("published") in ("", None, 0, "0"):
            port.pop("published", None)  # host mode: a free port per task
        else:
            port["published"] = int(port["published"])
    for secret in service.get("secrets", []):
        if isinstance(secret.get("mode"), str):
            secret["mode"] = int(secret["mode"], 8)  # rendered "0400"; the schema wants a number


def attach_optional_secrets(config: dict) -> None:
    """Each optional secret the env file sets, to the services of the stack that read it."""
    services = config["services"]
    for key, (var, readers) in OPTIONAL_SECRETS.items():
        name = os.environ.get(f"DRS_SECRET_{key.upper()}", "")
        users = [s for s in readers if s in services]
        if not name or not users:
            continue
        config.setdefault("secrets", {})[key] = {"external": True, "name": name}
        for service in users:
            uid = str(readers[service])
            services[service].setdefault("secrets", []).append(
                {"source": key, "target": key, "uid": uid, "gid": uid, "mode": 0o400}
            )
            environment = services[service].setdefault("environment", {})
            environment[f"{var}_FILE"] = f"/run/secrets/{key}"


def share_media(config: dict, directory: str) -> None:
    """SWARM_MEDIA_DIR: the media volume is DIRECTORY, the same shared file system mounted on
    every node (NFS, CephFS...): web and worker may then run on any node (docs/swarm.md)."""
    config["volumes"]["media"] = {
        "driver": "local",
        "driver_opts": {"type": "none", "o": "bind", "device": directory},
    }
    for name in ("web", "worker"):
        placement = config["services"][name].get("deploy", {}).get("placement", {})
        placement.pop("constraints", None)


def attach_test_network(config: dict, network: str) -> None:
    """Tests only (tests/swarm): nginx publishes no port on the node and joins the existing
    attachable overlay network `network`, where the suite's client reaches it directly."""
    nginx = config["services"]["nginx"]
    nginx.pop("ports", None)
    networks = nginx.setdefault("networks", {})
    networks["drs_test_clients"] = None
    config.setdefault("networks", {})["drs_test_clients"] = {"external": True, "name": network}


def render(config: dict, registry: str) -> tuple[dict, dict]:
    config.pop("name", None)
    for key in [k for k in config if k.startswith("x-")]:  # the files' anchors, secrets in them
        del config[key]
    services = config["services"]
    if "migrate" not in services:
        die("the rendered config has no migrate service")
    for name, service in services.items():
        fix_service(name, service, registry)
    attach_optional_secrets(config)
    if os.environ.get("SWARM_MEDIA_DIR"):
        share_media(config, os.environ["SWARM_MEDIA_DIR"])
    migrate = services.pop("migrate")
    # The job is made with `docker service create`: it needs the secrets' real names.
    migrate["x-secret-names"] = {
        key: item["name"] for key, item in (config.get("secrets") or {}).items() if "name" in item
    }
    for section in ("networks", "volumes"):
        for item in (config.get(section) or {}).values():
            if not item.get("external"):
                item.pop("name", None)
    secrets = config.get("secrets") or {}
    secrets.pop("ca_bundle", None)  # image builds only
    test_network = os.environ.get("SWARM_TEST_NETWORK", "")
    if test_network:
        attach_test_network(config, test_network)
    config["version"] = "3.9"
    return config, migrate


def data_only(stack_file: str, out: str) -> None:
    with open(stack_file, encoding="utf-8") as handle:
        stack = json.load(handle)
    stack["services"] = {k: v for k, v in stack["services"].items() if k in DATA_SERVICES}
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(stack, handle, indent=2, sort_keys=True)


def job_command(spec: dict, name: str, stack: str) -> list[str]:
    """`docker service create` of the migrate service as a replicated job, never restarted."""
    cmd = ["docker", "service", "create", "--detach", "--name", name, "--mode", "replicated-job"]
    cmd += ["--restart-condition", "none", "--label", f"com.docker.stack.namespace={stack}"]
    cmd += ["--read-only", "--cap-drop", "ALL"]
    for network in spec.get("networks") or {}:
        cmd += ["--network", f"{stack}_{network}"]
    names = spec.get("x-secret-names", {})
    for secret in spec.get("secrets", []):
        fields = [
            f"source={names[secret['source']]}",
            f"target={secret.get('target', secret['source'])}",
        ]
        fields += [f"{k}={secret[k]}" for k in ("uid", "gid") if k in secret]
        if "mode" in secret:
            fields.append(f"mode=0{secret['mode']:o}")
        cmd += ["--secret", ",".join(fields)]
    for key, value in sorted((spec.get("environment") or {}).items()):
        cmd += ["--env", f"{key}={value if value is not None else ''}"]
    cmd += ["--mount", "type=tmpfs,destination=/tmp,tmpfs-size=16777216"]
    limits = ((spec.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        cmd += ["--limit-memory", str(limits["memory"])]
    cmd += [spec["image"], *(spec.get("command") or [])]
    return cmd


def run_job(migrate_file: str, stack: str, tag: str) -> None:
    with open(migrate_file, encoding="utf-8") as handle:
        spec = json.load(handle)
    name = f"{stack}_migrate-{re.sub(r'[^A-Za-z0-9-]', '-', tag)[:40]}-{int(time.time())}"
    subprocess.run(job_command(spec, name, stack), check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + int(os.environ.get("SWARM_TIMEOUT", "600"))
    state = ""
    try:
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["docker", "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}", name],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            if state.startswith(("Complete", "Failed", "Rejected", "Shutdown")):
                break
            time.sleep(2)
        subprocess.run(["docker", "service", "logs", "--raw", name], check=False)
    finally:
        subprocess.run(["docker", "service", "rm", name], check=False, stdout=subprocess.DEVNULL)
    if not state.startswith("Complete"):
        die(f"the migrations job {name} did not complete: {state or 'no state'}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "data":
        data_only(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "job":
        run_job(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if len(sys.argv) != 3:
        die("usage: swarm-render.py STACK_FILE MIGRATE_FILE < config.json")
    config = json.load(sys.stdin)
    stack, migrate = render(config, os.environ.get("REGISTRY", ""))
    text = json.dumps(stack, indent=2, sort_keys=True)
    migrate_text = json.dumps(migrate, indent=2, sort_keys=True)
    values_file = os.environ.get("DRS_SECRET_VALUES_FILE", "")
    for value in secret_values(values_file) if values_file else []:
        if value in text or value in migrate_text:
            die("a secret's value is still in the rendered stack; not written")
    for path, body in ((sys.argv[1], text), (sys.argv[2], migrate_text)):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")


if __name__ == "__main__":
    main()
