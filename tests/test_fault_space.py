"""Fault 6: the filesystem fills up under a writer; fault 5's hard cap is in test_env.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmdbstate import CheckpointStore, StoreDiskFullError


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (skipped where mounting is not permitted)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_typed_keeps_acked_data_and_recovers(small_filesystem: Path) -> None:
    filler = small_filesystem / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024))
    acked: list[int] = []
    with CheckpointStore(small_filesystem / "store") as store:

        def fill() -> None:
            for n in range(10_000):
                acked.append(store.put("wf", {"n": n, "pad": "d" * 20_000}).seq)

        with pytest.raises(StoreDiskFullError) as caught:
            fill()
        assert caught.value.hint
        assert len(acked) > 10
        assert [info.seq for info in store.history("wf")] == acked  # nothing half-written
        assert store.verify().ok
        # Space comes back: the same store object writes again, without reopening.
        filler.unlink()
        assert store.put("wf", {"n": "after"}).seq == acked[-1] + 1
        assert store.verify().ok
    with CheckpointStore(small_filesystem / "store", readonly=True) as reopened:
        assert reopened.workflow("wf").checkpoints == len(acked) + 1
        assert reopened.get("wf", acked[-1]).state["n"] == len(acked) - 1
