"""LmdbSaver: LangGraph's conformance suite, real graphs, damaged records and a killed run."""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import ERROR
from langgraph.types import Command

from lmdbstate import (
    MEMORY_PATH,
    CheckpointStore,
    IntegrityError,
    InvalidInputError,
    RetentionPolicy,
    SequenceConflictError,
)
from lmdbstate.langgraph import LmdbSaver
from lmdbstate.lmdbfile import DataFile
from lmdbstate.store import recover

from .damage import flip_record, raw_get, raw_items
from .lg_graphs import agent_graph, delta_graph, loop_graph

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def saver(store_path: Path) -> Iterator[LmdbSaver]:
    with LmdbSaver.from_path(store_path) as opened:
        yield opened


def record_key(thread_id: str, checkpoint_id: str, checkpoint_ns: str = "", writes: bool = False):
    workflow = f"{thread_id}\x1f{checkpoint_ns}" + ("\x1fw" if writes else "")
    seq = uuid.UUID(checkpoint_id).int >> 64
    return workflow.encode() + b"\x00" + seq.to_bytes(8, "big")


class SerdeLoads:
    """Counts the states the saver decodes (its serde's ``loads_typed`` calls)."""

    def __init__(self, saver: LmdbSaver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = saver.serde.loads_typed

        def counting(data: tuple[str, bytes]) -> Any:
            self.count += 1
            return original(data)

        monkeypatch.setattr(saver.serde, "loads_typed", counting)


def put(saver: LmdbSaver, thread_id: str, parent: str | None = None, **metadata: Any) -> str:
    config = generate_config(thread_id, checkpoint_id=parent)
    checkpoint = generate_checkpoint(channel_values={"n": len(metadata)}, channel_versions={"n": 1})
    stored = saver.put(config, checkpoint, generate_metadata(**metadata), {"n": 1})
    checkpoint_id: str = stored["configurable"]["checkpoint_id"]
    return checkpoint_id


# -- the package boundary ---------------------------------------------------------------------


def test_importing_lmdbstate_never_imports_langgraph() -> None:
    code = (
        "import sys, lmdbstate, lmdbstate.cli\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('langgraph', 'langchain_core')]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- LangGraph's official conformance suite ---------------------------------------------------


@pytest.mark.parametrize("durability", ["group", "sync", "memory", "postgres"])
def test_langgraph_conformance_suite_passes_every_capability(
    tmp_path: Path, durability: str, request: pytest.FixtureRequest
) -> None:
    stores = iter(range(100))
    server = request.getfixturevalue("postgres_server") if durability == "postgres" else None

    @checkpointer_test(name=f"LmdbSaver-{durability}")
    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        path: str | Path = tmp_path / f"store-{next(stores)}"
        options = {"durability": durability}
        if server is not None:  # the saver on a PostgreSQL store, group commit as on LMDB
            path, options = server.url(), {"durability": "group"}
        elif durability == "memory":
            path, options = MEMORY_PATH, {}
        with CheckpointStore(path, **options) as store, LmdbSaver(store) as saver:
            yield saver

    report = asyncio.run(validate(factory))
    assert set(report.results) == {capability.value for capability in ALL_CAPABILITIES}
    assert [failure for r in report.results.values() for failure in r.failures] == []
    for name, result in report.results.items():
        assert result.detected, name
        assert result.passed, name
        assert result.tests_passed > 0, name
        assert result.tests_failed == 0, name
    assert report.conformance_level() == "FULL"


# -- a real graph, on LmdbSaver and on InMemorySaver ------------------------------------------


def _snapshot(state: Any) -> tuple[Any, ...]:
    tasks = tuple(
        (task.name, tuple(interrupt.value for interrupt in task.interrupts)) for task in state.tasks
    )
    source = state.metadata["source"] if state.metadata else None
    step = state.metadata["step"] if state.metadata else None
    return (state.values, state.next, source, step, tasks, state.parent_config is None)


def _result(output: dict[str, Any]) -> dict[str, Any]:
    """A graph's output with its interrupts' values (their ids are random)."""
    interrupts = output.get("__interrupt__", ())
    return {**output, "__interrupt__": [interrupt.value for interrupt in interrupts]}


def _agent_story(saver: BaseCheckpointSaver[Any]) -> dict[str, Any]:
    """Two tool-calling turns each paused by interrupt(), resumed, then time travel and a fork."""
    graph = agent_graph(saver)
    config: Any = {"configurable": {"thread_id": "thread-1"}}
    story: dict[str, Any] = {}
    story["paused"] = _result(graph.invoke({"messages": [HumanMessage("6 x 7?", id="h1")]}, config))
    story["paused_state"] = _snapshot(graph.get_state(config))
    story["first"] = _result(graph.invoke(Command(resume="approved"), config))
    graph.invoke({"messages": [HumanMessage("and again?", id="h2")]}, config)
    story["second"] = _result(graph.invoke(Command(resume="approved too"), config))
    history = list(graph.get_state_history(config))
    story["history"] = [_snapshot(state) for state in history]
    story["limited"] = [_snapshot(s) for s in graph.get_state_history(config, limit=3)]
    story["before"] = [
        _snapshot(s) for s in graph.get_state_history(config, before=history[2].config, limit=2)
    ]
    # Time travel: the first pause, resumed again with another answer, on a fork of its own.
    first_pause = next(s for s in reversed(history) if s.next == ("review",))
    forked = graph.update_state(first_pause.config, {"approvals": ["edited"]})
    story["fork_paused"] = _result(graph.invoke(None, forked))
    story["fork_done"] = _result(graph.invoke(Command(resume="approved on the fork"), config))
    story["after_fork"] = [_snapshot(s) for s in graph.get_state_history(config)]
    story["replayed"] = _snapshot(graph.get_state(history[3].config))
    return story


def test_a_tool_calling_graph_runs_alike_on_lmdb_and_in_memory(saver: LmdbSaver) -> None:
    expected = _agent_story(InMemorySaver())
    found = _agent_story(saver)
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert found[name] == value, name
    assert found["first"]["approvals"] == ["approved"]
    assert found["second"]["messages"][-1].content == "the product is 35"
    assert found["fork_done"]["approvals"] == ["edited", "approved on the fork"]
    assert len(found["after_fork"]) > len(found["history"])


def test_an_async_graph_runs_alike_on_lmdb_and_in_memory(store_path: Path) -> None:
    async def story(saver: BaseCheckpointSaver[Any]) -> list[Any]:
        graph = agent_graph(saver)
        configs = [{"configurable": {"thread_id": f"t{n}"}} for n in range(8)]
        inputs = [{"messages": [HumanMessage(f"{n}?", id=f"h{n}")]} for n in range(8)]
        await asyncio.gather(*(graph.ainvoke(i, c) for i, c in zip(inputs, configs, strict=True)))
        await asyncio.gather(*(graph.ainvoke(Command(resume="yes"), c) for c in configs))
        return [
            [_snapshot(s) async for s in graph.aget_state_history(config)] for config in configs
        ]

    async def on_lmdb() -> list[Any]:
        async with LmdbSaver.from_path(store_path) as saver:
            return await story(saver)

    assert asyncio.run(on_lmdb()) == asyncio.run(story(InMemorySaver()))


# -- what lmdbstate adds: integrity, damage, the store's tools --------------------------------


def test_a_damaged_latest_checkpoint_falls_back_or_raises(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config: Any = {"configurable": {"thread_id": "t"}}
    with LmdbSaver.from_path(store_path) as saver:
        final = loop_graph(saver, steps=3).invoke({"count": 0, "trail": []}, config)
        ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
    newest = ids[0]
    record = raw_get(store_path, b"ckpt", record_key("t", newest))
    assert record is not None
    flip_record(store_path, record, len(record) - 2)

    with LmdbSaver.from_path(store_path, on_corruption="raise") as strict:
        with pytest.raises(IntegrityError):
            strict.get_tuple(config)
        with pytest.raises(IntegrityError):
            list(strict.list(config))
        assert not strict.store.verify().ok
    with LmdbSaver.from_path(store_path) as saver:
        with pytest.raises(IntegrityError):
            saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": newest}})
        with caplog.at_level(logging.WARNING, logger="lmdbstate"):
            fallback = saver.get_tuple(config)
            listed = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
        assert fallback is not None
        assert fallback.config["configurable"]["checkpoint_id"] == ids[1]
        assert "damaged" in caplog.text
        assert listed == ids[1:]
        # The graph goes on from the intact parent: the step runs again, the result is the same.
        assert loop_graph(saver, steps=3).invoke(None, config) == final


def test_damaged_pending_writes(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with LmdbSaver.from_path(store_path) as saver:
        checkpoint_id = put(saver, "t")
        config = generate_config("t", checkpoint_id=checkpoint_id)
        saver.put_writes(config, [("ch", "value")], "task-1")
    record = raw_get(store_path, b"ckpt", record_key("t", checkpoint_id, writes=True))
    assert record is not None
    flip_record(store_path, record, len(record) - 2)
    with (
        LmdbSaver.from_path(store_path, on_corruption="raise") as strict,
        pytest.raises(IntegrityError),
    ):
        strict.put_writes(config, [("ch", "new")], "task-2")
    with LmdbSaver.from_path(store_path) as saver:
        with pytest.raises(IntegrityError):
            saver.get_tuple(config)
        with caplog.at_level(logging.WARNING, logger="lmdbstate"):
            latest = saver.get_tuple(generate_config("t"))
            assert latest is not None
            assert latest.pending_writes == []
            saver.put_writes(config, [("ch", "new")], "task-2")
        found = saver.get_tuple(config)
        assert found is not None
        assert found.pending_writes == [("task-2", "ch", "new")]


def test_writes_special_indexes_are_upserted_others_inserted_once(saver: LmdbSaver) -> None:
    config = generate_config("t", checkpoint_id=put(saver, "t"))
    saver.put_writes(config, [("a", 1), (ERROR, "first")], "task", "path")
    saver.put_writes(config, [("a", 2), (ERROR, "second")], "task", "path")
    saver.put_writes(config, [("b", 3)], "another", "")
    found = saver.get_tuple(config)
    assert found is not None
    # writes_sort_key order: task path, then task id, then index.
    assert found.pending_writes == [
        ("another", "b", 3),
        ("task", ERROR, "second"),
        ("task", "a", 1),
    ]


def test_the_store_tools_work_on_a_langgraph_store(saver: LmdbSaver) -> None:
    config: Any = {"configurable": {"thread_id": "a"}}
    graph = agent_graph(saver)
    graph.invoke({"messages": [HumanMessage("2 x 7?", id="h1")]}, config)
    graph.invoke(Command(resume="yes"), config)
    saver.copy_thread("a", "b")
    saver.copy_thread("a", "c")
    store = saver.store
    assert store.verify(deep=True).ok
    ids = {info.workflow_id for info in store.workflows()}
    assert ids == {f"{t}\x1f" for t in "abc"} | {f"{t}\x1f\x1fw" for t in "abc"}
    history_a = [t.checkpoint["id"] for t in saver.list(config)]
    assert [info.seq for info in store.history("a\x1f", reverse=True)] == [
        uuid.UUID(i).int >> 64 for i in history_a
    ]
    saver.prune(["b"], strategy="keep_latest")
    assert len(list(saver.list({"configurable": {"thread_id": "b"}}))) == 1
    saver.prune(["c"], strategy="delete")
    assert list(saver.list({"configurable": {"thread_id": "c"}})) == []
    report = store.gc(RetentionPolicy(keep_last=2))
    assert report.checkpoints_removed > 0
    assert store.verify().ok
    latest = saver.get_tuple(config)
    assert latest is not None
    assert latest.checkpoint["id"] == history_a[0]
    saver.delete_thread("a")
    saver.delete_thread("b")
    assert list(store.workflows()) == []
    assert store.verify().ok


def test_list_reads_no_more_than_it_returns(
    saver: LmdbSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids: list[str] = []
    for step in range(100):
        ids.append(put(saver, "t", ids[-1] if ids else None, step=step))
    loads = SerdeLoads(saver, monkeypatch)
    before = generate_config("t", checkpoint_id=ids[60])
    found = list(saver.list(generate_config("t"), before=before, limit=5))
    assert [t.checkpoint["id"] for t in found] == ids[55:60][::-1]
    assert loads.count == 5
    assert saver.get_tuple(generate_config("t")).checkpoint["id"] == ids[-1]  # type: ignore[union-attr]
    found = list(saver.list(generate_config("t"), filter={"step": 7}))
    assert [t.metadata["step"] for t in found] == [7]
    assert list(saver.list(None, limit=0)) == []
    assert len(list(saver.list(None))) == 100


def test_list_of_a_thread_merges_its_namespaces_newest_first(saver: LmdbSaver) -> None:
    """As SqliteSaver does: a thread's subgraph namespaces interleave by checkpoint id."""
    written: list[tuple[str, str]] = []
    for step in range(9):
        namespace = ("", "child:1", "child:2")[step % 3]
        config = generate_config("t", checkpoint_ns=namespace)
        checkpoint = generate_checkpoint(channel_values={"n": step}, channel_versions={"n": 1})
        stored = saver.put(config, checkpoint, generate_metadata(step=step), {"n": 1})
        written.append((namespace, stored["configurable"]["checkpoint_id"]))
    put(saver, "other")  # another thread: not listed with "t", listed after it with None
    listed = [
        (t.config["configurable"]["checkpoint_ns"], t.checkpoint["id"])
        for t in saver.list({"configurable": {"thread_id": "t"}})
    ]
    assert listed == written[::-1]
    every = [t.config["configurable"]["thread_id"] for t in saver.list(None)]
    assert every == ["other"] + ["t"] * 9  # threads in key order, each merged newest first
    newest_first = [t.checkpoint["id"] for t in saver.list(None)]
    assert newest_first[1:] == [checkpoint_id for _, checkpoint_id in written[::-1]]


def test_list_decodes_only_what_it_returns_and_honours_before_with_an_id(
    saver: LmdbSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): merging namespaces decoded the first checkpoint of each, alist
    decoded a page of 32 for a caller that took one, and an id in the config ignored before
    and looked only in namespace ""."""
    ids = {}
    for namespace in ("", "a:1", "b:1", "c:1"):
        config = generate_config("t", checkpoint_ns=namespace)
        checkpoint = generate_checkpoint(channel_values={"n": 1}, channel_versions={"n": 1})
        ids[namespace] = saver.put(config, checkpoint, generate_metadata(), {"n": 1})[
            "configurable"
        ]["checkpoint_id"]
    loads = SerdeLoads(saver, monkeypatch)
    thread: Any = {"configurable": {"thread_id": "t"}}
    (newest,) = saver.list(thread, limit=1)
    assert newest.checkpoint["id"] == ids["c:1"]
    assert loads.count == 1

    async def first_of_alist() -> str:
        async for found in saver.alist(thread):
            return str(found.checkpoint["id"])
        raise AssertionError("nothing listed")

    loads.count = 0
    assert asyncio.run(first_of_alist()) == ids["c:1"]
    assert loads.count == 1
    by_id: Any = {"configurable": {"thread_id": "t", "checkpoint_id": ids["b:1"]}}
    assert [t.config["configurable"]["checkpoint_ns"] for t in saver.list(by_id)] == ["b:1"]
    before = generate_config("t", checkpoint_id=ids["a:1"])
    assert list(saver.list(by_id, before=before)) == []


def test_prune_keeps_the_ancestors_a_delta_channel_needs(saver: LmdbSaver) -> None:
    """Regression (review): keep_latest kept only the newest checkpoint, whose DeltaChannel
    value then rebuilt as empty, silently (LangGraph's prune contract warns of it)."""
    graph = delta_graph(saver, steps=10, snapshot_frequency=4)
    memory = delta_graph(InMemorySaver(), steps=10, snapshot_frequency=4)
    config: Any = {"configurable": {"thread_id": "t"}}
    graph.invoke({"items": [], "n": 0}, config)
    memory.invoke({"items": [], "n": 0}, config)
    expected = {"items": list(range(10)), "n": 10}
    assert graph.get_state(config).values == memory.get_state(config).values == expected
    before = len(list(saver.list(config)))
    saver.prune(["t"], strategy="keep_latest")
    assert graph.get_state(config).values == expected
    assert 1 < len(list(saver.list(config))) < before  # the chain back to the snapshot stays
    put(saver, "plain")
    put(saver, "plain", step=1)
    saver.prune(["plain"])  # no delta channel: only the newest is kept
    assert len(list(saver.list({"configurable": {"thread_id": "plain"}}))) == 1


def test_retention_keeps_what_delta_channels_and_pending_writes_need(saver: LmdbSaver) -> None:
    """Regression (review): retention saw a thread's checkpoints and its writes records as two
    unrelated workflows. keep_last=2 emptied a DeltaChannel's value (its ancestors and their
    writes went), and keep_last=1 dropped the newest checkpoint's writes when the writes of a
    checkpoint still in flight had arrived first (async durability), so its tasks would run
    again after a crash."""
    graph = delta_graph(saver, steps=10, snapshot_frequency=4)
    config: Any = {"configurable": {"thread_id": "delta"}}
    graph.invoke({"items": [], "n": 0}, config)
    saver.store.gc(RetentionPolicy(keep_last=2))
    assert graph.get_state(config).values == {"items": list(range(10)), "n": 10}
    newest = put(saver, "t")
    saver.put_writes(generate_config("t", checkpoint_id=newest), [("x", "A")], "task-a")
    in_flight = str(uuid6(clock_seq=7))  # its checkpoint is not stored yet
    saver.put_writes(generate_config("t", checkpoint_id=in_flight), [("x", "B")], "task-b")
    saver.store.gc(RetentionPolicy(keep_last=1))
    found = saver.get_tuple(generate_config("t"))
    assert found is not None
    assert found.checkpoint["id"] == newest
    assert [write[:2] for write in found.pending_writes or []] == [("task-a", "x")]
    assert saver.store.verify().ok


def test_a_replayed_branch_keeps_its_delta_channel_value_through_gc(saver: LmdbSaver) -> None:
    """Retention keeps the newest checkpoints by seq; a branch replayed from an older
    checkpoint has ancestors older than the abandoned branch. LangGraph starts such a branch
    with a snapshot of the channel, so the newest checkpoints hold all it needs: gc must leave
    its value whole."""
    graph = delta_graph(saver, steps=14, snapshot_frequency=8)
    config: Any = {"configurable": {"thread_id": "branch"}}
    graph.invoke({"items": [], "n": 0}, config)
    older = next(s for s in graph.get_state_history(config) if s.values.get("n") == 11)
    graph.invoke(None, older.config)  # a new branch from n=11, beside the first one
    before = graph.get_state(config).values
    assert before == {"items": list(range(14)), "n": 14}
    assert saver.store.gc(RetentionPolicy(keep_last=1)).checkpoints_removed > 0
    assert graph.get_state(config).values == before


def test_a_damaged_fork_falls_back_to_its_parent_not_the_abandoned_branch(
    store_path: Path,
) -> None:
    """Regression (review): the fallback walked back by id, so a damaged update_state fork
    (C1 -> C3, made after C1 -> C2) resumed the abandoned C2, undoing the user's edit."""
    with LmdbSaver.from_path(store_path) as saver:
        first = put(saver, "t", step=1)
        put(saver, "t", first, step=2)  # C2, then abandoned
        fork = put(saver, "t", first, step=3)  # C3: a fork of C1
    record = raw_get(store_path, b"ckpt", record_key("t", fork))
    assert record is not None
    flip_record(store_path, record, len(record) - 2)
    with LmdbSaver.from_path(store_path) as saver:
        found = saver.get_tuple(generate_config("t"))
        assert found is not None
        assert found.checkpoint["id"] == first
        # Retention keeps the same one (it protected the abandoned C2, by id, and deleted C1),
        # with its pending writes.
        saver.put_writes(generate_config("t", checkpoint_id=first), [("x", 1)], "task")
        saver.store.gc(RetentionPolicy(keep_last=1))
        found = saver.get_tuple(generate_config("t"))
        assert found is not None
        assert found.checkpoint["id"] == first
        assert [write[:2] for write in found.pending_writes or []] == [("task", "x")]


def test_copies_and_deleted_runs_keep_what_retention_needs(saver: LmdbSaver) -> None:
    """Regression (review): copy_thread left the copy's entry without the retention fields,
    and delete_for_runs left them describing a deleted checkpoint; gc then emptied a
    DeltaChannel's value."""
    config: Any = {"configurable": {"thread_id": "src"}}
    delta_graph(saver, steps=10, snapshot_frequency=4).invoke({"items": [], "n": 0}, config)
    saver.copy_thread("src", "dst")
    first: Any = {"configurable": {"thread_id": "runs"}, "metadata": {"run_id": "run-1"}}
    delta_graph(saver, steps=5, snapshot_frequency=4).invoke({"items": [], "n": 0}, first)
    second: Any = {"configurable": {"thread_id": "runs"}, "metadata": {"run_id": "run-2"}}
    delta_graph(saver, steps=7, snapshot_frequency=4).invoke({"n": 5}, second)
    saver.delete_for_runs(["run-2"])
    saver.store.gc(RetentionPolicy(keep_last=1))
    graph = delta_graph(saver, steps=10, snapshot_frequency=4)
    for thread, expected in (("dst", list(range(10))), ("runs", list(range(5)))):
        values = graph.get_state({"configurable": {"thread_id": thread}}).values
        assert values["items"] == expected, thread


def test_deleting_a_thread_s_every_run_leaves_no_orphan_writes(saver: LmdbSaver) -> None:
    """Regression (review): writes of a checkpoint never stored outlived the thread's last
    checkpoint, in a workflow no saver method lists and retention keeps forever."""
    only = put(saver, "t", run_id="run-1")
    saver.put_writes(generate_config("t", checkpoint_id=only), [("x", 1)], "task")
    in_flight = str(uuid6(clock_seq=3))
    saver.put_writes(generate_config("t", checkpoint_id=in_flight), [("x", 2)], "task")
    saver.delete_for_runs(["run-1"])
    assert [info.workflow_id for info in saver.store.workflows()] == []


def test_prune_stops_at_a_damaged_ancestor_in_fallback_mode(store_path: Path) -> None:
    """Regression (review): a damaged ancestor in the DeltaChannel walk made prune raise and
    roll back every thread."""
    config: Any = {"configurable": {"thread_id": "t"}}
    with LmdbSaver.from_path(store_path) as saver:
        delta_graph(saver, steps=6, snapshot_frequency=100).invoke({"items": [], "n": 0}, config)
        put(saver, "other")
        put(saver, "other", step=1)
        newest = saver.get_tuple(config)
        assert newest is not None
        assert newest.parent_config is not None
        parent = newest.parent_config["configurable"]["checkpoint_id"]
    record = raw_get(store_path, b"ckpt", record_key("t", parent))
    assert record is not None
    flip_record(store_path, record, len(record) - 2)
    with LmdbSaver.from_path(store_path) as saver:
        saver.prune(["other", "t"])
        assert len(list(saver.list({"configurable": {"thread_id": "other"}}))) == 1


def test_prune_in_fallback_mode_drops_a_namespace_damaged_whole(store_path: Path) -> None:
    """Regression (review): one thread damaged whole made prune raise and roll back them all."""
    with LmdbSaver.from_path(store_path) as saver:
        put(saver, "good")
        put(saver, "good", step=1)
        damaged = put(saver, "bad")
    record = raw_get(store_path, b"ckpt", record_key("bad", damaged))
    assert record is not None
    flip_record(store_path, record, len(record) - 2)
    with LmdbSaver.from_path(store_path) as saver:
        saver.prune(["good", "bad"])  # fallback mode: what is damaged goes, with a warning
        assert len(list(saver.list({"configurable": {"thread_id": "good"}}))) == 1
        assert list(saver.list({"configurable": {"thread_id": "bad"}})) == []


@pytest.mark.parametrize("last", ["copy_thread", "writes_to_an_older_checkpoint"])
def test_recover_keeps_the_saver_s_last_commit_after_a_zeroed_meta_page(
    store_path: Path, last: str
) -> None:
    """Regression (review): recover judged records found only by the page scan new when their
    seq was above the workflow's last; the saver's writes to an older checkpoint, and
    copy_thread's copies (which kept their sources' creation times), were dropped as stale."""
    with LmdbSaver.from_path(store_path) as saver:
        ids = [put(saver, "t", step=n) for n in range(5)]
        saver.put_writes(generate_config("t", checkpoint_id=ids[4]), [("a", 1)], "task4")
        if last == "copy_thread":
            saver.copy_thread("t", "t2")
        else:
            saver.put_writes(generate_config("t", checkpoint_id=ids[2]), [("a", 2)], "task2")
    written = raw_items(store_path, b"ckpt")
    with DataFile(store_path) as data:
        newest = max(data.metas, key=lambda meta: meta.txnid)
    with open(store_path / "data.mdb", "r+b") as file:  # the last commit's meta page: unreadable
        file.seek(newest.offset + 16)
        file.write(b"\0\0\0\0")
    recover(store_path, store_path.parent / "recovered")
    assert raw_items(store_path.parent / "recovered", b"ckpt") == written


def test_checkpoint_ids_and_names(saver: LmdbSaver) -> None:
    checkpoint = generate_checkpoint()
    with pytest.raises(InvalidInputError):
        saver.put(generate_config("t\x1fx"), checkpoint, generate_metadata(), {})
    with pytest.raises(InvalidInputError):
        saver.put(generate_config("t"), {**checkpoint, "id": "not-a-uuid"}, {}, {})
    with pytest.raises(InvalidInputError):
        list(saver.list(generate_config("t"), before=generate_config("t", checkpoint_id="x")))
    assert saver.get_tuple(generate_config("t", checkpoint_id="not-a-uuid")) is None
    first = put(saver, "t")
    # The same id again replaces the checkpoint.
    saver.put(generate_config("t"), {**checkpoint, "id": first}, generate_metadata(step=5), {})
    assert [t.metadata["step"] for t in saver.list(generate_config("t"))] == [5]
    twin = first[:19] + ("0" if first[19] != "0" else "1") + first[20:]
    with pytest.raises(SequenceConflictError):
        saver.put(generate_config("t"), {**checkpoint, "id": twin}, {}, {})
    saver.put_writes(generate_config("t", checkpoint_id=first), [("a", 1)], "task")
    with pytest.raises(SequenceConflictError):
        saver.put_writes(generate_config("t", checkpoint_id=twin), [("a", 1)], "task")
    with pytest.raises(InvalidInputError):
        saver.prune(["t"], strategy="sometimes")
    with pytest.raises(InvalidInputError):
        LmdbSaver(saver.store, on_corruption="ignore")  # type: ignore[arg-type]
    assert saver.get_next_version(None, None) < saver.get_next_version("7.5", None)
    assert saver.get_next_version(3, None).startswith(f"{4:032}.")  # type: ignore[arg-type]


class Mood(enum.IntEnum):
    CALM = 1


def test_metadata_msgpack_cannot_carry_goes_through_serde(saver: LmdbSaver) -> None:
    put(saver, "t", mood=Mood.CALM)
    found = list(saver.list(generate_config("t"), filter={"mood": Mood.CALM}))
    assert len(found) == 1
    assert found[0].metadata["mood"] is Mood.CALM


def test_async_puts_from_many_tasks_share_commits(store_path: Path) -> None:
    async def main() -> int:
        async with LmdbSaver.from_path(store_path) as saver:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            running = asyncio.create_task(ticker())
            configs = [generate_config(f"t{n}") for n in range(16)]
            for _ in range(5):
                stored = await asyncio.gather(
                    *(
                        saver.aput(c, generate_checkpoint(), generate_metadata(), {})
                        for c in configs
                    )
                )
                configs = list(stored)
            running.cancel()
            tuples = [t async for t in saver.alist(None)]
            assert len(tuples) == 80
            return ticks

    assert asyncio.run(main()) > 0


# -- a killed run resumes ---------------------------------------------------------------------

KILLED_STEPS = 30


def _kill_after(store_path: Path, steps_seen: int) -> int:
    code = "import sys\nfrom tests.lg_graphs import run_loop\nrun_loop(sys.argv[1], 't', %d, 0.05)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code % KILLED_STEPS, str(store_path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    done = 0
    for line in proc.stdout:
        done = int(line)
        if done >= steps_seen:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return done


@pytest.mark.parametrize("steps_seen", [3, 11])
def test_a_graph_killed_mid_run_resumes_in_a_new_process(store_path: Path, steps_seen: int) -> None:
    done = _kill_after(store_path, steps_seen)
    assert done < KILLED_STEPS
    config: Any = {"configurable": {"thread_id": "t"}, "recursion_limit": KILLED_STEPS + 10}
    with LmdbSaver.from_path(store_path) as saver:
        graph = loop_graph(saver, steps=KILLED_STEPS)
        assert graph.get_state(config).values["count"] >= done - 1
        final = graph.invoke(None, config)
        assert saver.store.verify().ok
    # No step lost, none applied twice.
    assert final == {"count": KILLED_STEPS, "trail": list(range(1, KILLED_STEPS + 1))}
