"""Record format 2 under damage: verify, repair, recover, the 1 -> 2 upgrade, export and import.

Damage is done to the file for real (bytes flipped inside ``data.mdb``) or to the tables with
raw py-lmdb (a chunk or a count removed, a count changed, a stray chunk added).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import zoneinfo
from collections.abc import Container
from pathlib import Path
from typing import Any

import lmdb
import pytest
from typer.testing import CliRunner

from lmdbstate import (
    CheckpointStore,
    RetentionPolicy,
    chunking,
    codec,
    copy_store,
    export_jsonl,
    import_jsonl,
    recover,
)
from lmdbstate.chunking import decode_node, digest_of
from lmdbstate.chunkstore import (
    FLAG_NODE,
    FLAG_ZSTD,
    MAGIC,
    MAX_REFS,
    VERSION,
    refs_of,
    with_refs,
)
from lmdbstate.codec import ListRef
from lmdbstate.errors import (
    CodecError,
    ConfigError,
    IntegrityError,
    StoreError,
    UnsupportedFormatError,
    WorkflowNotFoundError,
)
from lmdbstate.keys import checkpoint_key, encode_workflow_id
from lmdbstate.records import HEADER_SIZE, chunk_refs, is_chunked

from .damage import flip_record, raw_delete, raw_env, raw_get, raw_items, raw_put
from .test_cli import invoke

WORKFLOWS = ("chat-0", "chat-1", "chat-2")
STEPS = 40


def message(workflow_id: str, n: int) -> dict[str, Any]:
    return {"role": "user" if n % 2 else "assistant", "content": f"{workflow_id} says {n}. " * 15}


def grow(store: CheckpointStore, steps: int = STEPS) -> dict[tuple[str, int], Any]:
    """Each workflow's history grows by one message per put; returns every state by seq."""
    written: dict[tuple[str, int], Any] = {}
    for step in range(steps):
        for workflow_id in WORKFLOWS:
            state = {
                "messages": [message(workflow_id, n) for n in range(step + 1)],
                "turn": step,
            }
            written[workflow_id, store.put(workflow_id, state, step=step).seq] = state
    return written


@pytest.fixture
def grown(tmp_path: Path) -> tuple[Path, dict[tuple[str, int], Any]]:
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        written = grow(store)
        assert store.verify(deep=True).ok
    return path, written


def damaged_pairs(report: Any) -> set[tuple[str | None, int | None]]:
    return {(d.workflow_id, d.seq) for d in report.damaged}


def assert_read_back(
    store: CheckpointStore,
    written: dict[tuple[str, int], Any],
    *,
    but: Container[tuple[str, int]] = (),
) -> None:
    """Every checkpoint of ``written`` but those of ``but`` reads back as it was put."""
    for (workflow_id, seq), state in written.items():
        if (workflow_id, seq) not in but:
            assert store.get(workflow_id, seq).state == state


def test_a_grown_store_is_chunked_and_verifies_clean(
    grown: tuple[Path, dict[tuple[str, int], Any]],
) -> None:
    path, written = grown
    records = raw_items(path, b"ckpt")
    assert sum(is_chunked(record) for record in records.values()) > len(records) // 2
    with CheckpointStore(path) as store:
        report = store.verify()
        assert report.ok, report
        assert report.chunks > STEPS * len(WORKFLOWS)  # one per message, and the nodes
        assert report.chunk_problems == ()
        for (workflow_id, seq), state in written.items():
            ckpt = store.get(workflow_id, seq)
            assert ckpt.state == state
            assert ckpt.record_format == (2 if is_chunked(records[key(workflow_id, seq)]) else 1)


def key(workflow_id: str, seq: int) -> bytes:
    return checkpoint_key(encode_workflow_id(workflow_id), seq)


def test_a_flipped_chunk_is_reported_for_exactly_the_checkpoints_that_use_it(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    damaged_message = message("chat-0", 20)
    payload = codec.encode(damaged_message)
    assert flip_record(path, payload, len(payload) // 2) >= 1
    users = {pair for pair, state in written.items() if damaged_message in state["messages"]}
    assert users == {("chat-0", seq) for seq in range(21, STEPS + 1)}
    pristine = tmp_path / "before-repair"
    shutil.copytree(path, pristine)

    with CheckpointStore(path) as store:
        report = store.verify()
        assert damaged_pairs(report) == users
        assert all(digest_of(payload).hex() in d.reason for d in report.damaged)
        assert report.chunk_problems == ()  # the counts are right: a chunk is damaged
        with pytest.raises(Exception, match="digest mismatch"):
            store.get("chat-0", STEPS)
        assert store.latest("chat-0", skip_damaged=True).seq == 20  # type: ignore[union-attr]
        assert_read_back(store, written, but=users)

        repaired = store.repair(backup_dir=tmp_path / "backup")
        assert {(d.workflow_id, d.seq) for d in repaired.removed} == users
        assert repaired.chunks_removed >= 1  # the damaged chunk, referenced by nothing now
        after = store.verify(deep=True)
        assert after.ok, after
        assert_read_back(store, written, but=users)
    assert digest_of(payload) not in raw_items(path, b"chunk")

    report = recover(pristine, tmp_path / "recovered")
    assert damaged_pairs(report) == users
    assert report.recovered == len(written) - len(users)
    with CheckpointStore(tmp_path / "recovered") as store:
        assert store.verify(deep=True).ok
        assert_read_back(store, written, but=users)


def test_a_missing_node_damages_the_checkpoints_whose_lists_reach_it(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    newest = raw_get(path, b"ckpt", key("chat-1", STEPS))
    assert newest is not None
    assert is_chunked(newest)
    (node,) = chunk_refs(newest[HEADER_SIZE:])
    previous, items = decode_node((raw_get(path, b"chunk", node) or b"")[8:])
    assert previous is not None
    assert len(items) == 1
    raw_delete(path, b"chunk", node)  # no later checkpoint extends the newest one's node
    with CheckpointStore(path) as store:
        report = store.verify()
        assert damaged_pairs(report) == {("chat-1", STEPS)}
        assert "missing" in report.damaged[0].reason
        # What the lost node referenced is reached once less: its new message by nothing.
        assert sorted(report.chunk_problems) == sorted(
            [
                f"chunk {items[0].hex()} is stored but nothing references it",
                f"chunk {previous.hex()} has reference count 2; the references say 1",
            ]
        )
        store.repair(backup_dir=tmp_path / "backup")
        assert store.verify().ok
        assert store.latest("chat-1").seq == STEPS - 1  # type: ignore[union-attr]
        assert store.latest("chat-1").state == written["chat-1", STEPS - 1]  # type: ignore[union-attr]


def test_wrong_counts_and_stray_chunks_are_found_and_rebuilt(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    chunks = raw_items(path, b"chunk")
    first, second = sorted(chunks)[:2]
    stray = codec.encode("nobody refers to me")
    env = raw_env(path)
    with env.begin(write=True) as txn:
        chunk = env.open_db(b"chunk", txn=txn)
        txn.put(first, with_refs(chunks[first], refs_of(chunks[first]) + 1), db=chunk)
        txn.put(second, with_refs(chunks[second], 0), db=chunk)
        txn.put(
            digest_of(stray), MAGIC + bytes((VERSION, 0)) + bytes((0, 0, 0, 1)) + stray, db=chunk
        )
    env.close()
    with CheckpointStore(path) as store:
        report = store.verify()
        assert not report.ok
        assert report.damaged == ()
        assert sorted(report.chunk_problems) == sorted(
            [
                f"chunk {first.hex()} has reference count {refs_of(chunks[first]) + 1}; "
                f"the references say {refs_of(chunks[first])}",
                f"chunk {second.hex()} has reference count 0; "
                f"the references say {refs_of(chunks[second])}",
                f"chunk {digest_of(stray).hex()} is stored but nothing references it",
            ]
        )
        repaired = store.repair(backup_dir=tmp_path / "backup")
        assert repaired.chunk_counts_fixed == 2
        assert repaired.chunks_removed == 1
        assert store.verify().ok
        assert_read_back(store, written)
    assert raw_items(path, b"chunk") == chunks


def test_a_node_flag_on_every_node_and_none_on_elements(
    grown: tuple[Path, dict[tuple[str, int], Any]],
) -> None:
    path, _ = grown
    chunks = raw_items(path, b"chunk")
    nodes = {digest for digest, value in chunks.items() if value[3] & FLAG_NODE}
    referenced_by_records = {
        ref
        for record in raw_items(path, b"ckpt").values()
        if is_chunked(record)
        for ref in chunk_refs(record[HEADER_SIZE:])
    }
    assert referenced_by_records <= nodes
    assert len(chunks) - len(nodes) == STEPS * len(WORKFLOWS)  # one element per message


# -- format 1 -> 2 ----------------------------------------------------------------------------


def make_format1(path: Path) -> None:
    """Turn a store written with ``dedup=False`` into what lmdbstate format 1 left on disk."""
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        assert txn.stat(env.open_db(b"chunk", txn=txn))["entries"] == 0
        txn.drop(env.open_db(b"chunk", txn=txn), delete=True)
        txn.put(b"format", codec.encode(1), db=env.open_db(b"meta", txn=txn))
    env.close()


def test_a_format1_store_upgrades_to_chunks_and_keeps_every_state(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, dedup=False) as store:
        written = grow(store)
        whole_bytes = sum(info.bytes for info in store.workflows())
    make_format1(path)
    assert not any(is_chunked(record) for record in raw_items(path, b"ckpt").values())

    with CheckpointStore(path, readonly=True) as store:  # read through an upgraded copy
        assert store.stats().format_version == 2
        assert store.get("chat-2", STEPS).state == written["chat-2", STEPS]
    assert codec.decode(raw_get(path, b"meta", b"format") or b"") == 1  # not written

    with CheckpointStore(path) as store:
        (backup,) = [p for p in tmp_path.iterdir() if p.name.startswith("store.format1-backup-")]
        assert codec.decode(raw_get(backup, b"meta", b"format") or b"") == 1
        assert store.verify(deep=True).ok
        assert_read_back(store, written)
        chunked_bytes = sum(info.bytes for info in store.workflows())
        stats = store.stats()
        assert stats.format_version == 2
    records = raw_items(path, b"ckpt")
    assert sum(is_chunked(record) for record in records.values()) > len(records) // 2
    # The records shrink to their node references; the messages are kept once.
    assert chunked_bytes < whole_bytes / 5
    stored = raw_items(path, b"chunk")
    assert len(stored) - sum(v[3] & FLAG_NODE for v in stored.values()) == STEPS * len(WORKFLOWS)


# -- export and import ------------------------------------------------------------------------


def test_exports_are_self_contained_and_import_anywhere_with_their_digests(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    export = tmp_path / "export.jsonl"
    with CheckpointStore(path) as store:
        assert export_jsonl(store, export).checkpoints == len(written)
    assert "ListRef" not in export.read_text()
    assert "says 39" in export.read_text()

    for dedup in (True, False):
        with CheckpointStore(tmp_path / f"imported-{dedup}", dedup=dedup) as store:
            report = import_jsonl(store, export)
            assert report.ok, report
            assert report.imported == len(written)
            again = import_jsonl(store, export)
            assert (again.imported, again.already_present) == (0, len(written))
            assert again.ok
            assert_read_back(store, written)
            assert store.verify(deep=True).ok
            formats = {store.get(w, s).record_format for w, s in written}
            assert formats == ({1, 2} if dedup else {1})


# -- the CLI ----------------------------------------------------------------------------------


def test_the_cli_shows_chunked_checkpoints_and_reports_and_repairs_counts(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    cli = CliRunner(env={"COLUMNS": "120", "LMDBSTATE_PATH": None, "LMDBSTATE_DEBUG": None})
    shown = json.loads(invoke(cli, "show", "chat-0", "--json", store=path).stdout)
    assert shown["record_format"] == 2
    assert shown["state"] == written["chat-0", STEPS]
    assert "2 (lists in chunks)" in invoke(cli, "show", "chat-0", store=path).stdout

    chunks = raw_items(path, b"chunk")
    first = sorted(chunks)[0]
    env = raw_env(path)
    with env.begin(write=True) as txn:
        txn.put(first, with_refs(chunks[first], 99), db=env.open_db(b"chunk", txn=txn))
    env.close()
    result = invoke(cli, "verify", "--json", store=path)
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["ok"] is False
    expected = refs_of(chunks[first])
    assert report["chunk_problems"] == [
        f"chunk {first.hex()} has reference count 99; the references say {expected}"
    ]
    assert "1 chunk problems" in invoke(cli, "verify", store=path).stdout
    repaired = invoke(cli, "repair", "--backup", str(tmp_path / "backup"), store=path)
    assert repaired.exit_code == 0, repaired.output
    assert "rewrote 1 chunk reference counts" in repaired.stdout
    assert invoke(cli, "verify", store=path).exit_code == 0
    assert raw_items(path, b"chunk") == chunks


# -- zstd -------------------------------------------------------------------------------------


def test_zstd_chunks_are_flagged_smaller_and_read_back(tmp_path: Path) -> None:
    sizes = {}
    for compression in (None, "zstd"):
        path = tmp_path / str(compression)
        with CheckpointStore(path, compression=compression) as store:
            written = grow(store)
        with CheckpointStore(path, chunk_cache=0) as store:  # every chunk from the table
            assert store.verify(deep=True).ok
            assert_read_back(store, written)
        chunks = raw_items(path, b"chunk")
        flagged = [value for value in chunks.values() if value[3] & FLAG_ZSTD]
        assert (len(flagged) == STEPS * len(WORKFLOWS)) is (compression == "zstd")
        assert not any(value[3] & FLAG_NODE for value in flagged)  # nodes are digests
        sizes[compression] = sum(map(len, chunks.values()))
        report = recover(path, tmp_path / f"recovered-{compression}")
        assert report.recovered == len(written)
        assert report.damaged == ()
    assert sizes["zstd"] < sizes[None] * 0.6  # the messages repeat their words


def test_zstd_chunks_without_zstandard_are_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, compression="zstd") as store:
        grow(store, steps=12)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now fails
    with pytest.raises(ConfigError, match="zstandard") as refused:
        CheckpointStore(path, compression="zstd")
    assert "lmdbstate[zstd]" in refused.value.hint
    with CheckpointStore(path, readonly=True) as store:
        with pytest.raises(UnsupportedFormatError, match="compressed with zstd") as caught:
            store.latest("chat-0")
        assert "lmdbstate[zstd]" in caught.value.hint
        assert store.get("chat-0", 1).state["turn"] == 0  # small states are stored whole


def test_a_flipped_byte_in_a_zstd_chunk_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, compression="zstd") as store:
        grow(store, steps=30)
    damaged_message = message("chat-2", 25)
    stored = raw_get(path, b"chunk", digest_of(codec.encode(damaged_message)))
    assert stored is not None
    assert stored[3] & FLAG_ZSTD
    flip_record(path, stored, len(stored) // 2)
    with CheckpointStore(path, chunk_cache=0) as store:
        report = store.verify()
        assert damaged_pairs(report) == {("chat-2", seq) for seq in range(26, 31)}


def test_compaction_and_copies_keep_chunks_and_counts(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    with CheckpointStore(path) as store:
        store.gc(RetentionPolicy(keep_last=5))  # frees most chunks' references, some chunks
        kept = {pair: state for pair, state in written.items() if pair[1] > STEPS - 5}
        store.compact()
        assert store.verify(deep=True).ok
    copy_store(path, tmp_path / "copy")
    for where in (path, tmp_path / "copy"):
        with CheckpointStore(where, chunk_cache=0) as store:
            assert store.verify(deep=True).ok
            for (workflow_id, seq), state in kept.items():
                assert store.get(workflow_id, seq).state == state
    assert raw_items(tmp_path / "copy", b"chunk") == raw_items(path, b"chunk")


# -- regressions found by review --------------------------------------------------------------


def test_an_item_holding_a_nodes_bytes_is_not_taken_for_the_node(tmp_path: Path) -> None:
    items = [f"item {n} " + "x" * 300 for n in range(8)]
    lookalike = chunking.encode_node(None, [digest_of(codec.encode(item)) for item in items])
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        # An item whose bytes are those of the node of `items` (as a list's element, packed).
        store.put("a", {"l": [codec.decode(lookalike), *range(8)], "pad": "p" * 3000})
        store.put("b", {"l": items})
    with CheckpointStore(path, chunk_cache=0) as store:
        assert store.get("b", 1).state == {"l": items}
        assert store.verify().ok


def test_a_list_ref_in_a_users_state_is_refused(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "store") as store:
        victim = store.put("victim", {"l": [f"line {n} " * 40 for n in range(10)]})
        (node,) = chunk_refs(raw_record(store, "victim", victim.seq)[HEADER_SIZE:])
        with pytest.raises(CodecError, match="ListRef"):
            store.put("other", {"l": list(range(8)), "ref": ListRef(node)})
        with pytest.raises(WorkflowNotFoundError):
            store.workflow("other")
        assert store.verify().ok


def raw_record(store: CheckpointStore, workflow_id: str, seq: int) -> bytes:
    record = store._read_txn(lambda txn: txn.get("ckpt", key(workflow_id, seq)))
    assert record is not None
    return bytes(record)


def test_a_body_this_host_cannot_decode_keeps_its_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    when = dt.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    state = {"when": when, "log": [f"line {n} " * 40 for n in range(10)]}
    with CheckpointStore(path) as store:
        store.put("w", state)

    def missing_zone(data: bytes) -> object:
        raise zoneinfo.ZoneInfoNotFoundError("No time zone found with key Europe/Paris")

    with monkeypatch.context() as host:  # a host without that zone: the body does not decode
        host.setitem(codec._DECODERS, codec.EXT_DATETIME, missing_zone)
        with CheckpointStore(path, chunk_cache=0) as store:
            report = store.verify()
            assert (report.damaged, report.chunk_problems) == ((), ())
            repaired = store.repair(backup_dir=tmp_path / "backup")
            assert (repaired.removed, repaired.chunks_removed) == ((), 0)
    with CheckpointStore(path, chunk_cache=0) as store:
        assert store.get("w", 1).state == state


def test_a_grouped_put_refused_for_a_full_count_writes_nothing(tmp_path: Path) -> None:
    items = [f"item {n} " * 40 for n in range(8)]
    with CheckpointStore(tmp_path / "store", durability="group") as store:
        store.put("a", {"l": items})
        shared = digest_of(codec.encode(items[0]))

        def saturate(txn: Any) -> tuple[None, int]:
            txn.put("chunk", shared, with_refs(txn.get("chunk", shared), MAX_REFS))
            return None, 0

        store._write_txn(saturate, group=False)
        with pytest.raises(StoreError, match="referenced"):
            store.put("b", {"l": [*items, "new"]})
        assert [info.workflow_id for info in store.workflows()] == ["a"]


def test_a_cleared_node_flag_is_damage_and_repair_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "store"
    state = {"log": [f"line {n} " * 40 for n in range(10)]}
    with CheckpointStore(path) as store:
        store.put("w", state)
        store.put("kept", {"log": [f"other {n} " * 40 for n in range(10)]})
    newest = raw_get(path, b"ckpt", key("w", 1))
    assert newest is not None
    (node,) = chunk_refs(newest[HEADER_SIZE:])
    value = raw_get(path, b"chunk", node)
    assert value is not None
    raw_put(path, b"chunk", node, value[:3] + bytes((value[3] & ~FLAG_NODE,)) + value[4:])
    with CheckpointStore(path, chunk_cache=0) as store:
        report = store.verify()
        assert damaged_pairs(report) == {("w", 1)}
        assert "digest mismatch" in report.damaged[0].reason
        store.repair(backup_dir=tmp_path / "backup")
        assert store.verify().ok
        assert store.get("kept", 1).state["log"][0].startswith("other 0")


def test_a_zstd_frame_claiming_a_huge_size_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, compression="zstd") as store:
        store.put("w", {"log": [f"line {n} " * 40 for n in range(10)]})
    chunks = raw_items(path, b"chunk")
    digest, value = next((d, v) for d, v in chunks.items() if v[3] & FLAG_ZSTD)
    frame = value[8:]
    claims_16_tib = frame[:4] + bytes((0b11100000,)) + (1 << 44).to_bytes(8, "little") + frame[5:]
    raw_put(path, b"chunk", digest, value[:8] + claims_16_tib)
    with CheckpointStore(path, chunk_cache=0) as store:
        assert damaged_pairs(store.verify()) == {("w", 1)}
        with pytest.raises(IntegrityError, match="does not decompress|digest mismatch"):
            store.get("w", 1)


def test_a_queued_put_splits_what_was_queued_whatever_the_state_became(tmp_path: Path) -> None:
    log = [f"line {n} " * 40 for n in range(9)]
    with CheckpointStore(tmp_path / "store") as store:
        store.put("w", {"log": list(log)})
        store.delete("w")  # the store still knows w's node: the next put finds it gone
        state: dict[str, Any] = {"log": [*log, "more"]}
        with store.batch() as batch:
            batch.put("w", state)
            state["note"] = "added after the put was queued"
            state["log"] = "no longer a list"
        assert store.get("w", 1).state == {"log": [*log, "more"]}
        assert store.verify().ok


def test_a_put_holding_a_damaged_chunks_bytes_heals_it(
    grown: tuple[Path, dict[tuple[str, int], Any]],
) -> None:
    path, written = grown
    payload = codec.encode(message("chat-0", 20))
    flip_record(path, payload, len(payload) // 2)
    with CheckpointStore(path, chunk_cache=0) as store:  # a new process: it splits flat
        assert len(store.verify().damaged) == 20
        store.put("chat-0", written["chat-0", STEPS])  # holds message 20, whole
        assert store.verify().ok
        assert_read_back(store, written)


def test_deleting_a_damaged_chunked_record_releases_nothing_it_may_not_hold(
    grown: tuple[Path, dict[tuple[str, int], Any]], tmp_path: Path
) -> None:
    path, written = grown
    record = raw_get(path, b"ckpt", key("chat-1", STEPS))
    assert record is not None
    flip_record(path, record, len(record) - 3)  # in the body: its references are not trusted
    with CheckpointStore(path) as store:
        store.delete("chat-1", seq=STEPS)
        report = store.verify()
        assert report.damaged == ()
        assert report.chunk_problems  # what it held is counted once too many, not freed
        store.repair(backup_dir=tmp_path / "backup")
        assert store.verify().ok
        assert_read_back(store, written, but={("chat-1", STEPS)})
