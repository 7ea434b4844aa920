"""Fault 8: reader processes killed while holding reader slots never make the table fill up."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from lmdbstate import CheckpointStore

READERS = 8

# Killed in the middle of a read transaction (as a reader killed during a long verify or a
# large read is): its reader slot stays marked with its dead pid.
READER = textwrap.dedent(
    """
    import sys, time
    from lmdbstate import CheckpointStore

    def read_slowly(txn):
        print("reading", flush=True)
        time.sleep(600)

    store = CheckpointStore(sys.argv[1], readonly=True, max_readers=int(sys.argv[2]))
    store._backend.read(read_slowly)
    """
)


def kill_readers_holding_slots(path: Path) -> None:
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(READERS)], stdout=subprocess.PIPE
        )
        for _ in range(READERS)
    ]
    for reader in readers:
        assert reader.stdout is not None
        assert reader.stdout.readline() == b"reading\n"
    for reader in readers:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
        assert reader.stdout is not None
        reader.stdout.close()


def test_slots_of_killed_readers_are_reclaimed(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, max_readers=READERS) as store:
        store.put("wf", {"n": 1})
        store.close()  # the table is now empty: only the readers below take slots
    with CheckpointStore(path, max_readers=READERS) as store:
        kill_readers_holding_slots(path)
        assert store._backend._shared.active_readers() == READERS  # all taken, by dead processes
        # The table is full of dead readers: the read finds it full, reclaims, and succeeds.
        latest = store.latest("wf")
        assert latest is not None
        assert latest.state == {"n": 1}
        assert store.put("wf", {"n": 2}).seq == 2
        assert store.stats().readers_used < READERS
    kill_readers_holding_slots(path)
    with CheckpointStore(path, readonly=True, max_readers=READERS) as store:  # reclaimed on open
        assert store.stats().readers_used <= 1
        assert store.verify().ok
