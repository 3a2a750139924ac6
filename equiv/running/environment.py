"""What machine and software a run happened on: recorded in parity.json's ``environment``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide which vector instructions a JIT compiler (XLA, inductor)
#: emits; two CPUs with the same model name can differ in them, and so in the last bits.
_VECTOR_FLAG = re.compile(r"^(sse\S*|ssse3|avx\S*|fma\S*|f16c|amx\S*)$")


def cpu_features() -> str:
    """The CPU's vector-instruction flags, sorted: part of what decides a JIT-compiled
    backend's rounding (an XLA float64 cell differs bitwise between AVX2 and AVX-512)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return " ".join(sorted(f for f in flags if _VECTOR_FLAG.match(f)))
    except OSError:
        pass
    return ""


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(
    seed: int, threads: int, backends: list, argv: list[str] | None = None
) -> dict[str, Any]:
    import numpy

    versions: dict[str, str] = {"numpy": numpy.__version__}
    for backend in backends:
        if backend.availability() is None:
            try:
                versions.update(backend.versions())
            except Exception as exc:  # a broken plugin's version is not worth a failed run
                versions[backend.id] = f"unknown ({exc})"
    from equiv import __version__

    return {
        "equiv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "seed": seed,
        "versions": versions,
        "command": " ".join(argv if argv is not None else sys.argv),
        "git_commit": git_commit(),
    }
