"""What a benchmark ran on: the machine, the disk under its directory, library versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import sqlite3
from importlib import metadata
from pathlib import Path

import lmdb
import msgpack
import xxhash

import lmdbstate

PEER_DISTRIBUTIONS = (
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint",
    "ormsgpack",
    "diskcache",
    "matplotlib",
)


def versions() -> dict[str, str]:
    """lmdbstate and the libraries under it."""
    return {
        "python": platform.python_version(),
        "lmdbstate": lmdbstate.__version__,
        "py-lmdb": lmdb.__version__,
        "LMDB": ".".join(map(str, lmdb.version())),
        "msgpack": ".".join(map(str, msgpack.version)),
        "xxhash": xxhash.VERSION,
    }


def _distribution(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def peer_versions() -> dict[str, str]:
    """The peers' libraries (SQLite is the one Python's sqlite3 is linked with)."""
    return {"SQLite": sqlite3.sqlite_version} | {
        name: _distribution(name) for name in PEER_DISTRIBUTIONS
    }


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu() -> str:
    info = _read("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    virtual = ", virtual machine" if " hypervisor" in info else ""
    return f"{model} ({platform.machine()}{virtual})"


def _memory() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    return "unknown"


def _disk(directory: Path) -> str:
    """The device and filesystem holding ``directory``, from /proc/mounts and /sys."""
    target = os.path.realpath(directory)
    mounts = [line.split()[:3] for line in _read("/proc/mounts").splitlines()]
    device, mount_point, fstype = max(
        (m for m in mounts if len(m) == 3 and (target + "/").startswith(m[1].rstrip("/") + "/")),
        key=lambda m: len(m[1]),
        default=("unknown", "/", "unknown"),
    )
    block = Path("/sys/class/block") / Path(device).name
    if (block / "partition").exists():
        block = block.resolve().parent
    rotational = _read(block / "queue" / "rotational").strip() or "?"
    total = shutil.disk_usage(target).total / (1 << 30)
    warning = " (in memory: fsync costs nothing here)" if fstype == "tmpfs" else ""
    return f"{device} on {mount_point}, {fstype}{warning}, {total:.0f} GiB, rotational={rotational}"


def describe(directory: Path) -> dict[str, str]:
    """The machine, as rows of the report's table; ``directory`` is where stores were written."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": _cpu(),
        "cores": str(os.cpu_count()),
        "RAM": _memory(),
        "disk": _disk(directory),
        "stores written under": str(directory),
        "OS": f"{platform.system()} {platform.release()}",
    }
