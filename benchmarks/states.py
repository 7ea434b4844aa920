"""Realistic checkpoint states, built deterministically from a seed.

Two kinds alternate in every list of states: an agent's state (a message history with tool calls
and tool outputs, a scratchpad, metrics) and a data pipeline's state (partition bookkeeping,
source watermarks, a buffer of pending records, errors). Both hold only what JSON, msgpack and
pickle all carry (dicts with str keys, lists, str, int, float, bool, None), so every store
compared receives the very same objects.

A state grows until its msgpack form reaches the target size. Sizes are counted item by item as
the state grows (re-packing the whole state after every item would be quadratic at 4 MiB).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

SEED = 20261127
SIZES = {"1 KiB": 1 << 10, "16 KiB": 16 << 10, "256 KiB": 256 << 10, "4 MiB": 4 << 20}
"""Label -> target msgpack size in bytes."""

State = dict[str, Any]

_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vo", "di", "pe", "shan", "or", "et", "qu", "ix")
_VOCABULARY_SIZE = 3000


def _vocabulary(rng: random.Random) -> list[str]:
    return ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(_VOCABULARY_SIZE)]


class _Source:
    """Random words and values drawn from one seeded generator."""

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng)

    def word(self) -> str:
        return self.rng.choice(self.words)

    def text(self, words: int) -> str:
        return " ".join(self.rng.choices(self.words, k=words))

    def value(self) -> object:
        kind = self.rng.randrange(6)
        if kind == 0:
            return self.rng.randint(-(10**9), 10**9)
        if kind == 1:
            return self.rng.random() * 1000
        if kind == 2:
            return self.text(self.rng.randint(1, 8))
        if kind == 3:
            return [self.rng.randint(0, 10_000) for _ in range(self.rng.randint(1, 12))]
        if kind == 4:
            return {"done": self.rng.random() < 0.5, "note": None, "score": self.rng.random()}
        return None


def _packed_len(value: object) -> int:
    return len(msgpack.packb(value))


def _grow(state: State, target_bytes: int, add: Callable[[], int]) -> State:
    """Call ``add`` (which adds one item and returns its packed size) until the state is big enough.

    Container headers grow by a few bytes as lists pass 15 and 65,535 items: the estimate stays
    within a few bytes of the truth, and ``packed_size`` reports the exact figure.
    """
    size = _packed_len(state)
    while size < target_bytes:
        size += add()
    return state


def agent_state(source: _Source, target_bytes: int) -> State:
    """An agent run: messages (some with tool calls, tool outputs of a few KiB), scratchpad."""
    rng = source.rng
    state: State = {
        "run": {
            "id": f"run-{rng.getrandbits(64):016x}",
            "attempt": rng.randint(1, 3),
            "started_at": rng.uniform(1.7e9, 1.8e9),
            "tags": [source.word() for _ in range(3)],
        },
        "cursor": rng.randint(0, 500),
        "messages": [],
        "scratch": {},
        "metrics": {
            "tokens_in": rng.randint(0, 10**6),
            "tokens_out": rng.randint(0, 10**6),
            "cost_usd": rng.random() * 10,
            "latency_ms": [rng.random() * 900 for _ in range(4)],
        },
    }
    messages: list[dict[str, Any]] = state["messages"]
    scratch: dict[str, object] = state["scratch"]
    # A tool output is a small part of the state: so that small states hold a few messages too.
    longest = min(1500, max(8, target_bytes // 40))

    def add() -> int:
        if rng.random() < 0.3:
            key = f"k{len(scratch)}"
            scratch[key] = source.value()
            return _packed_len(key) + _packed_len(scratch[key])
        role = rng.choice(("user", "assistant", "assistant", "tool"))
        # Tool outputs (file contents, search results) are what make agent states big.
        words = rng.randint(longest // 16, longest) if role == "tool" else rng.randint(4, 60)
        calls = [
            {"name": source.word(), "args": {"query": source.text(4), "limit": rng.randint(1, 50)}}
            for _ in range(rng.choice((0, 0, 1, 2)) if role == "assistant" else 0)
        ]
        message = {
            "role": role,
            "content": source.text(words),
            "tokens": rng.randint(5, 2000),
            "tool_calls": calls,
        }
        messages.append(message)
        return _packed_len(message)

    return _grow(state, target_bytes, add)


def pipeline_state(source: _Source, target_bytes: int) -> State:
    """A data pipeline run: partitions done so far, watermarks, a buffer of records, errors."""
    rng = source.rng
    sources = [f"{source.word()}.{source.word()}" for _ in range(4)]
    state: State = {
        "pipeline": {
            "id": f"etl-{rng.getrandbits(48):012x}",
            "stage": rng.choice(("extract", "transform", "load")),
            "attempt": rng.randint(1, 3),
            "config": {"batch_size": rng.choice((500, 1000, 5000)), "sources": sources},
        },
        "watermarks": {
            name: {"offset": rng.randint(0, 10**9), "ts": rng.uniform(1.7e9, 1.8e9)}
            for name in sources
        },
        "partitions": [],
        "buffer": [],
        "errors": [],
    }
    partitions: list[dict[str, Any]] = state["partitions"]
    buffer: list[dict[str, Any]] = state["buffer"]
    errors: list[dict[str, Any]] = state["errors"]

    def add() -> int:
        draw = rng.random()
        item: dict[str, Any]
        if draw < 0.25:
            item = {
                "id": f"p-{len(partitions):05d}",
                "rows": rng.randint(0, 10**6),
                "bytes": rng.randint(0, 10**9),
                "status": rng.choice(("done", "done", "done", "running", "failed")),
                "min": rng.random() * 100,
                "max": rng.random() * 1e6,
                "checksum": f"{rng.getrandbits(64):016x}",
            }
            partitions.append(item)
        elif draw < 0.95:
            item = {
                "id": rng.randint(0, 10**12),
                "ts": rng.uniform(1.7e9, 1.8e9),
                "user": source.word(),
                "amount": round(rng.uniform(-500, 5000), 2),
                "currency": rng.choice(("EUR", "USD", "JPY")),
                "tags": [source.word() for _ in range(rng.randint(0, 3))],
                "valid": rng.random() < 0.97,
            }
            buffer.append(item)
        else:
            item = {"row": rng.randint(0, 10**6), "message": source.text(rng.randint(5, 20))}
            errors.append(item)
        return _packed_len(item)

    return _grow(state, target_bytes, add)


_KINDS = (agent_state, pipeline_state)


def make_states(target_bytes: int, count: int) -> list[State]:
    """``count`` states of about ``target_bytes`` (msgpack), alternating agent and pipeline."""
    return [
        _KINDS[index % len(_KINDS)](_Source(f"{SEED}-{target_bytes}-{index}"), target_bytes)
        for index in range(count)
    ]


def packed_size(states: Sequence[object]) -> int:
    """The mean msgpack size of ``states``, in bytes."""
    return round(statistics.mean(_packed_len(state) for state in states))
