"""What both benchmarks record about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (else the platform's answer, else None)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def machine_info() -> dict:
    """Cores, CPU model, platform, Python and memory of this machine."""
    info: dict = {"nproc": usable_cores(), "cpu_model": cpu_model(),
                  "platform": platform.platform(), "python": platform.python_version()}
    try:
        info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each of ``packages`` (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
