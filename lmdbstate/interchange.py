"""JSONL export and import; the importer for legacy JSON state directories.

``docs/import-export.md`` specifies both formats; a test checks its table of typed values
against this module.

An export file is JSON Lines: a header line, then each workflow's line followed by one line per
checkpoint, in seq order. A checkpoint line carries everything its record is built from (seq,
created_ns, step, schema, meta, state) and the record's digest, so an import into any store
rebuilds the record byte for byte, and tells when a line no longer matches its digest. Values
JSON has no type for travel as one-key objects naming their type: ``{"$tuple": [1, 2]}``.

The legacy importer reads a ``.tapps-agents/workflow-state/`` directory of the system lmdbstate
replaces, and never writes to it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import math
import os
import re
import struct
import tempfile
import time
import uuid
import zlib
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path, PurePath
from typing import IO, Any

from . import codec, records
from .env import fsync_directory
from .errors import (
    CodecError,
    IntegrityError,
    InterchangeError,
    InvalidInputError,
    NotFoundError,
    SequenceConflictError,
    UnsupportedFormatError,
    WorkflowNotFoundError,
)
from .keys import checkpoint_key, encode_workflow_id
from .models import (
    Checkpoint,
    DamagedRecord,
    ExportReport,
    ImportProblem,
    ImportReport,
    LegacyImportReport,
    Status,
    WorkflowInfo,
    utc_from_ns,
)
from .store import CheckpointStore

FORMAT = "lmdbstate-export"
"""The ``format`` of an export file's header line."""
FORMAT_VERSION = 1
"""The export format this version writes and reads (the header's ``version``)."""

Progress = Callable[[int, int], None]

_MAX_EXACT_INT = 2**53 - 1  # beyond it, many JSON readers round an integer to a double
_QUIET_NAN_BITS = 0x7FF8000000000000  # float("nan"): written as "nan"; other NaNs by their bits
_HEX64 = re.compile(r"[0-9a-f]{16}")
_INTEGER = re.compile(r"-?[0-9]+")
# isoformat() of an aware datetime: the offset may hold seconds and microseconds, which
# datetime.fromisoformat drops before Python 3.12, so the offset is read here.
_AWARE_ISO = re.compile(
    r"(?P<wall>[^T]+T[^+-]+)(?P<sign>[+-])(?P<hours>[0-9]{2}):(?P<minutes>[0-9]{2})"
    r"(?::(?P<seconds>[0-9]{2})(?:\.(?P<microseconds>[0-9]{6}))?)?"
)
_HEADER_LIMIT = 64 * 1024  # a first line longer than this is no header: do not read a GiB of it


# -- typed values -----------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """The JSON form of a value the codec carries, exact for every type it carries.

    str, bool, None, lists, finite floats, ints within +-(2**53 - 1) and dicts whose keys are
    all str (but for a one-key dict whose key starts with ``$``) stay as they are; every other
    value becomes a one-key object whose key names its type (``docs/import-export.md``).

    Raises:
        CodecError: a type the codec does not carry (a state read from a store never holds one).
    """
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        return value if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT else {"$int": str(value)}
    if kind is float:
        return value if math.isfinite(value) else {"$float": _float_text(value)}
    if kind is list:
        return [encode_value(item) for item in value]
    if kind is dict:
        if all(type(key) is str for key in value) and not _marker_shaped(value):
            return {key: encode_value(item) for key, item in value.items()}
        return {"$dict": [[encode_value(key), encode_value(item)] for key, item in value.items()]}
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        raise CodecError("value", f"unsupported type {kind.__module__}.{kind.__qualname__}")
    marker, payload = encoder(value)
    return {marker: payload}


def decode_value(data: Any) -> Any:
    """The value whose JSON form (as ``encode_value`` writes it) is ``data``.

    Raises:
        ValueError: an unknown type marker, or a payload that does not fit its marker; the
            message names the marker.
    """
    if type(data) is list:
        return [decode_value(item) for item in data]
    if type(data) is dict:
        if not _marker_shaped(data):
            return {key: decode_value(item) for key, item in data.items()}
        ((marker, payload),) = data.items()
        decoder = _DECODERS.get(marker)
        if decoder is None:
            raise ValueError(f"unknown type marker {marker!r}")
        try:
            return decoder(payload)
        except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
            raise ValueError(f"{marker}: {exc}") from exc
    return data


def _marker_shaped(data: dict[Any, Any]) -> bool:
    """True for a one-key dict whose key starts with ``$``: the shape of a typed value."""
    if len(data) != 1:
        return False
    key = next(iter(data))
    return type(key) is str and key.startswith("$")


def _float_text(value: float) -> str:
    if not math.isnan(value):
        return "inf" if value > 0 else "-inf"
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    return "nan" if bits == _QUIET_NAN_BITS else f"nan:{bits:016x}"


def _encode_items(items: set[Any] | frozenset[Any]) -> list[Any]:
    # In the order the codec stores them (sorted when they sort): equal sets, equal lines.
    return [encode_value(item) for item in codec.sorted_if_possible(items)]


def _encode_datetime(value: dt.datetime) -> dict[str, object]:
    fields: dict[str, object] = {"iso": value.isoformat()}
    tzinfo = value.tzinfo
    if isinstance(tzinfo, zoneinfo.ZoneInfo) and tzinfo.key:
        fields["zone"] = tzinfo.key
    elif isinstance(tzinfo, dt.timezone):
        name = tzinfo.tzname(None)
        if name != dt.timezone(tzinfo.utcoffset(None)).tzname(None):
            fields["tzname"] = name
    if value.fold:
        fields["fold"] = 1
    return fields


_ENCODERS: dict[type[Any], Callable[[Any], tuple[str, object]]] = {
    bytes: lambda value: ("$bytes", base64.b64encode(value).decode("ascii")),
    tuple: lambda value: ("$tuple", [encode_value(item) for item in value]),
    set: lambda value: ("$set", _encode_items(value)),
    frozenset: lambda value: ("$frozenset", _encode_items(value)),
    dt.datetime: lambda value: ("$datetime", _encode_datetime(value)),
    dt.date: lambda value: ("$date", value.isoformat()),
    uuid.UUID: lambda value: ("$uuid", str(value)),
    Decimal: lambda value: ("$decimal", str(value)),
}


def _text(payload: object) -> str:
    if type(payload) is not str:
        raise TypeError(f"expected a string, not {type(payload).__name__}")
    return payload


def _items(payload: object) -> list[Any]:
    if type(payload) is not list:
        raise TypeError(f"expected an array, not {type(payload).__name__}")
    return [decode_value(item) for item in payload]


def _decode_pairs(payload: object) -> dict[Any, Any]:
    pairs: dict[Any, Any] = {}
    for pair in _items(payload):
        if type(pair) is not list or len(pair) != 2:
            raise TypeError("expected an array of [key, value] pairs")
        key, value = pair
        pairs[key] = value
    return pairs


def _decode_datetime(payload: object) -> dt.datetime:
    if type(payload) is not dict:
        raise TypeError(f"expected an object, not {type(payload).__name__}")
    unknown = set(payload) - {"iso", "zone", "tzname", "fold"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    value = _parse_iso(_text(payload.get("iso")))
    zone, tzname, fold = payload.get("zone"), payload.get("tzname"), payload.get("fold", 0)
    if zone is not None:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(_text(zone)))
    elif tzname is not None:
        offset = value.utcoffset()
        if offset is None:
            raise ValueError("tzname needs an offset in iso")
        value = value.replace(tzinfo=dt.timezone(offset, _text(tzname)))
    if type(fold) is not int or fold not in (0, 1):
        raise ValueError(f"fold must be 0 or 1, not {fold!r}")
    return value.replace(fold=fold)


def _parse_iso(text: str) -> dt.datetime:
    match = _AWARE_ISO.fullmatch(text)
    if match is None:
        return dt.datetime.fromisoformat(text)
    offset = dt.timedelta(
        **{unit: int(match[unit] or 0) for unit in ("hours", "minutes", "seconds", "microseconds")}
    )
    wall = dt.datetime.fromisoformat(match["wall"])
    return wall.replace(tzinfo=dt.timezone(-offset if match["sign"] == "-" else offset))


def _decode_int(payload: object) -> int:
    text = _text(payload)
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


_FLOATS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _decode_float(payload: object) -> float:
    text = _text(payload)
    if text in _FLOATS:
        return _FLOATS[text]
    bits = text.removeprefix("nan:")
    if bits != text and _HEX64.fullmatch(bits):
        (value,) = struct.unpack(">d", bytes.fromhex(bits))
        if math.isnan(value):
            return float(value)
    raise ValueError(f"not inf, -inf, nan or nan:<16 hex digits of a NaN>: {text!r}")


_DECODERS: dict[str, Callable[[Any], object]] = {
    "$bytes": lambda payload: base64.b64decode(_text(payload), validate=True),
    "$tuple": lambda payload: tuple(_items(payload)),
    "$set": lambda payload: set(_items(payload)),
    "$frozenset": lambda payload: frozenset(_items(payload)),
    "$dict": _decode_pairs,
    "$datetime": _decode_datetime,
    "$date": lambda payload: dt.date.fromisoformat(_text(payload)),
    "$uuid": lambda payload: uuid.UUID(_text(payload)),
    "$decimal": lambda payload: Decimal(_text(payload)),
    "$int": _decode_int,
    "$float": _decode_float,
}

MARKERS = frozenset(_DECODERS)
"""Every type marker an export file may hold."""


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (non-finite floats are written as $float)")


def _parse_line(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc


# -- export -----------------------------------------------------------------------------------


def export_jsonl(
    store: CheckpointStore,
    path: str | os.PathLike[str],
    *,
    workflow_id: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the store's checkpoints, or one workflow's, to a JSON Lines file.

    Every checkpoint is read in its own short read transaction, so writers go on meanwhile
    and the file holds each workflow as it was when its turn came. Damaged checkpoints are
    left out and reported. The file is written beside ``path`` and renamed into place once
    complete and flushed: ``path`` never holds a partial export.

    Args:
        store: the store to read.
        path: the file to write.
        workflow_id: export only this workflow.
        overwrite: replace ``path`` if it exists.
        progress: called with (checkpoints written, checkpoints in the store) as it goes.

    Raises:
        WorkflowNotFoundError: ``workflow_id`` names no workflow.
        InterchangeError: ``path`` exists and ``overwrite`` is False, or it cannot be written.
        StoreCorruptedError: an index entry is damaged (``lmdbstate repair`` rebuilds it).
    """
    started = time.perf_counter()
    target = Path(path)
    infos: Iterable[WorkflowInfo]
    if workflow_id is None:
        infos = store.workflows()
        total = store.stats().checkpoints if progress is not None else 0
    else:
        info = store.workflow(workflow_id)
        infos, total = (info,), info.checkpoints
    if target.exists() and not overwrite:
        raise InterchangeError(
            f"{target} exists",
            path=target,
            hint="choose another file, or replace it with --force (overwrite=True)",
        )
    # A name of its own (two exports to one file never share it), readable by this user only.
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise InterchangeError(
            f"cannot write {target}: {exc.strerror or exc}", path=target
        ) from exc
    partial = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            export = _Export(store, out, progress, total)
            out.write(_line(_header(workflow_id)))
            for info in infos:
                export.workflow(info.workflow_id)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        fsync_directory(str(target.parent))
        size = target.stat().st_size
    except OSError as exc:
        raise InterchangeError(
            f"cannot write {target}: {exc.strerror or exc}", path=target
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return ExportReport(
        path=str(target),
        workflows=export.workflows,
        checkpoints=export.checkpoints,
        bytes=size,
        damaged=tuple(export.damaged),
        seconds=time.perf_counter() - started,
    )


def _header(workflow_id: str | None) -> dict[str, Any]:
    from . import __version__

    return {
        "type": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "lmdbstate": __version__,
        "exported_ns": time.time_ns(),
        "workflow_id": workflow_id,
    }


class _Export:
    """Writes workflows and their checkpoints to an open export file, counting as it goes."""

    def __init__(
        self, store: CheckpointStore, out: IO[str], progress: Progress | None, total: int
    ) -> None:
        self.store = store
        self.out = out
        self.progress = progress
        self.total = total
        self.workflows = 0
        self.checkpoints = 0
        self.damaged: list[DamagedRecord] = []

    def workflow(self, workflow_id: str) -> None:
        """Write the workflow's line, then its checkpoints up to the last seq it has now."""
        try:
            info = self.store.workflow(workflow_id)
            extras = self.store.workflow_extras(workflow_id)
            first = self._first_seq(workflow_id)
        except WorkflowNotFoundError:
            return  # deleted since it was listed
        self.out.write(
            _line(
                {
                    "type": "workflow",
                    "workflow_id": workflow_id,
                    "status": info.status,
                    "created_ns": info.created_ns,
                    "extras": encode_value(extras),
                }
            )
        )
        self.workflows += 1
        if first is None:
            return
        # One get per seq: each is its own short read transaction, and a damaged record is
        # skipped and reported without ending the walk (as an iterator's error would).
        for seq in range(first, info.last_seq + 1):
            self._checkpoint(workflow_id, seq)

    def _first_seq(self, workflow_id: str) -> int | None:
        try:
            first = next(self.store.history(workflow_id, limit=1), None)
        except IntegrityError as exc:
            return exc.seq
        return None if first is None else first.seq

    def _checkpoint(self, workflow_id: str, seq: int) -> None:
        try:
            ckpt = self.store.get(workflow_id, seq)
        except NotFoundError:
            return  # a gap left by a delete or a gc
        except IntegrityError as exc:
            key = checkpoint_key(encode_workflow_id(workflow_id), seq)
            self.damaged.append(DamagedRecord(workflow_id, seq, key, exc.reason))
            return
        self.out.write(
            _line(
                {
                    "type": "checkpoint",
                    "workflow_id": workflow_id,
                    "seq": seq,
                    "created_ns": ckpt.created_ns,
                    "step": encode_value(ckpt.step),
                    "schema": ckpt.schema,
                    "digest": f"{_whole_digest(ckpt):016x}",
                    "meta": encode_value(ckpt.meta),
                    "state": encode_value(ckpt.state),
                }
            )
        )
        self.checkpoints += 1
        if self.progress is not None:
            self.progress(self.checkpoints, self.total)


def _whole_digest(ckpt: Checkpoint) -> int:
    """The digest an export line carries: the checkpoint's, stored whole (record format 1)."""
    if ckpt.record_format == records.FORMAT_VERSION:
        return ckpt.digest
    key = checkpoint_key(encode_workflow_id(ckpt.workflow_id), ckpt.seq)
    return records.whole_digest(key, ckpt.state, ckpt.step, ckpt.schema, ckpt.meta, ckpt.created_ns)


# -- import -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(source: Path) -> Iterator[IO[bytes]]:
    try:
        file = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InterchangeError(f"cannot read {source}: {exc.strerror or exc}", path=source) from exc
    with file:
        yield file


def _read_header(source: Path, file: IO[bytes]) -> None:
    try:
        header = _parse_line(file.readline(_HEADER_LIMIT))
    except ValueError:
        header = None
    if type(header) is not dict or header.get("type") != "header" or header.get("format") != FORMAT:
        raise InterchangeError(
            f"{source} is not an lmdbstate export: its first line is no export header",
            path=source,
        )
    if header.get("version") != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{source} is an export of format version {header.get('version')!r}; this version "
            f"reads version {FORMAT_VERSION}",
            path=source,
        )


def check_export_file(path: str | os.PathLike[str]) -> None:
    """Check by its header line that ``path`` is an export file this version reads.

    Raises:
        InterchangeError: no readable file at ``path``, or not an lmdbstate export.
        UnsupportedFormatError: an export of another format version.
    """
    source = Path(path)
    with _opened(source) as file:
        _read_header(source, file)


def import_jsonl(
    store: CheckpointStore, path: str | os.PathLike[str], *, progress: Progress | None = None
) -> ImportReport:
    """Import the checkpoints of an export file, with the seqs, times and digests they had.

    Each checkpoint is rebuilt exactly as it was stored and written with its seq and creation
    time (``CheckpointStore.import_checkpoint``); one already present byte for byte is left as
    it is, so importing a file again writes nothing. A line that cannot be imported is
    reported and skipped; a checkpoint whose rebuilt digest differs from the line's (the line
    was edited) is imported and reported. A workflow's status and extras are set from its
    workflow line once all its checkpoint lines were imported, when the store's newest
    checkpoint of the workflow is the file's newest.

    Args:
        store: the store to write into.
        path: the export file.
        progress: called with (lines, bytes) read so far.

    Raises:
        InterchangeError: the file cannot be read, or is not an lmdbstate export.
        UnsupportedFormatError: an export of another format version.
        ReadOnlyStoreError: the store is read-only.
        StoreFullError: the store reached its maximum size; the lines before are imported.
    """
    started = time.perf_counter()
    source = Path(path)
    importer = _JsonlImport(store)
    with _opened(source) as file:
        _read_header(source, file)
        lines, done = 1, file.tell()
        try:
            for lines, raw in enumerate(file, start=2):
                importer.line(lines, raw)
                done += len(raw)
                if progress is not None:
                    progress(lines, done)
        except OSError as exc:
            raise InterchangeError(
                f"cannot read {source}: {exc.strerror or exc}", path=source
            ) from exc
        importer.end_section()
    return ImportReport(
        path=str(source),
        lines=lines,
        workflows=len(importer.workflows),
        imported=importer.imported,
        already_present=importer.already_present,
        statuses_set=importer.statuses_set,
        mismatched=tuple(importer.mismatched),
        skipped=tuple(importer.skipped),
        seconds=time.perf_counter() - started,
    )


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record:
        raise ValueError(f"the line has no {name!r}")
    return record[name]


def _digest(text: object) -> int:
    if type(text) is not str or not _HEX64.fullmatch(text):
        raise ValueError(f"digest {text!r} is not 16 lowercase hex digits")
    return int(text, 16)


@dataclasses.dataclass
class _Section:
    """A workflow line, and what became of the checkpoint lines after it."""

    line: int
    workflow_id: Any
    status: Any
    extras: Any
    head: int | None = None
    """The highest seq of the workflow imported (or found present) from this section."""
    complete: bool = True
    """False once a line of the section was skipped."""


class _JsonlImport:
    """Imports the lines of an export file one at a time, and keeps the report's counts."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self.section: _Section | None = None
        self.workflows: set[str] = set()
        self.imported = self.already_present = self.statuses_set = 0
        self.mismatched: list[ImportProblem] = []
        self.skipped: list[ImportProblem] = []

    def line(self, number: int, raw: bytes) -> None:
        """Import one line; a line that cannot be imported is recorded as skipped."""
        if not raw.strip():
            return
        record: Any = None
        try:
            record = _parse_line(raw)
            kind = record.get("type") if type(record) is dict else None
            if kind == "checkpoint":
                self._checkpoint(number, record)
            elif kind == "workflow":
                self._start_section(number, record)
            else:
                raise ValueError(f"not a checkpoint or workflow line (type {kind!r})")
        except (ValueError, TypeError, RecursionError, SequenceConflictError) as exc:
            if self.section is not None:
                self.section.complete = False
            self.skipped.append(_problem(f"line {number}", record, exc))

    def _checkpoint(self, number: int, record: dict[str, Any]) -> None:
        digest = _digest(_field(record, "digest"))
        info, written = self.store.import_checkpoint(
            _field(record, "workflow_id"),
            _field(record, "seq"),
            decode_value(_field(record, "state")),
            created_ns=_field(record, "created_ns"),
            step=decode_value(_field(record, "step")),
            schema=_field(record, "schema"),
            meta=decode_value(_field(record, "meta")),
        )
        if written:
            self.imported += 1
        else:
            self.already_present += 1
        self.workflows.add(info.workflow_id)
        whole = records.whole_digest(
            checkpoint_key(encode_workflow_id(info.workflow_id), info.seq),
            decode_value(_field(record, "state")),
            decode_value(_field(record, "step")),
            _field(record, "schema"),
            decode_value(_field(record, "meta")),
            _field(record, "created_ns"),
        )
        if whole != digest:
            self.mismatched.append(
                ImportProblem(
                    f"line {number}",
                    info.workflow_id,
                    info.seq,
                    f"digest {whole:016x} differs from the line's {digest:016x}: the line "
                    f"was changed after the export",
                )
            )
        section = self.section
        if section is not None and section.workflow_id == info.workflow_id:
            section.head = max(section.head or 0, info.seq)

    def _start_section(self, number: int, record: dict[str, Any]) -> None:
        self.end_section()
        self.section = _Section(
            number,
            _field(record, "workflow_id"),
            _field(record, "status"),
            decode_value(_field(record, "extras")),
        )

    def end_section(self) -> None:
        """Set the status of the workflow whose lines end here, when they all went in."""
        section, self.section = self.section, None
        if section is None or not section.complete:
            return
        if section.head is None:
            self._skip_section(
                section,
                "no checkpoint line follows: a workflow without checkpoints is not imported",
            )
            return
        try:
            self._set_status(section)
        except (ValueError, NotFoundError) as exc:
            self._skip_section(section, str(exc))

    def _skip_section(self, section: _Section, reason: str) -> None:
        workflow_id = section.workflow_id if type(section.workflow_id) is str else None
        self.skipped.append(ImportProblem(f"line {section.line}", workflow_id, None, reason))

    def _set_status(self, section: _Section) -> None:
        workflow_id = section.workflow_id
        info = self.store.workflow(workflow_id)
        if info.head_seq != section.head:
            return  # the workflow has moved on in this store: its own status stands
        if type(section.extras) is not dict:
            raise ValueError("extras is not an object")
        current = self.store.workflow_extras(workflow_id)
        changed = {
            name: value
            for name, value in section.extras.items()
            if name not in current or current[name] != value
        }
        if info.status != section.status or changed:
            self.store.set_status(workflow_id, section.status, extras=changed)
            self.statuses_set += 1


def _problem(source: str, record: Any, reason: Exception) -> ImportProblem:
    """A problem at ``source``, naming the workflow and seq of ``record`` when it has them."""
    fields = record if type(record) is dict else {}
    workflow_id = fields.get("workflow_id")
    seq = fields.get("seq")
    return ImportProblem(
        source,
        workflow_id if type(workflow_id) is str else None,
        seq if type(seq) is int else None,
        str(reason),
    )


# -- legacy state directories -----------------------------------------------------------------

LEGACY_STATUSES: dict[str, Status] = {
    "running": "running",
    "paused": "running",
    "completed": "completed",
    "failed": "failed",
}
"""Each legacy status and the workflow status it becomes."""

_HISTORY = "history"
_LAST = "last.json"
_META_SUFFIX = ".meta.json"
_SAVE_TIME = re.compile(r"[0-9]{8}-[0-9]{6}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def legacy_checksum(state: dict[str, Any]) -> str:
    """The ``_checksum`` the legacy system wrote into a state file with this content.

    SHA-256 of ``json.dumps`` (sorted keys) over the workflow id, current step, sorted completed
    and skipped steps, status and variables.

    Raises:
        TypeError: the steps do not sort, or are not lists.
    """
    stable = {
        "workflow_id": state.get("workflow_id"),
        "current_step": state.get("current_step"),
        "completed_steps": sorted(state.get("completed_steps", [])),
        "skipped_steps": sorted(state.get("skipped_steps", [])),
        "status": state.get("status"),
        "variables": state.get("variables", {}),
    }
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def _content_hash(state: Any) -> str:
    """A hash of a state file's content, whatever its indentation, key order or compression."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class _Unreadable(Exception):
    """A legacy file that cannot be imported; the message says why."""

    def __init__(self, reason: str, workflow_id: str | None = None) -> None:
        super().__init__(reason)
        self.workflow_id = workflow_id


def _read_json(path: Path) -> Any:
    """A legacy file's JSON, gunzipped first when it is gzip (whatever its name says)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _Unreadable(f"cannot read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _Unreadable(f"not a whole gzip file: {exc}") from exc
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Unreadable(f"not valid JSON: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """A state file read in the scan: what identifies it, not its content."""

    source: str
    """Its path inside the directory, for reports."""
    path: Path
    workflow_id: str
    created_ns: int
    sha256: str
    status: str
    checksum: str | None


def check_legacy_dir(path: str | os.PathLike[str]) -> None:
    """Check that ``path`` is a directory the legacy importer can read.

    Raises:
        InterchangeError: no directory at ``path``.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise InterchangeError(
            f"no directory at {directory}",
            path=directory,
            hint="name the legacy state directory, e.g. .tapps-agents/workflow-state",
        )


def import_legacy(
    store: CheckpointStore,
    path: str | os.PathLike[str],
    *,
    timezone: dt.tzinfo | None = None,
    progress: Progress | None = None,
) -> LegacyImportReport:
    """Import a legacy ``.tapps-agents/workflow-state/`` directory; see docs/import-export.md.

    Every snapshot of a workflow becomes a checkpoint, in the order they were saved, the
    workflow's current one last. The directory is only read. Files that cannot be imported
    (torn JSON, a broken gzip file, a ``_checksum`` that does not match) are reported and
    skipped. Each checkpoint's meta records the file it came from and a hash of its content,
    so that running the import again writes only snapshots saved since.

    Args:
        store: the store to write into.
        path: the legacy directory.
        timezone: the zone of the legacy system's clock, in which the times of file names and
            of states without an offset are read; None for this machine's local time.
        progress: called with (files read and snapshots imported, their total) as it goes.

    Raises:
        InterchangeError: no directory at ``path``, or it cannot be listed.
        ReadOnlyStoreError: the store is read-only.
        StoreFullError: the store reached its maximum size.
    """
    started = time.perf_counter()
    directory = Path(path)
    check_legacy_dir(directory)
    legacy = _LegacyImport(store, directory, timezone, progress)
    groups = legacy.scan()
    for workflow_id in sorted(groups):
        legacy.import_workflow(workflow_id, groups[workflow_id])
    return LegacyImportReport(
        source=str(directory),
        files=legacy.files,
        snapshots=sum(len(group) for group in groups.values()),
        duplicates=legacy.duplicates,
        workflows=len(groups),
        imported=legacy.imported,
        already_present=legacy.already_present,
        statuses_set=legacy.statuses_set,
        skipped=tuple(legacy.skipped),
        seconds=time.perf_counter() - started,
    )


class _LegacyImport:
    """The two passes of a legacy import: scan every file, then import workflow by workflow.

    The scan keeps what identifies each snapshot, not its content; the import reads each file
    again (and checks that it did not change meanwhile), so memory holds one state at a time.
    """

    def __init__(
        self,
        store: CheckpointStore,
        directory: Path,
        timezone: dt.tzinfo | None,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.timezone = timezone
        self.progress = progress
        self.current: dict[str, str] = {}
        """Per workflow, the state file its ``.meta.json`` names."""
        self.meta_files: dict[str, dict[str, Any]] = {}
        self.files = self.duplicates = self.imported = self.already_present = 0
        self.statuses_set = self.done = self.total = 0
        self.skipped: list[ImportProblem] = []

    def _listing(self) -> list[Path]:
        listing: list[Path] = []
        for directory in (self.directory, self.directory / _HISTORY):
            try:
                listing += sorted(path for path in directory.iterdir() if path.is_file())
            except (FileNotFoundError, NotADirectoryError):
                continue  # no history/ directory
            except OSError as exc:
                raise InterchangeError(
                    f"cannot list {directory}: {exc.strerror or exc}", path=directory
                ) from exc
        return listing

    def _step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _skip(self, source: str, workflow_id: str | None, reason: str) -> None:
        self.skipped.append(ImportProblem(source, workflow_id, None, reason))

    def scan(self) -> dict[str, list[_Snapshot]]:
        """Read every file once; return the distinct snapshots of each workflow, by its id."""
        states: list[Path] = []
        for path in self._listing():
            top = path.parent == self.directory
            if top and path.name.endswith(_META_SUFFIX):
                self._meta_file(path)
            elif path.name.endswith((".json", ".json.gz")) and not (top and path.name == _LAST):
                states.append(path)
        self.files = self.total = len(states)
        groups: dict[str, list[_Snapshot]] = {}
        seen: set[tuple[str, int, str]] = set()
        for path in states:
            snapshot = self._snapshot(path)
            self._step()
            if snapshot is None:
                continue
            identity = (snapshot.workflow_id, snapshot.created_ns, snapshot.sha256)
            if identity in seen:
                self.duplicates += 1
                continue
            seen.add(identity)
            groups.setdefault(snapshot.workflow_id, []).append(snapshot)
        self.total += len(seen)
        return groups

    def _source(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    def _meta_file(self, path: Path) -> None:
        try:
            meta = _read_json(path)
        except _Unreadable as exc:
            self._skip(self._source(path), None, str(exc))
            return
        if type(meta) is not dict or type(meta.get("state_file")) is not str:
            self._skip(self._source(path), None, "not a legacy meta file: no state_file")
            return
        workflow_id = meta.get("workflow_id")
        if type(workflow_id) is not str:
            workflow_id = path.name.removesuffix(_META_SUFFIX)
        self.current[workflow_id] = PurePath(meta["state_file"]).name
        self.meta_files[workflow_id] = meta

    def _snapshot(self, path: Path) -> _Snapshot | None:
        try:
            data = _read_json(path)
            return self._identify(path, data)
        except _Unreadable as exc:
            self._skip(self._source(path), exc.workflow_id, str(exc))
            return None

    def _identify(self, path: Path, data: Any) -> _Snapshot:
        if (
            type(data) is not dict
            or type(data.get("workflow_id")) is not str
            or not data["workflow_id"]
            or type(data.get("started_at")) is not str
        ):
            raise _Unreadable("not a legacy workflow state: no workflow_id and started_at")
        workflow_id: str = data["workflow_id"]
        status = data.get("status", "running")
        if type(status) is not str or status not in LEGACY_STATUSES:
            raise _Unreadable(f"unknown status {status!r}", workflow_id)
        checksum = data.get("_checksum")
        if checksum is not None:
            try:
                computed = legacy_checksum(data)
            except TypeError as exc:
                reason = f"its _checksum cannot be recomputed: {exc}"
                raise _Unreadable(reason, workflow_id) from exc
            if computed != checksum:
                raise _Unreadable(
                    f"_checksum mismatch: the file says {checksum}, its content hashes to "
                    f"{computed}",
                    workflow_id,
                )
        return _Snapshot(
            self._source(path),
            path,
            workflow_id,
            self._saved_ns(path, workflow_id, data),
            _content_hash(data),
            status,
            checksum,
        )

    def _saved_ns(self, path: Path, workflow_id: str, data: dict[str, Any]) -> int:
        """When the snapshot was saved, in ns since the epoch.

        From ``{workflow_id}-YYYYmmdd-HHMMSS`` in its name; else the newest time in the state
        (``started_at``, each step execution's start and end); else the file's modification time.
        """
        stem = path.name.removesuffix(".gz").removesuffix(".json")
        stamp = stem.removeprefix(f"{workflow_id}-")
        if stamp != stem and _SAVE_TIME.fullmatch(stamp):
            with contextlib.suppress(ValueError):  # 20261399-...: no date, so no save time
                return self._ns(dt.datetime.strptime(stamp, "%Y%m%d-%H%M%S"))
        times = [self._ns(moment) for moment in _state_times(data)]
        if times:
            return max(times)
        try:
            return path.stat().st_mtime_ns
        except OSError as exc:
            raise _Unreadable(f"cannot read: {exc.strerror or exc}", workflow_id) from exc

    def _ns(self, moment: dt.datetime) -> int:
        if moment.tzinfo is None:
            moment = (
                moment.astimezone()
                if self.timezone is None
                else moment.replace(tzinfo=self.timezone)
            )
        return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000

    def import_workflow(self, workflow_id: str, snapshots: list[_Snapshot]) -> None:
        """Import one workflow's snapshots in save order, then set its status from its head."""
        snapshots = self._up_to_current(
            workflow_id, sorted(snapshots, key=lambda s: (s.created_ns, s.source))
        )
        try:
            present, newest_ns, last_seq = self._present(workflow_id, snapshots)
        except InvalidInputError as exc:  # an id lmdbstate does not take
            for snapshot in snapshots:
                self._skip(snapshot.source, workflow_id, str(exc))
                self._step()
            return
        head: tuple[int, _Snapshot] | None = None
        for snapshot in snapshots:
            self._step()
            seq = present.get((snapshot.created_ns, snapshot.sha256))
            if seq is not None:
                self.already_present += 1
            elif newest_ns is not None and snapshot.created_ns < newest_ns:
                self._skip(
                    snapshot.source,
                    workflow_id,
                    f"saved at {_iso(snapshot.created_ns)}, before the store's newest checkpoint "
                    f"of the workflow ({_iso(newest_ns)}): not imported, so that the history "
                    f"stays in time order",
                )
                continue
            else:
                try:
                    seq = self._write(snapshot, last_seq + 1)
                except (_Unreadable, ValueError, SequenceConflictError) as exc:
                    self._skip(snapshot.source, workflow_id, str(exc))
                    continue
                last_seq, newest_ns = seq, snapshot.created_ns
                self.imported += 1
            head = (seq, snapshot)
        if head is not None:
            self._set_status(workflow_id, *head)

    def _up_to_current(self, workflow_id: str, snapshots: list[_Snapshot]) -> list[_Snapshot]:
        """The snapshots up to the current one its meta file names; the later ones are skipped.

        The legacy system writes a state file, then points the meta file at it: a later file
        is one it never made current. When the named file is not among the snapshots (missing,
        torn, or failing its checksum), the newest snapshot is the current one.
        """
        current = self.current.get(workflow_id)
        names = [PurePath(s.source).name.removesuffix(".gz") for s in snapshots]
        if current is None or current.removesuffix(".gz") not in names:
            return snapshots
        last = max(i for i, name in enumerate(names) if name == current.removesuffix(".gz"))
        for snapshot in snapshots[last + 1 :]:
            self._skip(
                snapshot.source,
                workflow_id,
                f"saved after {current}, the current state file {workflow_id}.meta.json names: "
                f"the legacy system never made it current",
            )
            self._step()
        return snapshots[: last + 1]

    def _present(
        self, workflow_id: str, snapshots: list[_Snapshot]
    ) -> tuple[dict[tuple[int, str], int], int | None, int]:
        """What the store holds of the workflow, before this import writes to it.

        Returns the seqs of the snapshots an earlier import wrote (by save time and content
        hash), the creation time of its newest checkpoint, and its last seq.
        """
        try:
            info = self.store.workflow(workflow_id)
        except WorkflowNotFoundError:
            return {}, None, 0
        wanted = {snapshot.created_ns for snapshot in snapshots}
        present: dict[tuple[int, str], int] = {}
        newest: int | None = None
        for checkpoint in self.store.history(workflow_id):
            if newest is None or checkpoint.created_ns > newest:
                newest = checkpoint.created_ns
            if checkpoint.created_ns not in wanted:
                continue  # cannot be an imported snapshot: its state need not be read
            source = self.store.get(workflow_id, checkpoint.seq).meta.get("legacy")
            if type(source) is dict and type(source.get("sha256")) is str:
                present[(checkpoint.created_ns, source["sha256"])] = checkpoint.seq
        return present, newest, info.last_seq

    def _write(self, snapshot: _Snapshot, seq: int) -> int:
        data = _read_json(snapshot.path)
        if type(data) is not dict or _content_hash(data) != snapshot.sha256:
            raise _Unreadable("it changed while the import ran")
        step = data.get("current_step")
        meta = {
            "legacy": {
                "file": PurePath(snapshot.source).name,
                "sha256": snapshot.sha256,
                "checksum": snapshot.checksum,
                "status": snapshot.status,
            }
        }
        info, _ = self.store.import_checkpoint(
            snapshot.workflow_id,
            seq,
            {name: value for name, value in data.items() if name != "_checksum"},
            created_ns=snapshot.created_ns,
            step=step if type(step) in (str, int) else None,
            meta=meta,
        )
        return info.seq

    def _set_status(self, workflow_id: str, seq: int, snapshot: _Snapshot) -> None:
        """Set the workflow's status from its head snapshot, and record its meta file."""
        info = self.store.workflow(workflow_id)
        if info.head_seq != seq:
            return  # the workflow went on in lmdbstate: its own status stands
        status = LEGACY_STATUSES[snapshot.status]
        extras: dict[str, object] = {}
        meta = self.meta_files.get(workflow_id)
        if meta is not None and self.store.workflow_extras(workflow_id).get("legacy") != meta:
            extras["legacy"] = meta
        if info.status == status and not extras:
            return
        try:
            self.store.set_status(workflow_id, status, extras=extras)
        except InvalidInputError as exc:
            self._skip(f"{workflow_id}{_META_SUFFIX}", workflow_id, str(exc))
            return
        self.statuses_set += 1


def _state_times(state: dict[str, Any]) -> Iterator[dt.datetime]:
    """The ISO times of a legacy state: ``started_at``, and each step execution's start and end."""
    texts = [state.get("started_at")]
    executions = state.get("step_executions")
    if type(executions) is list:
        for execution in executions:
            if type(execution) is dict:
                texts += [execution.get("started_at"), execution.get("completed_at")]
    for text in texts:
        if type(text) is str:
            with contextlib.suppress(ValueError):
                yield dt.datetime.fromisoformat(text)


def _iso(ns: int) -> str:
    return utc_from_ns(ns).isoformat(timespec="seconds").replace("+00:00", "Z")
