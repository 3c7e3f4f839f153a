"""What the stack costs at rest: image sizes and idle RAM; and the machine it ran on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bench.config import PROJECT, TAG
from bench.console import run
from bench.stack import Stack


def image_sizes() -> dict:
    sizes = {}
    for name in [
        "debian:trixie-slim",
        *(f"drs/{i}:{TAG}" for i in ("web", "worker", "nginx", "redis", "postgres")),
    ]:
        out = run(["docker", "image", "inspect", "-f", "{{.Size}}", name], check=False).stdout.strip()
        sizes[name] = round(int(out) / 1e6, 1) if out.isdigit() else None
    return sizes


def _mib(text: str) -> float:
    number, unit = re.match(r"([\d.]+)\s*([A-Za-z]+)", text).groups()
    factor = {
        "B": 1 / 2**20,
        "KiB": 1 / 1024,
        "MiB": 1,
        "GiB": 1024,
        "kB": 1e3 / 2**20,
        "MB": 1e6 / 2**20,
        "GB": 1e9 / 2**20,
    }[unit]
    return round(float(number) * factor, 1)


def idle_ram(stack: Stack) -> dict:
    ids = stack.compose("ps", "-q").stdout.split()
    out = run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids]).stdout
    ram = {}
    for line in out.splitlines():
        row = json.loads(line)
        service = re.sub(rf"^{re.escape(PROJECT)}[-_]", "", row["Name"])
        ram[service] = _mib(row["MemUsage"].split("/")[0])
    ram["total"] = round(sum(ram.values()), 1)
    return ram


def machine() -> str:
    cpus = os.cpu_count()
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 2**20
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{cpus} vCPU ({model}), {mem:.0f} GiB RAM, Linux {os.uname().release}"
