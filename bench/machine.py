"""Describe the machine a benchmark ran on (CPU model, cores, memory, library versions, date)."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path


def describe(packages=("numpy", "pillow", "onnxruntime", "faiss-cpu", "torch")) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),  # the cores this process may use
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
    }


def markdown(desc: dict) -> str:
    v = ", ".join(f"{k} {x}" for k, x in desc["versions"].items())
    return (
        f"Machine: {desc['cpu']}, {desc['cores']} cores, {desc['memory_gib']} GiB RAM, "
        f"Python {desc['python']}, {desc['os']}; {v}. Run {desc['date']}."
    )
