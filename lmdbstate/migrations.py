"""Store-format and state-schema migrations: the registries, and running them.

Two versions move independently (DESIGN section 8). The **store format** (the ``format`` entry of
``meta``) says how the tables are laid out; an older store is upgraded by the functions
registered with ``@store_migration(from_version=N)``, each taking the store from format N to
N + 1 inside one write transaction that also records the step in ``meta`` (``format`` and the
``migrations`` history), so that a step either happens whole or not at all and an interrupted
upgrade starts again from the last step that committed. A backup copy is made first.

The **state schema** (the ``schema`` of each record) is the caller's: functions registered with
``@state_migration(name, from_version=N)`` turn a state of schema N of the workflows named
``name`` into schema N + 1. The current schema of a name is one above the highest version it
has a migration from. Reads with ``migrate=True`` apply the chain; ``migrate_states`` writes the
upgraded states back as new checkpoints.

Registrations are per process: import the module that registers them before opening the store
(the CLI takes ``--import MODULE``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import codec
from .errors import (
    ConfigError,
    LmdbStateError,
    MigrationError,
    UnsupportedFormatError,
)
from .kv import CKPT, META, TABLES, Backend, ReadTxn, WriteTxn, put_items, table_chunks
from .locations import path_beside
from .memory import MemoryBackend
from .models import StoreMigrationReport, StoreStep

log = logging.getLogger("lmdbstate")

STORE_FORMAT = 2
"""The store format this version writes and reads (the ``format`` entry of ``meta``)."""

FORMAT = b"format"
HISTORY = b"migrations"
"""The ``meta`` entry listing the upgrades a store went through: from, to, at_ns, by."""
LAST_WRITER = b"last_writer"
"""The ``meta`` entry naming the lmdbstate version that last opened the store for writing."""

StoreUpgrade = Callable[[WriteTxn], None]
StateUpgrade = Callable[[Any], Any]
F = TypeVar("F", bound=Callable[..., Any])
_store_upgrades: dict[int, StoreUpgrade] = {}
_state_upgrades: dict[str, dict[int, StateUpgrade]] = {}


# -- registries -------------------------------------------------------------------------------


def store_migration(*, from_version: int) -> Callable[[F], F]:
    """Register ``fn(txn)`` as the upgrade of the store from format ``from_version`` to the next.

    The function sees and changes every table through ``txn`` (``kv.WriteTxn``); it runs inside
    the write transaction that also moves ``format`` on, and may be run again after a map
    resize, so it must have no effect outside the transaction.

    Raises:
        ConfigError: ``from_version`` is not an int >= 0, or already has a migration.
    """
    _check_version("from_version", from_version, 0)

    def register(fn: F) -> F:
        if from_version in _store_upgrades:
            raise ConfigError(f"store format {from_version} already has a migration")
        _store_upgrades[from_version] = fn
        return fn

    return register


def state_migration(name: str, *, from_version: int) -> Callable[[F], F]:
    """Register ``fn(state) -> state`` as the upgrade of ``name``'s states from ``from_version``.

    ``name`` is the workflow's name: the ``Workflow`` name the reference executor records, or
    else the workflow id. The function gets a state of schema ``from_version`` and returns it in
    schema ``from_version + 1``; it may change the state it gets.

    Raises:
        ConfigError: a bad name or version, or ``name`` already has a migration from it.
    """
    if type(name) is not str or not name:
        raise ConfigError(f"invalid workflow name {name!r}: expected a non-empty str")
    _check_version("from_version", from_version, 1)

    def register(fn: F) -> F:
        chain = _state_upgrades.setdefault(name, {})
        if from_version in chain:
            raise ConfigError(
                f"workflow {name!r} already has a state migration from {from_version}"
            )
        chain[from_version] = fn
        return fn

    return register


def _check_version(label: str, value: object, lowest: int) -> None:
    if type(value) is not int or value < lowest:
        raise ConfigError(f"invalid {label} {value!r}: expected an int >= {lowest}")


# -- state schemas ----------------------------------------------------------------------------


def current_schema(name: str) -> int | None:
    """The schema ``name``'s states are upgraded to; None when it has no migration."""
    chain = _state_upgrades.get(name)
    return None if not chain else max(chain) + 1


def upgrade_state(
    name: str, state: object, schema: int, *, workflow_id: str, seq: int
) -> tuple[object, int]:
    """``state`` of ``schema`` upgraded to ``name``'s current schema; returns it and the schema.

    A state already current (or of a name without migrations) comes back as it is.

    Raises:
        MigrationError: a step of the chain is missing, or one raised; names the checkpoint.
    """
    target = current_schema(name)
    if target is None or schema >= target:
        return state, schema
    chain = _state_upgrades[name]
    for version in range(schema, target):
        upgrade = chain.get(version)
        if upgrade is None:
            raise MigrationError(
                f"checkpoint {seq} of workflow {workflow_id!r} holds schema {schema}, and "
                f"{name!r} has no state migration from {version} to {version + 1} "
                f"(its current schema is {target})",
                workflow_id=workflow_id, seq=seq, from_version=version, to_version=version + 1,
            )  # fmt: skip
        try:
            state = upgrade(state)
        except Exception as exc:
            raise MigrationError(
                f"checkpoint {seq} of workflow {workflow_id!r}: the state migration of {name!r} "
                f"from {version} to {version + 1} raised {type(exc).__name__}: {exc}",
                workflow_id=workflow_id, seq=seq, from_version=version, to_version=version + 1,
            ) from exc  # fmt: skip
    return state, target


# -- store formats ----------------------------------------------------------------------------


def read_format(txn: ReadTxn) -> int | None:
    """The store's format; None when ``meta`` has none (a new store)."""
    raw = txn.get(META, FORMAT)
    return None if raw is None else int(codec.decode(raw))


def store_steps(found: int, path: str) -> tuple[StoreStep, ...]:
    """The upgrades that take a store of format ``found`` to ``STORE_FORMAT``, in order.

    Raises:
        UnsupportedFormatError: ``found`` is newer than this version reads, or a step is
            missing from the registry.
    """
    if found > STORE_FORMAT:
        raise UnsupportedFormatError(
            f"store {path} has format {found}; this version of lmdbstate reads formats up to "
            f"{STORE_FORMAT}",
            path=path,
        )
    steps = []
    for version in range(found, STORE_FORMAT):
        upgrade = _store_upgrades.get(version)
        if upgrade is None:
            raise UnsupportedFormatError(
                f"store {path} has format {found} and no migration from format {version} to "
                f"{version + 1} is registered",
                path=path,
                hint="open it with a version of lmdbstate that still upgrades that format",
            )
        doc = (upgrade.__doc__ or "").strip().splitlines()
        steps.append(StoreStep(version, version + 1, upgrade.__name__, doc[0] if doc else ""))
    return tuple(steps)


def upgrade_store(
    backend: Backend, found: int, *, backup_dir: str | None, version: str
) -> StoreMigrationReport:
    """Back the store up into ``backup_dir`` (when given), then run each upgrade step.

    Each step runs in its own write transaction, which first checks that the store is still
    at the step's format (another process may have upgraded it meanwhile: the step is then
    skipped, and left out of the report) and records the step in ``meta`` as it moves
    ``format`` on. No backup is taken when another process upgraded the store first.

    Raises:
        UnsupportedFormatError: see ``store_steps``.
        MigrationError: a step raised; the steps before it stay done, it left nothing.
        StoreError: the backup or a write failed.
    """
    started = time.perf_counter()
    steps = store_steps(found, backend.location)
    backup = None
    if backup_dir is not None and steps and backend.read(read_format) == found:
        backend.copy_to(backup_dir)
        backup = backup_dir
        log.warning(
            "upgrading store %s from format %d to %d; backup at %s",
            backend.location, found, STORE_FORMAT, backup_dir,
        )  # fmt: skip
    if steps:
        backend.create_tables()  # the tables this format has that the store may lack
    done: list[StoreStep] = []
    try:
        for step in steps:
            if backend.write(_apply_step, step, _store_upgrades[step.from_version], version):
                done.append(step)
    except BaseException:
        if backup is not None and not done:
            # Nothing changed: the copy would only pile up, one per attempt, on every open.
            shutil.rmtree(backup, ignore_errors=True)
        raise
    return StoreMigrationReport(
        path=backend.location,
        from_version=found,
        to_version=STORE_FORMAT,
        steps=tuple(done),
        backup_path=backup,
        check=False,
        seconds=time.perf_counter() - started,
    )


def _apply_step(txn: WriteTxn, step: StoreStep, upgrade: StoreUpgrade, version: str) -> bool:
    """Run one step; False when the store is no longer at its format (another process ran it)."""
    if read_format(txn) != step.from_version:
        return False
    try:
        upgrade(txn)
    except LmdbStateError:
        raise
    except Exception as exc:
        raise MigrationError(
            f"the store migration from format {step.from_version} to {step.to_version} "
            f"({step.name}) raised {type(exc).__name__}: {exc}",
            from_version=step.from_version,
            to_version=step.to_version,
        ) from exc
    history = txn.get(META, HISTORY)
    done: list[Any] = [] if history is None else list(codec.decode(history))
    done.append(
        {"from": step.from_version, "to": step.to_version, "at_ns": time.time_ns(), "by": version}
    )
    txn.put(META, HISTORY, codec.encode(done))
    txn.put(META, FORMAT, codec.encode(step.to_version))
    return True


def upgraded_copy(backend: Backend, found: int) -> MemoryBackend:
    """A read-only in-memory copy of an older store, upgraded; the store is not written.

    Raises:
        UnsupportedFormatError: see ``store_steps``.
        MigrationError: a step raised.
    """
    steps = store_steps(found, backend.location)
    # One read transaction: the copy is one snapshot, whatever other processes commit meanwhile
    # (another may be upgrading the store this very moment).
    tables, copied = backend.read(_every_table)
    if copied != found:
        raise UnsupportedFormatError(
            f"store {backend.location} changed format while it was being read ({found} -> "
            f"{copied})",
            path=backend.location,
            hint="open it again: another process upgraded it",
        )
    copy = MemoryBackend()
    copy.location = backend.location
    for table, items in tables.items():
        copy.write(put_items, table, items)
    for step in steps:
        copy.write(_apply_step, step, _store_upgrades[step.from_version], "in memory")
    copy.readonly = True
    log.info(
        "store %s has format %d: read through an upgraded copy in memory (%d checkpoints)",
        backend.location, found, copy.read(lambda txn: txn.count(CKPT)),
    )  # fmt: skip
    return copy


def _every_table(txn: ReadTxn) -> tuple[dict[str, list[tuple[bytes, bytes]]], int | None]:
    tables: dict[str, list[tuple[bytes, bytes]]] = {}
    for table in TABLES:
        tables[table] = [item for chunk in table_chunks(txn, table) for item in chunk]
    return tables, read_format(txn)


def last_writer(txn: ReadTxn) -> str | None:
    """The lmdbstate version that last opened the store for writing; None when unknown."""
    raw = txn.get(META, LAST_WRITER)
    return None if raw is None else str(codec.decode(raw))


def note_writer(txn: WriteTxn, version: str) -> None:
    """Record ``version`` as the last to open the store for writing."""
    txn.put(META, LAST_WRITER, codec.encode(version))


def default_backup_dir(path: str, found: int) -> str:
    """Where an automatic upgrade backs the store up: beside it, named after the format.

    ``<store>.format<N>-backup-<UTC time>-<pid>`` (then ``.2``, ``.3``, ...): two processes
    upgrading at once, or one upgrading again right after an interrupted upgrade, never pick
    the same name.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = path_beside(path, f".format{found}-backup-{stamp}-{os.getpid()}")
    candidate, n = base, 1
    while os.path.exists(candidate):  # this process upgraded (and failed) within the second
        n += 1
        candidate = f"{base}.{n}"
    return candidate
