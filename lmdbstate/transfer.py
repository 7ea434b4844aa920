"""Copy a whole store into a new one, on the same backend or across (LMDB <-> PostgreSQL).

The copy moves every table's keys and values as they are, so records, digests, indexes and
the store's own ``meta`` entries are byte-identical on both sides. It reads the source in one
read transaction (one snapshot, while writers go on) and writes the destination in chunks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .backends import open_backend
from .env import EnvOptions, LmdbBackend, make_new_directory, restrict_copy
from .errors import ConfigError, StoreError
from .kv import CKPT, TABLES, WF, Backend, ReadTxn, copy_tables
from .locations import is_url, shown_location
from .memory import MEMORY_PATH
from .models import CopyReport
from .store import CheckpointStore

Progress = Callable[[int, int], None]
"""Called with (items copied so far, items in all) after each chunk."""


def copy_store(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy the store at ``source`` into a new store at ``dest``, byte for byte.

    Either may be an LMDB directory or a ``postgresql://`` URL. A source of an older format is
    copied upgraded (as a read-only open reads it). A destination that fails part-way is left
    as it is, to be dropped: it was new, so nothing else was in it.

    Args:
        source: the store to copy; opened read-only, never written.
        dest: a new or empty directory, or a URL whose schema holds no store yet.
        progress: see ``Progress``.

    Raises:
        StoreNotFoundError: no store at ``source``.
        StoreError: ``dest`` is the source, or already holds something.
        ConfigError: ``":memory:"`` on either side (it would be gone on return).
    """
    source_location, dest_location = os.fspath(source), os.fspath(dest)
    if MEMORY_PATH in (source_location, dest_location):
        raise ConfigError("copy needs stores that outlive it, not ':memory:'")
    started = time.perf_counter()
    with CheckpointStore(source_location, readonly=True) as store:
        if _resolved(store.path) == _resolved(dest_location):
            raise StoreError(f"{dest_location} is the source itself", hint="copy into a new store")
        target = _new_store(dest_location)
        try:
            copied = store._read_txn(_copy_snapshot, target, progress)
            location = target.location
        finally:
            target.close()
        if not is_url(dest_location):  # a copy keeps a file store's access, or its owner's alone
            restrict_copy(location, store.path if isinstance(store._backend, LmdbBackend) else None)
    return CopyReport(
        source=store.path,
        dest=location,
        workflows=copied[WF],
        checkpoints=copied[CKPT],
        items=sum(copied.values()),
        seconds=time.perf_counter() - started,
    )


def _resolved(location: str) -> str:
    """What tells one store from another.

    A URL normalised and without its password (which names no store); a directory resolved.
    """
    if is_url(location):
        return shown_location(location).replace(":***@", "@", 1)
    return os.path.realpath(location)


def _new_store(location: str) -> Backend:
    """The destination's backend, checked to hold nothing yet."""
    if not is_url(location):
        make_new_directory(location)
    backend = open_backend(location, EnvOptions())
    try:
        if any(backend.read(lambda txn: [txn.count(table) for table in TABLES])):
            raise StoreError(
                f"{backend.location} already holds a store",
                hint="copy into a new directory, or a schema that holds no store (?schema=...)",
            )
    except BaseException:
        backend.close()
        raise
    return backend


def _copy_snapshot(txn: ReadTxn, target: Backend, progress: Progress | None) -> dict[str, int]:
    total = sum(txn.count(table) for table in TABLES)
    return copy_tables(
        txn, target, None if progress is None else lambda done: progress(done, total)
    )
