"""Leases: an executor's claim on a workflow, kept in the workflow's ``wf`` entry.

A lease names its holder (a random owner token, pid, host, the pid's start time and the node:
boot id and pid namespace) and expires ``ttl`` after it was last renewed. It is taken, renewed
and released inside the store's write transactions (``acquire``, ``renew``, ``release`` are
run by ``CheckpointStore``), so two executors can never both hold one. A holder that ran on
this host and whose process has ended is taken over at once; one of another host, boot or
container only once its lease has expired.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping

from .errors import (
    InvalidInputError,
    WorkflowExistsError,
    WorkflowFinishedError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from .index import WorkflowEntry, required_entry
from .kv import WF, ReadTxn, WriteTxn
from .models import Lease, Status, WorkflowInfo

log = logging.getLogger("lmdbstate")

LEASE_FIELD = "lease"  # the field of ``WorkflowEntry.extras`` that holds the lease
_FIELDS = tuple(field.name for field in dataclasses.fields(Lease))[1:]  # all but the id
_OPTIONAL = frozenset({"node"})  # fields later versions added: absent from older leases
_FINISHED: tuple[Status, ...] = ("completed", "cancelled")


def process_started(pid: int) -> int | None:
    """When a live process started, in clock ticks after boot; None when it cannot be told.

    Reads ``/proc/PID/stat`` (Linux); a zombie counts as ended.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold any byte: split after it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22, starttime


@functools.cache
def node_identity() -> str | None:
    """This boot and pid namespace: ``<boot id>/pidns:<inode>``; None where it cannot be read.

    Two processes with the same host name and pid are the same process only if this matches
    too: after a reboot pids are given out again, and containers that share a host name each
    count pids from 1 in their own namespace.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot_id = file.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot_id}/pidns:{namespace}"


def new_lease(workflow_id: str, ttl: float) -> Lease:
    """A lease for this process on ``workflow_id``, lasting ``ttl`` seconds from now."""
    now_ns = time.time_ns()
    return Lease(
        workflow_id, uuid.uuid4().hex, os.getpid(), socket.gethostname(),
        process_started(os.getpid()), now_ns, now_ns, int(ttl * 1e9), node_identity(),
    )  # fmt: skip


def _holder_alive(held: Lease, claimant: Lease) -> bool:
    """False when ``held``'s holder ran where ``claimant``'s process runs and has ended."""
    if held.host != claimant.host or (
        held.node is not None and claimant.node is not None and held.node != claimant.node
    ):
        return True  # processes of another host, boot or container cannot be seen from here
    try:
        os.kill(held.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, under another user
    return held.pid_started is None or process_started(held.pid) == held.pid_started


def check_extras(extras: Mapping[str, object] | None) -> None:
    """Refuse extras fields that are not str, or that would overwrite the lease.

    Raises:
        InvalidInputError: such a field.
    """
    for name in extras or ():
        if type(name) is not str or name == LEASE_FIELD:
            raise InvalidInputError(f"invalid extras field {name!r}: expected a str, not 'lease'")


def stored_lease(workflow_id: str, entry: WorkflowEntry) -> Lease | None:
    """The lease kept in ``entry``; None when none is, or it cannot be read (logged)."""
    stored = entry.extras.get(LEASE_FIELD)
    if stored is None:
        return None
    try:
        lease = Lease(
            workflow_id,
            *(stored.get(name) if name in _OPTIONAL else stored[name] for name in _FIELDS),
        )
    except (KeyError, TypeError):
        lease = None
    if lease is None or not _well_typed(lease):
        # Damaged, or written by another version: it names no holder that could be checked,
        # so it counts as released (``expect_seq`` still keeps two writers from forking).
        log.warning("workflow %r: its lease cannot be read; it counts as released", workflow_id)
        return None
    return lease


def _well_typed(lease: Lease) -> bool:
    ints = (lease.pid, lease.acquired_ns, lease.renewed_ns, lease.ttl_ns)
    return (
        all(type(value) is int for value in ints)
        and type(lease.owner) is str
        and type(lease.host) is str
        and (lease.pid_started is None or type(lease.pid_started) is int)
        and (lease.node is None or type(lease.node) is str)
    )


def _store_lease(txn: WriteTxn, workflow_key: bytes, entry: WorkflowEntry, lease: Lease) -> None:
    entry.extras[LEASE_FIELD] = {name: getattr(lease, name) for name in _FIELDS}
    txn.put(WF, workflow_key, entry.encode())


def _held_lease(txn: ReadTxn, workflow_key: bytes, lease: Lease) -> WorkflowEntry:
    """The workflow's entry, when ``lease`` is still the one it holds."""
    entry = required_entry(txn, workflow_key)
    held = stored_lease(lease.workflow_id, entry)
    if held is None or held.owner != lease.owner:
        raise WorkflowLockedError(lease.workflow_id, held)
    return entry


def acquire(
    txn: WriteTxn,
    workflow_key: bytes,
    lease: Lease,
    create: bool,
    extras: Mapping[str, object] | None,
) -> Lease:
    """Take ``lease`` in a write transaction (see ``CheckpointStore.acquire_lease``).

    Raises:
        WorkflowNotFoundError, WorkflowExistsError, WorkflowFinishedError, WorkflowLockedError:
            as ``CheckpointStore.acquire_lease`` says; before any write.
    """
    raw = txn.get(WF, workflow_key)
    if raw is None:
        if not create:
            raise WorkflowNotFoundError(lease.workflow_id)
        entry = WorkflowEntry(lease.acquired_ns)
    else:
        entry = WorkflowEntry.decode(workflow_key, raw)
        if entry.status in _FINISHED:
            raise WorkflowFinishedError(lease.workflow_id, entry.status)
        if create and entry.count:
            raise WorkflowExistsError(lease.workflow_id)
        held = stored_lease(lease.workflow_id, entry)
        if held is not None and held.owner != lease.owner:
            expired = lease.acquired_ns >= held.expires_ns
            if not expired and _holder_alive(held, lease):
                raise WorkflowLockedError(lease.workflow_id, held)
            log.warning(
                "workflow %r: taking over the lease of pid %d on %s, which %s",
                lease.workflow_id, held.pid, held.host, "expired" if expired else "has ended",
            )  # fmt: skip
    entry.status = "running"
    entry.updated_ns = max(entry.updated_ns, lease.acquired_ns)
    entry.merge_extras(extras)
    _store_lease(txn, workflow_key, entry, lease)
    return lease


def renew(txn: WriteTxn, workflow_key: bytes, lease: Lease, now_ns: int) -> Lease:
    """Extend ``lease`` from ``now_ns``.

    Raises:
        WorkflowLockedError: it is no longer held.
    """
    entry = _held_lease(txn, workflow_key, lease)
    renewed = dataclasses.replace(lease, renewed_ns=now_ns)
    _store_lease(txn, workflow_key, entry, renewed)
    return renewed


def release(
    txn: WriteTxn,
    workflow_key: bytes,
    lease: Lease,
    status: Status | None,
    extras: Mapping[str, object] | None,
) -> WorkflowInfo:
    """Drop ``lease``, setting ``status`` and ``extras`` with it.

    Raises:
        WorkflowLockedError: it is no longer held; nothing changed.
    """
    entry = _held_lease(txn, workflow_key, lease)
    del entry.extras[LEASE_FIELD]
    entry.merge_extras(extras)
    if status is not None:
        entry.status = status
        entry.updated_ns = max(entry.updated_ns, time.time_ns())
    txn.put(WF, workflow_key, entry.encode())
    return entry.info(workflow_key)
