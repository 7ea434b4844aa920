"""Fault 1: writers killed with SIGKILL at random instants lose no acknowledged checkpoint."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lmdbstate import CheckpointStore

# Prints "ready" once the store is open, then one line per put, only after put returned.
WRITER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore

    path, workflow_id = sys.argv[1], sys.argv[2]
    with CheckpointStore(path, durability="sync", map_size=256 * 1024) as store:
        latest = store.latest(workflow_id)
        head = 0 if latest is None else latest.seq
        print("ready", flush=True)
        while True:
            # A list that grows for 40 puts then starts again: chunked (record format 2),
            # extending the previous put's nodes, or flat after a restart or a reset.
            messages = [f"message {n} of {workflow_id} " * 8 for n in range(8 + head % 40)]
            state = {"seq": head + 1, "pad": "p" * (head % 7 * 500), "messages": messages}
            head = store.put(workflow_id, state, step=head + 1, expect_seq=head).seq
            print(head, flush=True)
    """
)


class Writer:
    """One writer subprocess and the acknowledgements it printed."""

    def __init__(self, path: Path, workflow_id: str) -> None:
        self.path = path
        self.workflow_id = workflow_id
        self.acked: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: threading.Thread | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(self.path), self.workflow_id],
            stdout=subprocess.PIPE,
        )
        self.reader = threading.Thread(target=self._read, args=(self.proc,))
        self.reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.endswith(b"\n"):
                break  # cut short by the kill: not an acknowledgement
            if line == b"ready\n":
                self.ready.set()
            else:
                self.acked.append(int(line))
        proc.stdout.close()

    def kill(self) -> None:
        assert self.proc is not None
        assert self.reader is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join()
        assert self.proc.returncode == -signal.SIGKILL, "the writer died of something else"


def run_kills(path: Path, kills: int, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    with CheckpointStore(path):
        pass  # create it once, so that the writers race only on their own workflows
    writers = [Writer(path, f"writer-{n}") for n in range(4)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(kills):
            writer = rng.choice(writers)
            assert writer.ready.wait(timeout=60), "a writer never opened the store"
            time.sleep(rng.uniform(0.001, 0.050))
            writer.kill()
            writer.start()
    finally:
        for writer in writers:
            writer.ready.wait(timeout=60)
            writer.kill()
    return {writer.workflow_id: writer.acked for writer in writers}


def check_nothing_lost(path: Path, acked: dict[str, list[int]]) -> None:
    with CheckpointStore(path, readonly=True) as store:
        report = store.verify(deep=True)
        assert report.ok, (report.damaged, report.index_problems)
        for workflow_id, seqs in acked.items():
            present = {info.seq for info in store.history(workflow_id)}
            assert set(seqs) <= present, f"{workflow_id}: acknowledged checkpoints lost"
            # Seqs run 1..head without a gap, and each holds the state written for it.
            assert present == set(range(1, max(present) + 1))
            for seq in sorted(seqs)[-20:]:
                assert store.get(workflow_id, seq).state["seq"] == seq
    total = sum(len(seqs) for seqs in acked.values())
    print(f"\n{total} acknowledged checkpoints, 0 lost, verify clean")


def test_sigkilled_writers_lose_no_acknowledged_checkpoint(tmp_path: Path) -> None:
    kills = int(os.environ.get("LMDBSTATE_FAULT_KILLS", "200"))
    acked = run_kills(tmp_path / "store", kills=kills, seed=kills)
    assert sum(map(len, acked.values())) > kills  # the writers made progress between kills
    check_nothing_lost(tmp_path / "store", acked)


@pytest.mark.slow
def test_a_thousand_kills(tmp_path: Path) -> None:
    acked = run_kills(tmp_path / "store", kills=1000, seed=1)
    check_nothing_lost(tmp_path / "store", acked)
