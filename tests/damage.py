"""Real damage to real files, for the fault tests."""

from __future__ import annotations

from pathlib import Path

import lmdb


def flip_record(store_path: Path, record: bytes, offset: int, mask: int = 0x10) -> int:
    """Flip bits of ``record`` at ``offset`` in every copy of it inside data.mdb.

    Copy-on-write leaves stale copies of rewritten pages in the file; the live one is among
    them, and damaging the stale ones changes nothing a reader sees. Returns the copies found.
    """
    data_file = store_path / "data.mdb"
    data = bytearray(data_file.read_bytes())
    copies = 0
    position = data.find(record)
    while position >= 0:
        data[position + offset] ^= mask
        copies += 1
        position = data.find(record, position + 1)
    assert copies, "record not found in data.mdb"
    data_file.write_bytes(bytes(data))
    return copies


def raw_env(store_path: Path) -> lmdb.Environment:
    """The store's LMDB environment, opened directly (close it before opening the store)."""
    return lmdb.open(str(store_path), max_dbs=8)


def raw_get(store_path: Path, db: bytes, key: bytes) -> bytes | None:
    env = raw_env(store_path)
    with env.begin() as txn:
        value = txn.get(key, db=env.open_db(db, txn=txn))
    env.close()
    return None if value is None else bytes(value)


def raw_put(store_path: Path, db: bytes, key: bytes, value: bytes) -> None:
    env = raw_env(store_path)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db, txn=txn))
    env.close()


def raw_delete(store_path: Path, db: bytes, key: bytes) -> None:
    env = raw_env(store_path)
    with env.begin(write=True) as txn:
        txn.delete(key, db=env.open_db(db, txn=txn))
    env.close()


def raw_items(store_path: Path, db: bytes) -> dict[bytes, bytes]:
    env = raw_env(store_path)
    with env.begin() as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor(env.open_db(db, txn=txn))}
    env.close()
    return items
