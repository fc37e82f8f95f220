"""A description of the machine and the software versions, printed above the table."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_DISTRIBUTIONS = (
    "Flask",
    "Werkzeug",
    "SQLAlchemy",
    "Flask-SQLAlchemy",
    "Flask-HTTPAuth",
    "Flask-BasicAuth",
)


def cpu_model() -> str:
    """The CPU model named in ``/proc/cpuinfo``, or what :mod:`platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def load() -> str:
    """The 1, 5 and 15 minute load averages, to judge how busy the machine was."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def describe() -> list[str]:
    """Lines describing the CPU, cores, OS and the versions that shape the numbers."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{name} {_version(name)}" for name in _DISTRIBUTIONS)
    return [
        f"cpu: {cpu_model()}, {os.cpu_count()} cores ({usable} usable)",
        f"os: {platform.system()} {platform.release()} {platform.machine()}",
        f"python: {platform.python_implementation()} {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}",
        f"versions: {versions}",
        f"load average at start: {load()}",
    ]
