"""The demo behind ``lmdbstate demo``: a workflow killed with SIGKILL part-way, then resumed.

``WORKFLOW`` is a twelve-step document pipeline (one step, ``review``, is a gate) that builds a
state of a few hundred KiB. ``run_demo`` starts it with ``lmdbstate run lmdbstate.demo:WORKFLOW``
in a subprocess, kills that with SIGKILL a random moment after a checkpoint it reported,
resumes the workflow with ``resume`` (what ``lmdbstate resume`` runs), and checks the final
state against an uninterrupted run of the same steps with persistence disabled.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from . import codec
from .config import Config
from .errors import RunError, WorkflowExistsError, WorkflowNotFoundError
from .memory import MEMORY_PATH
from .policy import every_n_steps
from .runner import RunResult, Step, StepRecord, Workflow, resume, run
from .store import CheckpointStore

ENTRYPOINT = "lmdbstate.demo:WORKFLOW"
POLICY = every_n_steps(3)
PACE = 0.12
"""Seconds each step of ``WORKFLOW`` waits first, standing in for the I/O a real step waits on."""
INITIAL_STATE = {"seed": 20261127, "documents": 300}

_State = dict[str, Any]
_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vo", "di", "pe", "shan", "or", "et", "qua")
_TOPICS = 8
_TOP_TERMS = 8


# -- the pipeline -----------------------------------------------------------------------------
# Each step is a pure function of the state (the randomness is seeded from it), so a step run
# again after a crash gives exactly what it gave the first time.


def _vocabulary() -> list[str]:
    return [a + b for a in _SYLLABLES for b in _SYLLABLES if a != b]


def fetch(state: _State) -> _State:
    """Make the corpus: documents drawn from topics over a made-up vocabulary."""
    for name, value in INITIAL_STATE.items():
        state.setdefault(name, value)
    rng = random.Random(state["seed"])
    words = _vocabulary()
    documents = []
    for number in range(state["documents"]):
        topic = rng.randrange(_TOPICS)
        # Every topic favours its own slice of the vocabulary; common words run through all.
        weights = [
            6.0 if rank % _TOPICS == topic else 1.0 / (1 + rank % 23) for rank in range(len(words))
        ]
        body = rng.choices(words, weights=weights, k=rng.randrange(90, 160))
        sentences = [" ".join(body[i : i + 12]).capitalize() + "." for i in range(0, len(body), 12)]
        documents.append(
            {
                "id": f"doc-{number:04d}",
                "title": f"Report {number} ({topic})",
                "text": "  ".join(sentences),
            }
        )
    state["docs"] = documents
    return state


def clean(state: _State) -> _State:
    """Lower-case the text and strip punctuation and runs of spaces."""
    for doc in state["docs"]:
        doc["text"] = " ".join(re.sub(r"[^a-z ]+", " ", doc["text"].lower()).split())
    return state


def tokenize(state: _State) -> _State:
    """Split each text into its tokens."""
    for doc in state["docs"]:
        doc["tokens"] = doc.pop("text").split()
    return state


def count(state: _State) -> _State:
    """Count in how many documents each term occurs."""
    frequencies: Counter[str] = Counter()
    for doc in state["docs"]:
        frequencies.update(set(doc["tokens"]))
    state["df"] = dict(sorted(frequencies.items()))
    return state


def stopwords(state: _State) -> _State:
    """Drop the terms that occur in most documents."""
    limit = len(state["docs"]) * 0.6
    stop = sorted(term for term, df in state["df"].items() if df > limit)
    for doc in state["docs"]:
        doc["tokens"] = [token for token in doc["tokens"] if token not in stop]
    state["stopwords"] = stop
    return state


def weigh(state: _State) -> _State:
    """Weigh each document's terms by tf-idf and keep its strongest."""
    total = len(state["docs"])
    for doc in state["docs"]:
        tf = Counter(doc["tokens"])
        scores = {
            term: round(n / len(doc["tokens"]) * math.log(total / state["df"][term]), 6)
            for term, n in tf.items()
        }
        strongest = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:_TOP_TERMS]
        doc["terms"] = [list(item) for item in strongest]
    return state


def review(state: _State) -> _State:
    """The gate: approve the documents with enough distinct terms to be indexed."""
    approved = [doc["id"] for doc in state["docs"] if len(doc["terms"]) >= 3]
    rejected = [doc["id"] for doc in state["docs"] if len(doc["terms"]) < 3]
    state["review"] = {"approved": approved, "rejected": rejected}
    return state


def cluster(state: _State) -> _State:
    """Group the documents by their strongest term."""
    clusters: dict[str, list[str]] = {}
    for doc in state["docs"]:
        doc["cluster"] = doc["terms"][0][0]
        clusters.setdefault(doc["cluster"], []).append(doc["id"])
    state["clusters"] = dict(sorted(clusters.items()))
    return state


def summarize(state: _State) -> _State:
    """Describe each cluster by its size and its heaviest terms."""
    weights: dict[str, Counter[str]] = {name: Counter() for name in state["clusters"]}
    for doc in state["docs"]:
        for term, weight in doc["terms"]:
            weights[doc["cluster"]][term] += weight
    state["summaries"] = {
        name: {
            "size": len(state["clusters"][name]),
            "terms": [term for term, _ in sorted(totals.items(), key=lambda i: (-i[1], i[0]))[:5]],
        }
        for name, totals in weights.items()
    }
    return state


def index(state: _State) -> _State:
    """Build the inverted index from each document's strongest terms."""
    postings: dict[str, list[str]] = {}
    for doc in state["docs"]:
        for term, _ in doc["terms"]:
            postings.setdefault(term, []).append(doc["id"])
    state["index"] = dict(sorted(postings.items()))
    return state


def report(state: _State) -> _State:
    """Count what the pipeline produced."""
    state["report"] = {
        "documents": len(state["docs"]),
        "tokens": sum(len(doc["tokens"]) for doc in state["docs"]),
        "terms": len(state["df"]),
        "stopwords": len(state["stopwords"]),
        "clusters": len(state["clusters"]),
        "indexed_terms": len(state["index"]),
        "approved": len(state["review"]["approved"]),
    }
    return state


def publish(state: _State) -> _State:
    """Seal the result with a digest of everything before it."""
    state["manifest"] = {"digest": state_digest(state), "published": True}
    return state


def state_digest(state: object) -> str:
    """A short digest of a state's encoding: equal states have equal digests."""
    return hashlib.blake2b(codec.encode(state), digest_size=8).hexdigest()


def _paced(fn: Callable[[_State], _State], pace: float) -> Callable[[_State], _State]:
    def step(state: _State) -> _State:
        time.sleep(pace)
        return fn(state)

    return step


def build(pace: float) -> Workflow:
    """The demo pipeline, each step waiting ``pace`` seconds before its work."""
    functions = (
        fetch, clean, tokenize, count, stopwords, weigh, review, cluster, summarize, index,
        report, publish,
    )  # fmt: skip
    steps = [Step(fn.__name__, _paced(fn, pace), gate=fn is review) for fn in functions]
    return Workflow("document-pipeline", steps)


WORKFLOW = build(PACE)


# -- the demo ---------------------------------------------------------------------------------

# The progress lines `lmdbstate run` prints on stderr (cli/render.py, ``step_line``).
_STEP_LINE = re.compile(r"step (\d+)/\d+ .*?(?:, checkpoint (\d+) \(|$)")
_PATIENCE = 60.0  # seconds the demo run may stay silent before it counts as stalled
_KILL_AFTER = (2, 3)  # the checkpoints after steps 3 and 6: the kill lands well before the end


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What ``run_demo`` did and found."""

    workflow_id: str
    store: str
    steps: tuple[str, ...]
    gates: tuple[str, ...]
    policy: str
    reference_seconds: float
    """How long the uninterrupted run took, in memory and without the waits."""
    state_bytes: int
    """The size of the final state, encoded."""
    command: tuple[str, ...]
    """How the subprocess was started."""
    pid: int
    lease_taken_over: bool
    """The killed run's lease was still held when resume took it over."""
    done_before_kill: tuple[str, ...]
    """The steps the subprocess reported done before it was killed."""
    acknowledged: tuple[int, ...]
    """The checkpoints it reported written."""
    kill_delay: float
    """Seconds between the checkpoint the kill waited for and the kill."""
    resumed_from: int
    resumed_after: str
    """The step the checkpoint resumed from was taken after."""
    run_again: tuple[str, ...]
    """Steps done before the kill but not checkpointed, which the resume ran again."""
    resumed_steps: tuple[StepRecord, ...]
    checkpoints: tuple[tuple[int, str | int | None, str], ...]
    """The workflow's checkpoints at the end: (seq, step, trigger)."""
    workflow_bytes: int
    digest: str
    matches: bool
    """The resumed run's final state equals the uninterrupted run's."""
    seconds: float


def run_demo(store: CheckpointStore, workflow_id: str, *, seed: int | None = None) -> DemoReport:
    """Run, kill, resume and check the demo workflow as ``workflow_id`` in ``store``.

    Args:
        store: a writable store on disk; the subprocess opens it too.
        workflow_id: a new workflow id.
        seed: seeds the choice of the moment of the kill.

    Raises:
        WorkflowExistsError: ``workflow_id`` is taken.
        RunError: the store is in memory (the subprocess could not see it), or the subprocess
            did not report the checkpoint the kill waits for within a minute.
    """
    if store.path == MEMORY_PATH:
        raise RunError(
            workflow_id,
            "the demo needs a store on disk: its run happens in another process",
            hint="pass --store DIR",
        )
    with suppress(WorkflowNotFoundError):
        store.workflow(workflow_id)
        raise WorkflowExistsError(workflow_id)  # found: refused before anything runs
    started = time.perf_counter()
    rng = random.Random(seed)
    with Config(enabled=False).open_store() as memory:
        reference = run(memory, build(0.0), "reference", dict(INITIAL_STATE), policy=POLICY)
    reference_seconds = time.perf_counter() - started
    command = (
        sys.executable, "-m", "lmdbstate", "--store", store.path, "run", ENTRYPOINT,
        "--id", workflow_id, "--state", json.dumps(INITIAL_STATE),
        "--policy", POLICY.name, "--interval", str(POLICY.interval),
    )  # fmt: skip
    # Most kills land a step or two after the checkpoint: those steps are done but not saved.
    target, delay = rng.choice(_KILL_AFTER), rng.uniform(0.5 * PACE, 2.5 * PACE)
    done, acknowledged, pid = _run_and_kill(command, workflow_id, target, delay)
    holder = store.lease(workflow_id)
    resumed_steps: list[StepRecord] = []
    result = resume(store, workflow_id, on_step=resumed_steps.append)
    assert result.resumed_from is not None
    resumed = store.get(workflow_id, result.resumed_from)
    checkpoints = tuple(
        (info.seq, info.step, store.get(workflow_id, info.seq).meta["trigger"])
        for info in store.history(workflow_id)
    )
    return DemoReport(
        workflow_id=workflow_id,
        store=store.path,
        steps=WORKFLOW.step_names,
        gates=tuple(step.name for step in WORKFLOW.steps if step.gate),
        policy=str(POLICY),
        reference_seconds=reference_seconds,
        state_bytes=len(codec.encode(reference.state)),
        command=command,
        pid=pid,
        lease_taken_over=holder is not None and holder.pid == pid,
        done_before_kill=WORKFLOW.step_names[:done],
        acknowledged=acknowledged,
        kill_delay=delay,
        resumed_from=resumed.seq,
        resumed_after=str(resumed.step),
        run_again=_run_again(result, done),
        resumed_steps=tuple(resumed_steps),
        checkpoints=checkpoints,
        workflow_bytes=store.workflow(workflow_id).bytes,
        digest=state_digest(result.state),
        matches=result.state == reference.state == store.get(workflow_id, checkpoints[-1][0]).state,
        seconds=time.perf_counter() - started,
    )


def _run_and_kill(
    command: tuple[str, ...], workflow_id: str, target: int, delay: float
) -> tuple[int, tuple[int, ...], int]:
    """Start ``command``; SIGKILL it ``delay`` seconds after it reports checkpoint ``target``.

    Returns the steps it reported done, the checkpoints it reported, and its pid.
    """
    # A fresh interpreter (fork, then exec): the child does not inherit this open store.
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None
        lines: list[bytes] = []
        # A run that stalls without printing is killed: its stderr then ends, and so the wait.
        deadline = threading.Timer(_PATIENCE, proc.kill)
        deadline.start()
        try:
            for line in proc.stderr:
                lines.append(line)
                if f"checkpoint {target} (".encode() in line:
                    break
            else:
                raise RunError(
                    workflow_id,
                    f"the demo run never reported checkpoint {target}: "
                    + b"".join(lines).decode(errors="replace").strip()[-500:],
                )
            time.sleep(delay)
        finally:
            deadline.cancel()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        lines.extend(proc.stderr.readlines())
    done, acknowledged = 0, []
    for line in lines:
        match = _STEP_LINE.match(line.decode(errors="replace"))
        if match is None or not line.endswith(b"\n"):
            continue  # cut short by the kill
        done = int(match[1])
        if match[2] is not None:
            acknowledged.append(int(match[2]))
    return done, tuple(acknowledged), proc.pid


def _run_again(result: RunResult, done: int) -> tuple[str, ...]:
    """The steps the killed run had done after its last checkpoint, which ran again."""
    first = WORKFLOW.step_names.index(result.steps_run[0]) if result.steps_run else done
    return WORKFLOW.step_names[first:done]
