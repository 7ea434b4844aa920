"""docs/benchmarks.md: the suite's tables, issue 6's targets, the machine, the method."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .machine import peer_versions, versions
from .scaling import LATEST as SCALED_LATEST
from .scaling import RESUME, SEEK, ScalePoint
from .states import SIZES
from .suite import HISTORY, LATEST, PUT, SCALING_SIZE, Result, Results
from .timing import paired_ratios
from .variants import (
    BARE,
    BARE_ASYNC,
    BARE_SYNC,
    LMDBSTATE,
    LMDBSTATE_ASYNC,
    LMDBSTATE_SYNC,
    PUTS,
    READERS,
    SAVER,
    SQLITE_FULL,
    group_name,
    put_reference,
)

MIB = 1 << 20
SMALL = "1 KiB"
TITLES = {
    PUT: "put: save a checkpoint",
    LATEST: "latest: read a workflow's newest checkpoint, decoded",
    HISTORY: "history: list a workflow's checkpoints",
}


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio_text(ratios: Sequence[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"


def _reference(result: Result) -> str:
    return put_reference(bool(result.durable)) if result.operation == PUT else LMDBSTATE


class _Index:
    def __init__(self, results: Iterable[Result]) -> None:
        self._results = {(r.operation, r.size, r.variant): r for r in results}

    def get(self, operation: str, size: str, variant: str) -> Result:
        return self._results[operation, size, variant]

    def ratios(self, result: Result, base: str) -> list[float] | str:
        """Per round, ``result``'s rate over ``base``'s; or why one of them did not run."""
        other = self.get(result.operation, result.size, base)
        if result.summary is None or other.summary is None:
            return str(result.skipped if result.summary is None else other.skipped)
        return paired_ratios(result.summary, other.summary)


# -- tables -----------------------------------------------------------------------------------


def _detail_table(index: _Index, operation: str, size: str, rows: Sequence[Result]) -> list[str]:
    """Put rows show their durability class; history rows count checkpoints, not bytes.

    A history scan's bytes would mislead: most listers read no state at all.
    """
    first = rows[0]
    puts = operation == PUT
    per_op = "" if first.items == 1 else f", {first.items} checkpoints per op"
    lines = [
        f"#### {size} states ({first.state_bytes:,} B as msgpack{per_op})",
        "",
        f"| variant{' | durable' if puts else ''} | ops/s "
        f"| {'checkpoints/s' if operation == HISTORY else 'MiB/s'} "
        "| p50 µs | p99 µs | × lmdbstate | ops timed |",
        f"|---{'|---' if puts else ''}|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        name = f"{row.variant} | {'yes' if row.durable else 'no'}" if puts else row.variant
        if row.summary is None:
            lines.append(f"| {name} | {row.skipped} | | | | | |")
            continue
        summary = row.summary
        volume = summary.rate * row.items
        if operation != HISTORY:
            volume *= row.state_bytes / MIB
        reference = _reference(row)
        ratios = index.ratios(row, reference)
        shown = (
            "1 (reference)"
            if row.variant == reference
            else ratios
            if isinstance(ratios, str)
            else _ratio_text(ratios)
        )
        lines.append(
            f"| {name} | {_number(summary.rate)} | {_number(volume)} | {_number(summary.p50_us)} "
            f"| {_number(summary.p99_us)} | {shown} | {summary.ops:,} |"
        )
    return [*lines, ""]


def _matrix(index: _Index, operation: str, names: Sequence[str], sizes: Sequence[str]) -> list[str]:
    lines = [
        "| variant | " + " | ".join(sizes) + " |",
        "|---|" + "--:|" * len(sizes),
    ]
    for name in names:
        cells = []
        for size in sizes:
            row = index.get(operation, size, name)
            reference = _reference(row)
            ratios = index.ratios(row, reference)
            if name == reference:
                cells.append("1")
            elif isinstance(ratios, str):
                cells.append("—")
            else:
                cells.append(f"{statistics.median(ratios):.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _operation(index: _Index, results: Sequence[Result], operation: str) -> list[str]:
    rows = [r for r in results if r.operation == operation]
    names = list(dict.fromkeys(r.variant for r in rows))
    sizes = list(dict.fromkeys(r.size for r in rows))
    lines = [f"### {TITLES[operation]}", ""]
    if operation == PUT:
        lines += [
            "Each variant's throughput over lmdbstate's in its durability class, measured in the "
            f"same rounds: durable rows against `{LMDBSTATE_SYNC}`, the others against "
            f"`{LMDBSTATE_ASYNC}`. Above 1: faster than lmdbstate.",
            "",
        ]
    else:
        lines += [
            "Each variant's throughput over lmdbstate's, measured in the same rounds. Above 1: "
            "faster than lmdbstate.",
            "",
        ]
    lines += _matrix(index, operation, names, sizes)
    for size in sizes:
        lines += _detail_table(index, operation, size, [r for r in rows if r.size == size])
    return lines


def _scaling(points: Sequence[ScalePoint]) -> list[str]:
    if not points:
        return []
    base = points[0].summaries

    def cells(point: ScalePoint, name: str) -> str:
        summary = point.summaries[name]
        growth = summary.p50_us / base[name].p50_us
        return f"{_number(summary.p50_us)} | {_number(summary.p99_us)} | {growth:.2f}x"

    lines = [
        "| checkpoints | workflows | data.mdb MiB | seek p50 µs | seek p99 µs | seek cost × "
        "| latest() p50 µs | latest() p99 µs | latest() cost × | resume p50 µs | resume p99 µs "
        "| resume cost × |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for point in points:
        lines.append(
            f"| {point.checkpoints:,} | {point.workflows:,} | {point.file_bytes / MIB:,.1f} "
            f"| {cells(point, SEEK)} | {cells(point, SCALED_LATEST)} | {cells(point, RESUME)} |"
        )
    return [*lines, ""]


# -- targets ----------------------------------------------------------------------------------

Measured = tuple[float, str] | str
"""A measured value and how to show it, or why it was not measured."""


@dataclass(frozen=True)
class Target:
    text: str
    measure: Callable[[Results, _Index], Measured]
    threshold: float
    at_most: bool = False

    def row(self, results: Results, index: _Index) -> str:
        measured = self.measure(results, index)
        if isinstance(measured, str):
            return f"| {self.text} | {measured} | not measured |"
        value, shown = measured
        met = value <= self.threshold if self.at_most else value >= self.threshold
        return f"| {self.text} | {shown} | {'met' if met else '**not met**'} |"


def _paired(
    operation: str, size: str, variant: str, base: str
) -> Callable[[Results, _Index], Measured]:
    def measure(results: Results, index: _Index) -> Measured:
        ratios = index.ratios(index.get(operation, size, variant), base)
        if isinstance(ratios, str):
            return ratios
        return statistics.median(ratios), _ratio_text(ratios)

    return measure


def _latest_growth(results: Results, index: _Index) -> Measured:
    points = results.scaling
    if not points or points[-1].checkpoints < 1_000_000:
        return "the store did not reach 1,000,000 checkpoints in this run (--quick)"
    first, last = points[0].summaries[SCALED_LATEST], points[-1].summaries[SCALED_LATEST]
    growth = last.p50_us / first.p50_us
    return growth, (
        f"{growth:.2f}x (p50 {first.p50_us:.1f} µs with {points[0].checkpoints:,}, "
        f"{last.p50_us:.1f} µs with {points[-1].checkpoints:,})"
    )


def _verify(size: str) -> Callable[[Results, _Index], Measured]:
    def measure(results: Results, index: _Index) -> Measured:
        found = next((v for v in results.verify if v.size == size), None)
        if found is None:
            return "lmdbstate's store was not loaded"
        return found.gib_per_s, f"{found.gib_per_s:.2f} GiB/s ({found.records:,} records)"

    return measure


def _ratio(
    text: str, operation: str, size: str, variant: str, base: str, threshold: float
) -> Target:
    return Target(f"{text}, {size}", _paired(operation, size, variant, base), threshold)


GROUP_16 = group_name(16)
TARGETS = (
    *(
        _ratio(f"group commit, 16 writers: ≥ {least:g}x {name}", PUT, SMALL, GROUP_16, base, least)
        for name, base, least in (
            ("lmdbstate sync, 1 writer", LMDBSTATE_SYNC, 10),
            ("SQLite WAL FULL", SQLITE_FULL, 8),
            ("LangGraph SqliteSaver", SAVER, 8),
        )
    ),
    *(
        _ratio(
            "sync, 1 writer: ≥ 0.95x bare LMDB durable commit",
            PUT,
            size,
            LMDBSTATE_SYNC,
            BARE_SYNC,
            0.95,
        )
        for size in SIZES
    ),
    _ratio(
        "async put: ≥ 0.85x bare lmdb + msgpack + xxhash",
        PUT,
        SMALL,
        LMDBSTATE_ASYNC,
        BARE_ASYNC,
        0.85,
    ),
    _ratio(
        "latest() with digest check and decode: ≥ 0.9x bare", LATEST, SMALL, LMDBSTATE, BARE, 0.9
    ),
    _ratio("latest(): ≥ 4x SqliteSaver.get_tuple", LATEST, SMALL, LMDBSTATE, SAVER, 4),
    Target(
        f"latest() with 1,000,000 checkpoints in the store ({SCALING_SIZE}): ≤ 1.5x its cost "
        "with 10",
        _latest_growth,
        1.5,
        at_most=True,
    ),
    *(Target(f"verify, {size} records: ≥ 1 GiB/s, warm cache", _verify(size), 1) for size in SIZES),
)


# -- the document -----------------------------------------------------------------------------


def _variants() -> list[str]:
    lines = ["| put variant | durable | what one put does |", "|---|---|---|"]
    lines += [f"| {v.name} | {'yes' if v.durable else 'no'} | {v.note} |" for v in PUTS]
    lines += ["", "| reader | latest | history |", "|---|---|---|"]
    lines += [
        f"| {v.name} | {v.latest_note} | {v.history_note or 'none: no ordered listing'} |"
        for v in READERS
    ]
    return [*lines, ""]


def _skipped(results: Sequence[Result]) -> list[str]:
    skipped = dict.fromkeys(
        f"- {r.variant} ({r.operation}): {r.skipped}" for r in results if r.skipped is not None
    )
    return [*skipped, ""] if skipped else ["Every registered variant ran.", ""]


def render(results: Results, machine: dict[str, str], chart: str, command: str) -> str:
    """The whole report as Markdown."""
    index = _Index(results.results)
    plan = results.plan
    flush = index.get(PUT, SMALL, "append + fdatasync").summary
    table = dict(machine)
    if flush is not None:
        table["one flush"] = (
            f"{_number(flush.p50_us)} µs p50 for a {SMALL} append + fdatasync (measured below)"
        )
    libraries = versions() | peer_versions()
    lines = [
        "# lmdbstate benchmarks",
        "",
        f"Written by `{command}` in {results.seconds / 60:.1f} minutes; do not edit by hand. "
        "The machine is noisy (2 cores, a virtual disk): absolute figures swing by 1.5x from run "
        "to run, so compare ratios measured in the same run, as the tables do.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in table.items()),
        "| libraries | " + ", ".join(f"{k} {v}" for k, v in libraries.items()) + " |",
        "",
        "## Targets of issue 6",
        "",
        "| target | measured (median of rounds, min–max) | verdict |",
        "|---|---|---|",
        *(target.row(results, index) for target in TARGETS),
        "",
        "## Throughput against the peers",
        "",
        chart,
        "",
        "Durable: the put is on disk (fsync'ed) when it returns, so it survives a power cut. "
        "The others survive a process crash but may lose their newest puts on power loss. "
        "ops/s is the median over rounds; p50 and p99 are over every operation timed; MiB/s "
        "counts the state's msgpack size, the same for every variant whatever it writes or "
        "reads. "
        "`× lmdbstate` is the median over rounds of the variant's ops/s over lmdbstate's in the "
        "same round (min–max over rounds).",
        "",
    ]
    for operation in (PUT, LATEST, HISTORY):
        lines += _operation(index, results.results, operation)
    lines += [
        "## verify",
        "",
        "`store.verify()` of the store the reads ran on, once to warm the cache, then the median "
        "of the timed runs: bytes of records checked per second.",
        "",
        "| records | count | MiB | GiB/s |",
        "|---|--:|--:|--:|",
        *(
            f"| {v.size} | {v.records:,} | {v.bytes / MIB:,.1f} | {v.gib_per_s:.2f} |"
            for v in results.verify
        ),
        "",
        f"## latest() and resume as the store grows ({SCALING_SIZE} states)",
        "",
        "One store grows through each size, 100 checkpoints per workflow; each call reads a "
        "workflow drawn at random among those in the store. seek: py-lmdb alone finding the "
        "newest record (set_range + prev) and copying it, no check, no decode. latest(): the "
        "store's call on an open store. resume: open the store, latest(), close, as a restarted "
        "executor does. cost ×: p50 over the p50 with "
        f"{plan.scaling[0]:,} checkpoints.",
        "",
        *_scaling(results.scaling),
        "## Variants",
        "",
        *_variants(),
        "Not run:",
        "",
        *_skipped(results.results),
        "## Method",
        "",
        f"- One process runs everything. Each variant runs once per round, {plan.rounds} rounds, "
        "the order rotating from round to round so that noise hits every variant alike; ratios "
        "pair variants within a round.",
        "- Each round of a put variant writes into a fresh temporary directory, deleted when the "
        "round ends (on some virtual machines writing into never-touched page cache runs several "
        "times slower, so the data on disk stays bounded). Reads run on stores loaded with the "
        "same checkpoints for every reader.",
        "- Every variant cycles through the same state objects, in the same order: half an "
        "agent's state (messages with tool calls and tool outputs, a scratchpad, metrics), half a "
        "data pipeline's (partitions, watermarks, a buffer of records, errors), built from a "
        "fixed seed. Single writers cycle through 8 workflows; n writers write one workflow each.",
        "- Time-boxed rounds: a variant runs until its time box ends or its most operations ran, "
        "after an untimed warm-up of a tenth of that. Per round and state size: "
        + ", ".join(
            f"{size} puts {b.seconds:g} s or {b.max_ops:,} ops" for size, b in plan.put.items()
        )
        + "; reads "
        + ", ".join(f"{size} {b.seconds:g} s" for size, b in plan.read.items())
        + ".",
        "- The benchmark's own states are frozen out of the garbage collector (gc.freeze); "
        "before each variant's round a collection runs and every dirty page is written out "
        "(os.sync), so that no variant pays for another's garbage or writeback. Each round "
        "writes at most a few tens of MiB, for the same reason.",
        "",
    ]
    return "\n".join(lines)
