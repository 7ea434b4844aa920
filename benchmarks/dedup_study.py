"""How to chunk record format 2 (issue 10): the candidate chunkings, measured on one workload.

python -m benchmarks.dedup_study [--workflows N] [--steps N] [--out FILE]

The workload is the issue's: workflows whose state is a chat history that grows by one message
per step (a message of ~40 to ~1,500 bytes as msgpack, tool outputs the largest), beside a few
small fields that change every step. Every candidate stores each step's full state; what it
keeps is counted as a store would hold it:

- ``full copy``: format 1, every checkpoint the whole state.
- ``per element >= T``: by structure. Every list element and dict value whose msgpack is at
  least T bytes becomes a content-addressed chunk (xxh3-128 of its bytes), stored once; the
  record holds the state with a 19-byte reference in its place.
- ``prefix nodes, flat every K``: as ``per element``, and a list that extends the list of the
  workflow's previous checkpoint becomes a node ``[previous node, new element references]``,
  itself a chunk; every K-th node holds every reference instead (a read follows at most K
  nodes).
- ``FastCDC avg A``: content-defined chunks of the state's msgpack bytes (pyfastcdc, min A/4,
  max 4A), stored once; the record is the list of their references.
- ``... + zstd``: the same with every chunk compressed by zstd (level 3) when that saves bytes.

Bytes kept = record bodies + distinct chunks + per-item overheads a store pays: 48 bytes per
record (24-byte header, key, index entries) and 48 per chunk (its 16-byte key, a reference
count, the B-tree node). Unique content = the msgpack of every distinct message once, plus the
small fields of every checkpoint. Encode and decode times are per checkpoint in this process,
as ratios to the full copy's in the same run (msgpack + xxh3 work only, no storage I/O).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import xxhash

DOCS = Path(__file__).resolve().parent.parent / "docs" / "dedup-study.md"
REF_BYTES = 19  # a msgpack ext holding a 16-byte hash
RECORD_OVERHEAD = 48
CHUNK_OVERHEAD = 48
SMALL_STATE = 16 << 10

State = dict[str, Any]


class _Ref:
    """A chunk reference inside a record (packed as msgpack ext 16)."""

    __slots__ = ("digest",)

    def __init__(self, digest: bytes) -> None:
        self.digest = digest


def _pack(value: object) -> bytes:
    return msgpack.packb(
        value, default=lambda v: msgpack.ExtType(16, v.digest) if isinstance(v, _Ref) else v
    )


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=lambda code, payload: _Ref(payload))


# -- the workload -----------------------------------------------------------------------------


def _message(rng: random.Random, words: list[str], index: int) -> dict[str, Any]:
    role = rng.choice(("user", "assistant", "assistant", "tool"))
    count = rng.randint(60, 250) if role == "tool" else rng.randint(5, 60)
    return {
        "id": f"m{index}",
        "role": role,
        "content": " ".join(rng.choices(words, k=count)),
        "tokens": rng.randint(5, 2000),
    }


def histories(workflows: int, steps: int, seed: int = 10) -> Iterator[tuple[str, int, State]]:
    """(workflow, step, state) for every checkpoint, in the order an executor would put them."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("aeioulnrstkm", k=rng.randint(2, 9))) for _ in range(3000)]
    states: dict[str, State] = {
        f"chat-{n}": {"thread": f"chat-{n}", "step": 0, "messages": [], "scratch": {}}
        for n in range(workflows)
    }
    for step in range(1, steps + 1):
        for name, state in states.items():
            state["messages"].append(_message(rng, words, step))
            state["step"] = step
            state["scratch"] = {"cursor": rng.randint(0, 10**6), "note": rng.choice(words)}
            yield name, step, {**state, "messages": list(state["messages"])}


def unique_bytes(workflows: int, steps: int) -> int:
    seen: set[bytes] = set()
    total = 0
    for _, _, state in histories(workflows, steps):
        for message in state["messages"]:
            packed = _pack(message)
            if packed not in seen:
                seen.add(packed)
                total += len(packed)
        total += len(_pack({k: v for k, v in state.items() if k != "messages"}))
    return total


# -- the candidates ---------------------------------------------------------------------------


@dataclass
class Store:
    """Chunks kept once, records counted, and the bytes of each."""

    compress: Callable[[bytes], bytes] | None = None
    chunks: dict[bytes, bytes] = field(default_factory=dict)
    compressed: set[bytes] = field(default_factory=set)
    """Digests of the chunks kept compressed (the others did not shrink)."""
    record_bytes: int = 0
    records: int = 0

    def chunk(self, data: bytes) -> _Ref:
        digest = xxhash.xxh3_128_digest(data)
        if digest not in self.chunks:
            stored = data
            if self.compress is not None:
                packed = self.compress(data)
                if len(packed) < len(data):
                    stored = packed
                    self.compressed.add(digest)
            self.chunks[digest] = stored
        return _Ref(digest)

    def record(self, body: bytes) -> None:
        self.records += 1
        self.record_bytes += len(body)

    def kept(self) -> int:
        chunk_bytes = sum(len(c) for c in self.chunks.values())
        overhead = self.records * RECORD_OVERHEAD + len(self.chunks) * CHUNK_OVERHEAD
        return self.record_bytes + chunk_bytes + overhead


class Candidate:
    name = ""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, workflow: str, state: State) -> bytes:
        raise NotImplementedError

    def get(self, body: bytes) -> State:
        raise NotImplementedError

    def _recorded(self, body: bytes) -> bytes:
        """Digest the record as a store would, count it, and return it."""
        xxhash.xxh3_64_intdigest(body)
        self.store.record(body)
        return body


class FullCopy(Candidate):
    name = "full copy (format 1)"

    def put(self, workflow: str, state: State) -> bytes:
        body = _pack(state)
        return self._recorded(body)

    def get(self, body: bytes) -> State:
        xxhash.xxh3_64_intdigest(body)
        result: State = msgpack.unpackb(body)
        return result


class PerElement(Candidate):
    def __init__(self, store: Store, threshold: int) -> None:
        super().__init__(store)
        self.threshold = threshold
        self.name = f"per element >= {threshold} B"

    def _split(self, value: object) -> object:
        if isinstance(value, list):
            return [self._part(item) for item in value]
        if isinstance(value, dict):
            return {key: self._part(item) for key, item in value.items()}
        return value

    def _part(self, value: object) -> object:
        split = self._split(value)
        packed = _pack(split)
        return self.store.chunk(packed) if len(packed) >= self.threshold else split

    def put(self, workflow: str, state: State) -> bytes:
        body = _pack(self._split(state))
        return self._recorded(body)

    def _join(self, value: object) -> object:
        if isinstance(value, _Ref):
            data = self.store.chunks[value.digest]
            xxhash.xxh3_128_digest(data)
            return self._join(_unpack(data))
        if isinstance(value, list):
            return [self._join(item) for item in value]
        if isinstance(value, dict):
            return {key: self._join(item) for key, item in value.items()}
        return value

    def get(self, body: bytes) -> State:
        xxhash.xxh3_64_intdigest(body)
        result: State = self._join(_unpack(body))  # type: ignore[assignment]
        return result


class PrefixNodes(PerElement):
    """Lists that extend the previous checkpoint's list are stored as a node chain."""

    def __init__(self, store: Store, threshold: int, flat_every: int) -> None:
        super().__init__(store, threshold)
        self.flat_every = flat_every
        self.name = f"prefix nodes >= {threshold} B, flat every {flat_every}"
        self.previous: dict[tuple[str, str], tuple[list[bytes], _Ref, int]] = {}
        self.workflow = ""

    def put(self, workflow: str, state: State) -> bytes:
        self.workflow = workflow
        return super().put(workflow, state)

    def _split(self, value: object) -> object:
        if isinstance(value, dict):
            return {key: self._field(key, item) for key, item in value.items()}
        return super()._split(value)

    def _field(self, key: str, value: object) -> object:
        if not isinstance(value, list) or not value:
            return self._part(value)
        refs = [self._part(item) for item in value]
        digests = [ref.digest if isinstance(ref, _Ref) else _pack(ref) for ref in refs]
        before = self.previous.get((self.workflow, key))
        if (
            before is not None
            and before[2] < self.flat_every
            and digests[: len(before[0])] == (before[0])
        ):
            node = self.store.chunk(_pack(["node", before[1], refs[len(before[0]) :]]))
            depth = before[2] + 1
        else:
            node = self.store.chunk(_pack(["flat", refs]))
            depth = 0
        self.previous[self.workflow, key] = (digests, node, depth)
        return node

    def _join(self, value: object) -> object:
        if isinstance(value, _Ref):
            data = self.store.chunks[value.digest]
            xxhash.xxh3_128_digest(data)
            decoded = _unpack(data)
            if isinstance(decoded, list) and decoded and decoded[0] in ("node", "flat"):
                return self._list(decoded)
            return self._join(decoded)
        return super()._join(value)

    def _list(self, node: list[Any]) -> list[object]:
        tails: list[list[object]] = []
        while node[0] == "node":
            tails.append(node[2])
            data = self.store.chunks[node[1].digest]
            xxhash.xxh3_128_digest(data)
            node = _unpack(data)
        items = list(node[1])
        for tail in reversed(tails):
            items.extend(tail)
        return [self._join(item) for item in items]


class SplicedPrefixNodes(Candidate):
    """The design's candidate: prefix nodes over a list's elements, kept as msgpack bytes.

    Each element of a top-level list of at least ``MIN_ITEMS`` items is packed on its own and
    becomes a chunk; the list becomes a node ``[previous node or nil, [new element digests]]``
    (a flat node every K), and the record holds the state with the list replaced by a
    reference to its node. A read joins the list's array header and its elements' bytes and
    decodes the whole list in one msgpack call; elements are looked up by digest (a store
    would keep recently read chunks in a cache keyed by digest: content never changes).
    """

    MIN_ITEMS = 8

    def __init__(self, store: Store, flat_every: int) -> None:
        super().__init__(store)
        self.flat_every = flat_every
        self.name = f"spliced prefix nodes, flat every {flat_every}"
        self.previous: dict[tuple[str, str], tuple[list[bytes], bytes, int]] = {}

    def put(self, workflow: str, state: State) -> bytes:
        replaced: State = {}
        for key, value in state.items():
            if isinstance(value, list) and len(value) >= self.MIN_ITEMS:
                replaced[key] = msgpack.ExtType(17, self._node(workflow, key, value))
            else:
                replaced[key] = value
        body = msgpack.packb(replaced)
        return self._recorded(body)

    def _node(self, workflow: str, key: str, items: list[object]) -> bytes:
        digests = []
        for item in items:
            digests.append(self.store.chunk(msgpack.packb(item)).digest)
        before = self.previous.get((workflow, key))
        if (
            before is not None
            and before[2] < self.flat_every
            and digests[: len(before[0])] == before[0]
        ):
            node = [before[1], digests[len(before[0]) :]]
            depth = before[2] + 1
        else:
            node, depth = [None, digests], 0
        digest = self.store.chunk(msgpack.packb(node)).digest
        self.previous[workflow, key] = (digests, digest, depth)
        return digest

    def get(self, body: bytes) -> State:
        xxhash.xxh3_64_intdigest(body)
        return msgpack.unpackb(body, ext_hook=self._list)  # type: ignore[no-any-return]

    def _list(self, code: int, digest: bytes) -> object:
        chunks = self.store.chunks
        tails = []
        while digest is not None:
            previous, items = msgpack.unpackb(chunks[digest])
            tails.append(items)
            digest = previous
        digests = [d for tail in reversed(tails) for d in tail]
        header = msgpack.Packer().pack_array_header(len(digests))
        return msgpack.unpackb(header + b"".join(chunks[d] for d in digests))


class ContentDefined(Candidate):
    def __init__(self, store: Store, average: int) -> None:
        super().__init__(store)
        from pyfastcdc import FastCDC

        self.cutter = FastCDC(avg_size=average, min_size=average // 4, max_size=average * 4)
        self.name = f"FastCDC avg {average} B"

    def put(self, workflow: str, state: State) -> bytes:
        data = _pack(state)
        refs = [self.store.chunk(bytes(chunk.data)) for chunk in self.cutter.cut_buf(data)]
        body = _pack(refs)
        return self._recorded(body)

    def get(self, body: bytes) -> State:
        xxhash.xxh3_64_intdigest(body)
        parts = []
        for ref in _unpack(body):
            data = self.store.chunks[ref.digest]
            xxhash.xxh3_128_digest(data)
            parts.append(data)
        result: State = msgpack.unpackb(b"".join(parts))
        return result


def _zstd() -> Callable[[bytes], bytes]:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    return compressor.compress


def candidates() -> list[Callable[[], Candidate]]:
    made: list[Callable[[], Candidate]] = [
        lambda: FullCopy(Store()),
        lambda: PerElement(Store(), 64),
        lambda: PerElement(Store(), 256),
        lambda: PrefixNodes(Store(), 64, 16),
        lambda: PrefixNodes(Store(), 256, 16),
        lambda: SplicedPrefixNodes(Store(), 16),
        lambda: SplicedPrefixNodes(Store(), 64),
        lambda: ContentDefined(Store(), 512),
        lambda: ContentDefined(Store(), 2048),
    ]
    made.append(lambda: _compressed(SplicedPrefixNodes(Store(compress=_zstd()), 16)))
    made.append(lambda: _compressed(ContentDefined(Store(compress=_zstd()), 2048)))
    return made


def _compressed(candidate: Candidate) -> Candidate:
    candidate.name += " + zstd"
    return candidate


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    kept: int
    chunks: int
    put_small: float
    put_large: float
    get_small: float
    get_large: float


def _decompressed(candidate: Candidate) -> None:
    """Reads below time the chunk lookups, not zstd: give them the raw chunks back."""
    if candidate.store.compress is None:
        return
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    chunks = candidate.store.chunks
    for digest in candidate.store.compressed:
        chunks[digest] = decompressor.decompress(chunks[digest])


def measure(make: Callable[[], Candidate], workflows: int, steps: int) -> Result:
    candidate = make()
    put_times: dict[bool, list[float]] = {True: [], False: []}
    bodies: list[tuple[bool, bytes, State]] = []
    for workflow, _, state in histories(workflows, steps):
        small = len(_pack(state)) < SMALL_STATE
        started = time.perf_counter()
        body = candidate.put(workflow, state)
        put_times[small].append(time.perf_counter() - started)
        bodies.append((small, body, state))
    kept = candidate.store.kept()
    _decompressed(candidate)
    get_times: dict[bool, list[float]] = {True: [], False: []}
    for small, body, state in bodies[:: max(1, len(bodies) // 400)]:
        started = time.perf_counter()
        assert candidate.get(body) == state, candidate.name
        get_times[small].append(time.perf_counter() - started)
    return Result(
        candidate.name,
        kept,
        len(candidate.store.chunks),
        statistics.median(put_times[True]),
        statistics.median(put_times[False]),
        statistics.median(get_times[True]),
        statistics.median(get_times[False]),
    )


def render(results: list[Result], unique: int, workflows: int, steps: int) -> str:
    base = results[0]
    lines = [
        "# Record format 2: which chunking (measured)",
        "",
        "Written by `python -m benchmarks.dedup_study` (see its docstring for the method); do "
        f"not edit by hand. {workflows} workflows x {steps} steps of a growing chat history; "
        f"unique content {unique / 2**20:.2f} MiB. Put and get are the median per checkpoint "
        "of encoding (or decoding) it as each candidate would, in this process, as a ratio to "
        "the full copy's in the same run (above 1: slower), for states under 16 KiB and above.",
        "",
        "| candidate | bytes kept | x unique | chunks | put < 16 KiB | put >= 16 KiB "
        "| get < 16 KiB | get >= 16 KiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.kept / 2**20:.2f} MiB | {result.kept / unique:.2f} "
            f"| {result.chunks:,} | {result.put_small / base.put_small:.2f} "
            f"| {result.put_large / base.put_large:.2f} | {result.get_small / base.get_small:.2f} "
            f"| {result.get_large / base.get_large:.2f} |"
        )
    lines += [
        "",
        f"Full copy, absolute: put {base.put_small * 1e6:.0f} µs / {base.put_large * 1e6:.0f} µs, "
        f"get {base.get_small * 1e6:.0f} µs / {base.get_large * 1e6:.0f} µs (small / large).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup_study")
    parser.add_argument("--workflows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    unique = unique_bytes(args.workflows, args.steps)
    results = []
    for make in candidates():
        try:
            results.append(measure(make, args.workflows, args.steps))
        except ImportError as exc:
            print(f"skipped a candidate: {exc}", file=sys.stderr)
    text = render(results, unique, args.workflows, args.steps)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
