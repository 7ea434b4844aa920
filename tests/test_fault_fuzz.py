"""Fault 9 (and 3): damaged data.mdb files opened and verified in a child process.

The child must always end normally: a typed error, or a report of the damage; never a signal
(LMDB aborts or crashes on some damaged pages, so lmdbstate must not let it read them).
"""

from __future__ import annotations

import json
import queue
import random
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import IO

import pytest

from lmdbstate import CheckpointStore

# Reads mutation jobs (one JSON line each: directory), prints one JSON outcome line each.
CHILD = textwrap.dedent(
    """
    import json, sys
    from lmdbstate import CheckpointStore, LmdbStateError

    for line in sys.stdin:
        path = json.loads(line)
        print(json.dumps({"start": path}), flush=True)
        try:
            with CheckpointStore(path, readonly=True) as store:
                report = store.verify()
                outcome = "clean" if report.ok else "damage reported"
                if report.ok:
                    for info in store.workflows():
                        store.latest(info.workflow_id)
        except LmdbStateError as exc:
            outcome = "typed " + type(exc).__name__
        except Exception as exc:
            outcome = "UNTYPED " + type(exc).__name__ + ": " + str(exc)[:200]
        print(json.dumps({"done": path, "outcome": outcome}), flush=True)
    """
)


_BATCH = 250
_PATIENCE = 60  # seconds without a line from the child before it counts as hung


def make_base(path: Path) -> None:
    with CheckpointStore(path, durability="async") as store:
        for w in range(6):
            with store.batch() as batch:
                for n in range(60):
                    pad = "z" * (5000 if n % 15 == 0 else 120)
                    batch.put(f"wf-{w}", {"n": n, "pad": pad}, step=n)


def mutate(data: bytearray, rng: random.Random, page_size: int) -> str:
    """Damage ``data`` in one of several ways; return a description."""
    kind = rng.choice(["byte", "bytes", "page", "zero-run", "page-header", "truncate"])
    if kind == "byte":
        at = rng.randrange(2 * page_size, len(data))
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        for _ in range(rng.randrange(2, 20)):
            data[rng.randrange(2 * page_size, len(data))] = rng.randrange(256)
    elif kind == "page":
        page = rng.randrange(2, len(data) // page_size)
        data[page * page_size : (page + 1) * page_size] = rng.randbytes(page_size)
    elif kind == "zero-run":
        at = rng.randrange(2 * page_size, len(data))
        end = min(len(data), at + rng.randrange(1, 600))
        data[at:end] = bytes(end - at)
    elif kind == "page-header":
        page = rng.randrange(2, len(data) // page_size)
        at = page * page_size + rng.randrange(16)
        data[at] = rng.randrange(256)
    else:
        del data[rng.randrange(2 * page_size, len(data)) :]
    return kind


def run_batch(jobs: list[Path], outcomes: dict[str, int], failures: list[str]) -> None:
    """Open and verify each damaged store in child processes, restarting after a crash.

    A child that makes no progress for a minute is killed: a hang is a failure too.
    """
    pending = {str(job): job for job in jobs}
    while pending:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("".join(json.dumps(job) + "\n" for job in pending))
        child.stdin.close()
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(child.stdout, lines))
        reader.start()
        current = None
        while (line := _next_line(lines, child)) is not None:
            event = json.loads(line)
            if "start" in event:
                current = event["start"]
            else:
                outcomes[event["outcome"]] = outcomes.get(event["outcome"], 0) + 1
                shutil.rmtree(pending.pop(event["done"]))
                current = None
        reader.join()
        code = child.wait()
        if current is not None:  # the child died or hung on this one: keep it for the report
            job = pending.pop(current)
            failures.append(f"{(job / 'kind').read_text()} at {job}: exit {code}")


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    stream.close()
    lines.put(None)


def _next_line(lines: queue.Queue[str | None], child: subprocess.Popen[str]) -> str | None:
    try:
        return lines.get(timeout=_PATIENCE)
    except queue.Empty:
        child.kill()  # a hang: the reader then sees the end of the stream
        return lines.get()


def run_fuzz(tmp_path: Path, mutations: int, seed: int) -> dict[str, int]:
    base = tmp_path / "base"
    make_base(base)
    original = (base / "data.mdb").read_bytes()
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    failures: list[str] = []
    for start in range(0, mutations, _BATCH):  # a batch at a time: bounded disk use
        jobs = []
        for n in range(start, min(mutations, start + _BATCH)):
            job = tmp_path / f"m{n}"
            job.mkdir()
            data = bytearray(original)
            (job / "kind").write_text(mutate(data, rng, 4096))
            (job / "data.mdb").write_bytes(bytes(data))
            jobs.append(job)
        run_batch(jobs, outcomes, failures)
    assert failures == [], failures
    assert not any(outcome.startswith("UNTYPED") for outcome in outcomes), outcomes
    print(f"\n{mutations} damaged files: {outcomes}")
    return outcomes


def test_damaged_files_never_crash_open_and_verify(tmp_path: Path) -> None:
    outcomes = run_fuzz(tmp_path, mutations=1000, seed=1)
    assert sum(outcomes.values()) == 1000


@pytest.mark.slow
def test_thousands_of_damaged_files(tmp_path: Path) -> None:
    run_fuzz(tmp_path, mutations=10_000, seed=2)
