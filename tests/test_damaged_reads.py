"""Bytes flipped inside data.mdb itself: every read of the damaged record says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmdbstate import CheckpointStore, IntegrityError

from .damage import flip_record


def write_store(path: Path, large: bool) -> dict[int, bytes]:
    """Three checkpoints of one workflow; returns each record's bytes by seq."""
    pad = "p" * (20_000 if large else 100)  # 20 KB spills onto overflow pages
    with CheckpointStore(path) as store:
        for n in range(3):
            store.put("wf", {"marker": f"record-{n}", "pad": pad}, step=n)
        store.put("other", {"fine": True})
        return {
            seq: bytes(
                store._backend.read(
                    lambda txn, seq=seq: txn.get("ckpt", b"wf\x00" + seq.to_bytes(8, "big"))
                )
            )
            for seq in (1, 2, 3)
        }


@pytest.mark.parametrize("large", [False, True], ids=["leaf", "overflow"])
@pytest.mark.parametrize("offset", [0, 2, 3, 5, 13, 21, 24, 40, -1], ids=lambda o: f"byte{o}")
def test_a_flipped_byte_in_a_record_fails_its_reads(
    tmp_path: Path, large: bool, offset: int
) -> None:
    path = tmp_path / "store"
    records = write_store(path, large)
    flip_record(path, records[2], offset if offset >= 0 else len(records[2]) + offset)
    with CheckpointStore(path, readonly=True) as store:
        with pytest.raises(IntegrityError) as caught:
            store.get("wf", 2)
        assert (caught.value.workflow_id, caught.value.seq) == ("wf", 2)
        with pytest.raises(IntegrityError):
            list(store.history("wf"))
        # Everything else reads as written.
        assert store.get("wf", 1).state["marker"] == "record-0"
        assert store.get("wf", 3).state["marker"] == "record-2"
        latest = store.latest("wf")
        assert latest is not None
        assert latest.seq == 3
        assert store.latest("other") is not None


def test_latest_falls_back_past_a_damaged_newest_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store"
    records = write_store(path, large=False)
    flip_record(path, records[3], 30)
    with CheckpointStore(path, readonly=True) as store:
        latest = store.latest("wf")
        assert latest is not None
        assert (latest.seq, latest.state["marker"], latest.damaged_newer) == (2, "record-1", (3,))
        assert "checkpoints 3 are damaged; falling back to checkpoint 2" in caplog.text
        with pytest.raises(IntegrityError) as caught:
            store.latest("wf", skip_damaged=False)
        assert caught.value.seq == 3
        intact = store.latest("other")
        assert intact is not None
        assert intact.damaged_newer == ()


def test_latest_raises_when_every_checkpoint_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "store"
    records = write_store(path, large=False)
    for seq in (1, 2, 3):
        flip_record(path, records[seq], 30)
    with CheckpointStore(path, readonly=True) as store, pytest.raises(IntegrityError) as caught:
        store.latest("wf")
    assert caught.value.seq == 3


def test_history_hands_damaged_records_to_on_damaged_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "store"
    records = write_store(path, large=False)
    flip_record(path, records[2], len(records[2]) - 1)
    with CheckpointStore(path, readonly=True) as store:
        with pytest.raises(IntegrityError):
            list(store.history("wf"))
        damaged: list[IntegrityError] = []
        assert [info.seq for info in store.history("wf", on_damaged=damaged.append)] == [1, 3]
        assert [(exc.workflow_id, exc.seq) for exc in damaged] == [("wf", 2)]
        newest = store.history("wf", reverse=True, limit=2, on_damaged=damaged.append)
        assert [info.seq for info in newest] == [3]  # the limit counts the damaged record too
