"""Read LMDB 0.9 data files without LMDB, and check one before LMDB maps it (``preflight``).

LMDB does not check its own file. A truncated ``data.mdb`` kills the process with SIGBUS as
soon as LMDB touches a page past the end of the file, and one damaged meta page makes LMDB
refuse the whole environment although the other meta page, and the snapshot it points to, are
intact. :func:`preflight` reads the two meta pages and the file's size before LMDB maps the
file and turns each of these into a precise ``StoreCorruptedError``. :class:`DataFile` reads
the B-trees and pages itself, so that ``recover`` can salvage records from a file LMDB refuses.

The layout, as LMDB 0.9 writes it on 64-bit little-endian machines (``mdb.c``; confirmed on
files written by py-lmdb 3.0.0 with LMDB 0.9.36, see ``tests/test_lmdbfile.py``). Offsets are
in bytes from the start of a page:

- Page header, 16 bytes: page number u64 @0, pad u16 @8, flags u16 @10, then either the lower
  and upper bounds of the free space, u16 @12 and u16 @14 (branch and leaf pages), or the
  number of pages in the run, u32 @12 (overflow pages). Flags: P_BRANCH 0x01, P_LEAF 0x02,
  P_OVERFLOW 0x04, P_META 0x08, P_LEAF2 0x20 and P_SUBP 0x40 (sorted duplicates).
- Meta pages are pages 0 and 1; transaction N writes meta page N % 2, and the valid meta with
  the higher transaction id is the current one. After the page header: magic u32 @16
  (0xBEEFC0DE), format version u32 @20 (1), fixed-map address u64 @24, map size u64 @32, the
  MDB_db of the free-page database @40 and of the main database @88, last used page u64 @136,
  transaction id u64 @144. The page size is kept in the free database's ``md_pad`` (@40).
- MDB_db, 48 bytes: pad u32 @0, flags u16 @4, depth u16 @6, branch pages u64 @8, leaf pages
  u64 @16, overflow pages u64 @24, entries u64 @32, root page u64 @40 (all ones: empty).
- Branch and leaf pages: after the header, one u16 per node giving the node's offset from the
  start of the page; there are (lower - 16) / 2 of them, in key order. A node is lo u16, hi u16,
  flags u16, key size u16, the key, then (leaf nodes) the value. In a leaf the value's size is
  lo | hi << 16; with F_BIGDATA (0x01) the node holds instead the u64 number of the first
  overflow page, and the value follows that page's 16-byte header. F_SUBDATA (0x02) marks a
  value that is an MDB_db (a named database in the main database), F_DUPDATA (0x04) sorted
  duplicates. In a branch the child's page number is lo | hi << 16 | flags << 32.
- The free-page database maps a transaction id (u64) to a page list: a u64 count, then that
  many u64 page numbers.

Whole-file problems raise ``StoreCorruptedError``. A damaged page or node never stops a walk
or a scan: it is reported as a :class:`Skipped` item, with the reason, and the rest is read.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from .errors import (
    InvalidInputError,
    StoreCorruptedError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

log = logging.getLogger("lmdbstate")

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"

MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_BRANCH = 0x01
P_LEAF = 0x02
P_OVERFLOW = 0x04
P_META = 0x08
P_LEAF2 = 0x20
P_SUBP = 0x40
F_BIGDATA = 0x01
F_SUBDATA = 0x02
F_DUPDATA = 0x04
P_INVALID = (1 << 64) - 1
"""The root page number of an empty tree."""

MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536
PAGE_SIZES = tuple(1 << bits for bits in range(9, 17))
MAX_KEY_SIZE = 511  # LMDB 0.9's compiled-in limit: a longer key was never written
MAX_DEPTH = 64
META_PAGES = 2
PAGE_HEADER_SIZE = 16
NODE_HEADER_SIZE = 8
DB_RECORD_SIZE = 48
LOCK_HEADER_SIZE = 192
"""LMDB's lock table header with one reader slot (x86-64 glibc): no lock file is smaller."""

_PAGE_HEADER = struct.Struct("<QHHHH")  # pgno, pad, flags, lower, upper
_OVERFLOW_COUNT = struct.Struct("<I")  # at offset 12 of an overflow page
_META_START = struct.Struct("<IIQQ")  # magic, version, address, map size
_DB = struct.Struct("<IHHQQQQQ")
_META_END = struct.Struct("<QQ")  # last page, transaction id
_NODE = struct.Struct("<HHHH")  # lo, hi, flags, key size
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_FREE_DB_AT = PAGE_HEADER_SIZE + _META_START.size
_MAIN_DB_AT = _FREE_DB_AT + DB_RECORD_SIZE
_META_END_AT = _MAIN_DB_AT + DB_RECORD_SIZE
META_BYTES = _META_END_AT + _META_END.size
"""Bytes of a meta page that LMDB reads and writes: the header and MDB_meta (152)."""

_LEAF_NODE_FLAGS = F_BIGDATA | F_SUBDATA | F_DUPDATA
_PREFLIGHT_ATTEMPTS = 3  # meta pages read while another process commits are read again
_INFER_PAGES = 64  # pages sampled to tell the page size of a file without a valid meta page


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DbRecord:
    """An MDB_db: the shape of one B-tree and where its root is."""

    pad: int
    """The page size, in the free database's record of a meta page; otherwise unused here."""
    flags: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> DbRecord:
        """The record at ``offset`` of ``data``, which must hold its 48 bytes."""
        return cls(*_DB.unpack_from(data, offset))

    @property
    def empty(self) -> bool:
        """True when the tree has no root page (``root`` is LMDB's P_INVALID)."""
        return self.root == P_INVALID


@dataclass(frozen=True, slots=True)
class MetaPage:
    """One of the two meta pages, as found; its fields mean something only when it is valid."""

    slot: int
    """0 or 1: which meta page."""
    offset: int
    """Where in the file it was read."""
    page_flags: int
    magic: int
    version: int
    map_size: int
    page_size: int
    free_db: DbRecord
    main_db: DbRecord
    last_page: int
    """The highest page number the snapshot uses."""
    txnid: int
    problem: str | None
    """Why the page is not a valid meta page, or None."""

    @property
    def valid(self) -> bool:
        """True when LMDB could use this meta page."""
        return self.problem is None


@dataclass(frozen=True, slots=True)
class Page:
    """A page whose header checks out (:meth:`DataFile.read_page`)."""

    pgno: int
    flags: int
    lower: int
    upper: int
    overflow_pages: int
    """The length of the run, for an overflow page; 0 otherwise."""
    raw: bytes

    @property
    def node_count(self) -> int:
        """How many nodes a branch or leaf page holds."""
        return (self.lower - PAGE_HEADER_SIZE) // 2 if self.flags in (P_BRANCH, P_LEAF) else 0


@dataclass(frozen=True, slots=True)
class LeafItem:
    """A key and its value, read from node ``index`` of leaf page ``pgno``."""

    pgno: int
    index: int
    key: bytes
    value: bytes
    flags: int
    """The node's flags: F_BIGDATA when the value came from overflow pages, F_SUBDATA when it
    is the MDB_db of a named database."""
    overflow_pgno: int | None
    """The first overflow page of the value, or None when the value sits in the leaf."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A page (``index`` None) or one node of it that could not be read, and why."""

    pgno: int
    reason: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"page {self.pgno}" if self.index is None else f"page {self.pgno} node {self.index}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """The named databases found in the main database, and what could not be read of it."""

    databases: Mapping[bytes, DbRecord]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True, slots=True)
class FreeList:
    """The pages the free-page database lists as free, and what could not be read of it."""

    pages: frozenset[int]
    skipped: tuple[Skipped, ...]


class PageError(StoreCorruptedError):
    """One page, or one node of it, cannot be read; the rest of the file may be fine."""

    hint = "the rest of the file may be intact: `lmdbstate recover` skips damaged pages"

    def __init__(self, path: str, pgno: int, reason: str, index: int | None = None) -> None:
        where = f"page {pgno}" if index is None else f"page {pgno} node {index}"
        super().__init__(f"{where} of {path}: {reason}", path=path)
        self.pgno = pgno
        self.reason = reason
        self.index = index

    def skipped(self) -> Skipped:
        """This error as a walk or scan reports it."""
        return Skipped(self.pgno, self.reason, self.index)


@dataclass(frozen=True, slots=True)
class _Node:
    key: bytes
    flags: int
    size: int
    """lo | hi << 16: the value's size (leaf), or the low 32 bits of the child (branch)."""
    data_at: int


# -- meta pages -------------------------------------------------------------------------------


def _power_of_two_in_range(size: int) -> bool:
    return MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE and size & (size - 1) == 0


def _meta_problem(raw: bytes, meta: MetaPage) -> str | None:
    if len(raw) < META_BYTES:
        return f"only {len(raw)} of its {META_BYTES} bytes are in the file"
    if not raw.strip(b"\x00"):
        return "all zero, as if wiped"
    if not meta.page_flags & P_META:
        return f"not a meta page: page flags {meta.page_flags:#06x} lack P_META {P_META:#04x}"
    if meta.magic != MAGIC:
        return f"bad magic {meta.magic:#010x}, not LMDB's {MAGIC:#010x}"
    if meta.version != DATA_VERSION:
        return f"data format version {meta.version}, not LMDB 0.9's {DATA_VERSION}"
    if not _power_of_two_in_range(meta.page_size):
        return (
            f"page size {meta.page_size} is not a power of two from {MIN_PAGE_SIZE} "
            f"to {MAX_PAGE_SIZE}"
        )
    if meta.slot == 1 and meta.offset != meta.page_size:
        return f"its page size {meta.page_size} does not match its place at byte {meta.offset}"
    if meta.last_page < META_PAGES - 1:
        return f"last page {meta.last_page} is below {META_PAGES - 1}: pages 0 and 1 always exist"
    for name, db in (("free-page", meta.free_db), ("main", meta.main_db)):
        if not db.empty and not META_PAGES <= db.root <= meta.last_page:
            return (
                f"the {name} database's root page {db.root} is outside pages "
                f"{META_PAGES}..{meta.last_page}"
            )
    return None


def parse_meta(raw: bytes, slot: int, offset: int) -> MetaPage:
    """Parse the first :data:`META_BYTES` of a meta page read at ``offset``.

    ``raw`` may be short (the file ended); the result then says so in ``problem``.
    """
    full = raw[:META_BYTES].ljust(META_BYTES, b"\x00")
    _, _, page_flags, _, _ = _PAGE_HEADER.unpack_from(full)
    magic, version, _, map_size = _META_START.unpack_from(full, PAGE_HEADER_SIZE)
    free_db = DbRecord.unpack(full, _FREE_DB_AT)
    main_db = DbRecord.unpack(full, _MAIN_DB_AT)
    last_page, txnid = _META_END.unpack_from(full, _META_END_AT)
    meta = MetaPage(
        slot, offset, page_flags, magic, version, map_size, free_db.pad, free_db, main_db,
        last_page, txnid, None,
    )  # fmt: skip
    problem = _meta_problem(raw[:META_BYTES], meta)
    return meta if problem is None else replace(meta, problem=problem)


def _read_metas(fd: int) -> tuple[MetaPage, MetaPage]:
    """Both meta pages of an open data file, each valid or saying what is wrong with it.

    Meta page 1 sits one page after meta page 0, and the page size is written in the meta pages
    themselves: when meta page 0 is damaged, the place where meta page 1 agrees with its own
    page size tells the page size.
    """
    meta0 = parse_meta(os.pread(fd, META_BYTES, 0), 0, 0)
    first = meta0.page_size if _power_of_two_in_range(meta0.page_size) else _os_page_size()
    found: MetaPage | None = None
    for size in (first, *(size for size in PAGE_SIZES if size != first)):
        meta1 = parse_meta(os.pread(fd, META_BYTES, size), 1, size)
        if found is None or meta1.valid:
            found = meta1  # the first place is what to report when no place holds meta page 1
        if meta1.valid or meta0.valid:
            break  # a valid meta page 0 says where meta page 1 is
    assert found is not None
    if meta0.valid and not found.valid:
        # Meta page 1 is not where meta page 0 says: one of the two is wrong about the size.
        for size in PAGE_SIZES:
            if size == meta0.page_size:
                continue
            other = parse_meta(os.pread(fd, META_BYTES, size), 1, size)
            if other.valid:
                found = other
                break
    if meta0.valid and found.valid and found.page_size != meta0.page_size:
        problem = (
            f"its page size {meta0.page_size} disagrees with meta page 1, which sits at "
            f"byte {found.offset}"
        )
        meta0 = replace(meta0, problem=problem)
    return meta0, found


def _os_page_size() -> int:
    # LMDB 0.9 creates files with the OS page size: the best first guess for where meta 1 is.
    size = os.sysconf("SC_PAGE_SIZE")
    return size if _power_of_two_in_range(size) else 4096


def current_meta(metas: tuple[MetaPage, MetaPage]) -> MetaPage | None:
    """The valid meta page with the higher transaction id, as LMDB picks it; None if neither."""
    valid = [meta for meta in metas if meta.valid]
    return max(valid, key=lambda meta: meta.txnid) if valid else None


# -- the reader -------------------------------------------------------------------------------


class DataFile:
    """An LMDB data file opened for reading, page by page, without LMDB.

    Every read is bounded by the file's size as it was when opened. Use it as a context
    manager, or call :meth:`close`.

    Args:
        path: a store directory, or the ``data.mdb`` file itself.
        page_size: the page size to read with when neither meta page is valid; by default it
            is inferred from the page headers.

    Raises:
        StoreNotFoundError: no such file.
        StoreError: the file cannot be opened (permissions and the like).
        StoreCorruptedError: neither meta page is valid and the page size cannot be told.
        InvalidInputError: ``page_size`` is not a power of two from 512 to 65536.
    """

    def __init__(self, path: str | os.PathLike[str], *, page_size: int | None = None) -> None:
        location = Path(path)
        if location.is_dir():
            location = location / DATA_FILE
        self.path = str(location)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise StoreNotFoundError(f"no LMDB data file at {self.path}", path=self.path) from exc
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc.strerror}", path=self.path) from exc
        try:
            # The meta pages first, then the size: the file only grows, so a snapshot read
            # while another process commits never looks longer than the file.
            self.metas = _read_metas(self._fd)
            self.size = os.fstat(self._fd).st_size
            self.current = current_meta(self.metas)
            if self.current is not None:
                self.page_size = self.current.page_size
            elif page_size is not None:
                if not _power_of_two_in_range(page_size):
                    raise InvalidInputError(
                        f"page size {page_size} is not a power of two from {MIN_PAGE_SIZE} "
                        f"to {MAX_PAGE_SIZE}"
                    )
                self.page_size = page_size
            else:
                self.page_size = self._infer_page_size()
        except BaseException:
            os.close(self._fd)
            raise
        self.page_count = self.size // self.page_size
        """Pages wholly in the file: page numbers 0 .. page_count - 1 can be read."""

    def _infer_page_size(self) -> int:
        # Every page LMDB writes carries its own number: the size at which most sampled pages
        # name themselves is the page size.
        best, best_hits = 0, 0
        for size in PAGE_SIZES:
            hits = 0
            for pgno in range(META_PAGES, min(self.size // size, META_PAGES + _INFER_PAGES)):
                header = os.pread(self._fd, _PAGE_HEADER.size, pgno * size)
                number, _, flags, _, _ = _PAGE_HEADER.unpack(header)
                hits += number == pgno and flags in (P_BRANCH, P_LEAF, P_OVERFLOW)
            if hits > best_hits:
                best, best_hits = size, hits
        if not best_hits:
            problems = "; ".join(f"meta page {m.slot}: {m.problem}" for m in self.metas)
            raise StoreCorruptedError(
                f"{self.path} is not an LMDB data file, or is damaged beyond reading: "
                f"no valid meta page ({problems}) and no page header",
                path=self.path,
                hint="check the path; if this is a damaged store, restore a backup",
            )
        log.debug("%s: no valid meta page; pages name themselves at size %d", self.path, best)
        return best

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DataFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- pages and nodes ----------------------------------------------------------------------

    def _error(self, pgno: int, reason: str, index: int | None = None) -> PageError:
        return PageError(self.path, pgno, reason, index)

    def read_page(self, pgno: int) -> Page:
        """Read page ``pgno`` and check its header.

        Raises:
            PageError: the page is past the end of the file, or its header is not that of a
                page LMDB writes at this place (wrong number, unknown flags, free-space bounds
                or overflow run that do not fit).
        """
        size = self.page_size
        if not 0 <= pgno < self.page_count:
            raise self._error(
                pgno, f"past the end of the file ({self.page_count} pages of {size} bytes)"
            )
        raw = os.pread(self._fd, size, pgno * size)
        if len(raw) < size:
            raise self._error(pgno, f"only {len(raw)} of its {size} bytes could be read")
        number, _, flags, lower, upper = _PAGE_HEADER.unpack_from(raw)
        if number != pgno:
            if not raw.strip(b"\x00"):
                raise self._error(pgno, "all zero: never written, or wiped")
            raise self._error(pgno, f"its header names page {number}: not a page written here")
        overflow_pages = 0
        if flags in (P_BRANCH, P_LEAF):
            if not PAGE_HEADER_SIZE <= lower <= upper <= size or lower % 2:
                raise self._error(
                    pgno, f"free space bounds {lower}..{upper} do not fit a {size}-byte page"
                )
        elif flags == P_OVERFLOW:
            (overflow_pages,) = _OVERFLOW_COUNT.unpack_from(raw, 12)
            if not 1 <= overflow_pages <= self.page_count - pgno:
                raise self._error(
                    pgno,
                    f"overflow run of {overflow_pages} pages does not fit the file "
                    f"({self.page_count} pages)",
                )
        elif flags == P_META:
            if pgno >= META_PAGES:
                raise self._error(pgno, "a meta page header outside pages 0 and 1")
        elif flags & (P_LEAF2 | P_SUBP):
            raise self._error(
                pgno, f"a sorted-duplicates page (flags {flags:#06x}): not supported here"
            )
        else:
            raise self._error(pgno, f"unknown page flags {flags:#06x}")
        return Page(pgno, flags, lower, upper, overflow_pages, raw)

    def _node(self, page: Page, index: int) -> _Node:
        size = self.page_size
        (at,) = _U16.unpack_from(page.raw, PAGE_HEADER_SIZE + 2 * index)
        # LMDB packs nodes, 2-byte aligned, between the free space's upper bound and the end.
        if at < page.upper or at % 2 or at + NODE_HEADER_SIZE > size:
            raise self._error(
                page.pgno, f"starts at byte {at}, outside the node area {page.upper}..{size}", index
            )
        lo, hi, flags, key_size = _NODE.unpack_from(page.raw, at)
        if key_size > MAX_KEY_SIZE:
            raise self._error(
                page.pgno, f"key of {key_size} bytes, over LMDB's {MAX_KEY_SIZE}", index
            )
        key_end = at + NODE_HEADER_SIZE + key_size
        if key_end > size:
            raise self._error(page.pgno, f"key of {key_size} bytes runs past the page", index)
        return _Node(page.raw[at + NODE_HEADER_SIZE : key_end], flags, lo | hi << 16, key_end)

    def _child(self, page: Page, index: int) -> int:
        node = self._node(page, index)
        child = node.size | node.flags << 32
        if not META_PAGES <= child < self.page_count:
            raise self._error(
                page.pgno,
                f"points to page {child}, outside pages {META_PAGES}..{self.page_count - 1}",
                index,
            )
        return child

    def _leaf_item(self, page: Page, index: int) -> LeafItem:
        node = self._node(page, index)
        flags = node.flags
        if flags & ~_LEAF_NODE_FLAGS:
            raise self._error(page.pgno, f"node flags {flags:#06x} are not LMDB's", index)
        if flags & F_DUPDATA:
            raise self._error(page.pgno, "sorted duplicates (F_DUPDATA): not supported here", index)
        if not flags & F_BIGDATA:
            end = node.data_at + node.size
            if end > self.page_size:
                raise self._error(
                    page.pgno, f"value of {node.size} bytes runs past the page", index
                )
            value = page.raw[node.data_at : end]
            if flags & F_SUBDATA and len(value) != DB_RECORD_SIZE:
                raise self._error(
                    page.pgno, f"a named database record of {len(value)} bytes, not 48", index
                )
            return LeafItem(page.pgno, index, node.key, value, flags, None)
        if flags & F_SUBDATA or node.data_at + _U64.size > self.page_size:
            raise self._error(page.pgno, f"overflow reference with node flags {flags:#06x}", index)
        (first,) = _U64.unpack_from(page.raw, node.data_at)
        try:
            value = self._overflow_value(first, node.size)
        except PageError as exc:
            raise self._error(
                page.pgno, f"its {node.size}-byte value on page {first}: {exc.reason}", index
            ) from exc
        return LeafItem(page.pgno, index, node.key, value, flags, first)

    def _overflow_value(self, pgno: int, size: int) -> bytes:
        if not META_PAGES <= pgno < self.page_count:
            raise self._error(pgno, f"outside pages {META_PAGES}..{self.page_count - 1}")
        page = self.read_page(pgno)
        if page.flags != P_OVERFLOW:
            raise self._error(pgno, f"not an overflow page (flags {page.flags:#06x})")
        # LMDB sizes a run as OVPAGES(size); a run reused for a smaller value may be longer.
        needed = (PAGE_HEADER_SIZE - 1 + size) // self.page_size + 1
        if page.overflow_pages < needed:
            raise self._error(
                pgno, f"the run has {page.overflow_pages} of the {needed} pages the value needs"
            )
        if size <= self.page_size - PAGE_HEADER_SIZE:
            value = page.raw[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + size]
        else:
            value = os.pread(self._fd, size, pgno * self.page_size + PAGE_HEADER_SIZE)
        if len(value) != size:
            raise self._error(pgno, f"only {len(value)} of the value's {size} bytes could be read")
        return value

    # -- trees --------------------------------------------------------------------------------

    def walk(self, root: int) -> Iterator[LeafItem | Skipped]:
        """Every item of the B-tree whose root is page ``root``, in key order.

        A page or node that cannot be read is yielded as :class:`Skipped` and the walk goes
        on with the rest. A page reached twice (a cycle) or more than 64 levels down is
        skipped, so the walk always ends.
        """
        if root == P_INVALID:
            return
        yield from self._walk(root, 1, set())

    def _walk(self, pgno: int, depth: int, visited: set[int]) -> Iterator[LeafItem | Skipped]:
        if pgno in visited:
            yield Skipped(pgno, "reached a second time: the tree has a cycle")
            return
        if depth > MAX_DEPTH:
            yield Skipped(pgno, f"more than {MAX_DEPTH} levels below the root")
            return
        visited.add(pgno)
        try:
            page = self.read_page(pgno)
        except PageError as exc:
            yield exc.skipped()
            return
        if page.flags == P_LEAF:
            for index in range(page.node_count):
                try:
                    yield self._leaf_item(page, index)
                except PageError as exc:
                    yield exc.skipped()
        elif page.flags == P_BRANCH:
            for index in range(page.node_count):
                try:
                    child = self._child(page, index)
                except PageError as exc:
                    yield exc.skipped()
                    continue
                yield from self._walk(child, depth + 1, visited)
        else:
            yield Skipped(pgno, f"page flags {page.flags:#06x} where a branch or leaf belongs")

    def check_tree(self, record: DbRecord) -> list[Skipped]:
        """Check the shape of the B-tree ``record`` describes, without reading its values.

        What LMDB relies on and does not check: branch pages down to ``record.depth - 1``
        levels and leaf pages at the last level, keys rising across the whole tree and each
        inside the bounds its branch keys give it (LMDB's searches follow the branch keys: a
        damaged one sends a seek to the wrong leaf), nodes and child pointers inside their
        pages and the file, overflow runs that begin with an overflow page long enough for the
        value, and as many items as ``record.entries`` says. LMDB reading a tree that breaks
        these can abort the process (it asserts, say, that a cursor stepping right lands on a
        leaf) or seek forever; every problem is returned instead, one per page or node, and
        the check goes on past it.
        """
        if record.empty:
            return []
        check = _TreeCheck(self, record.depth)
        leaves = check.page(record.root, 1, (None, None))
        if not check.problems and leaves != record.entries:
            reason = f"the tree holds {leaves} items, its record says {record.entries}"
            check.problems.append(Skipped(record.root, reason))
        return check.problems

    def check_leaf_node(self, page: Page, index: int, node: _Node) -> None:
        """Raise PageError unless leaf node ``index`` and the value it points to fit."""
        if node.flags & ~_LEAF_NODE_FLAGS or node.flags & F_DUPDATA:
            raise self._error(page.pgno, f"node flags {node.flags:#06x} are not expected", index)
        if not node.flags & F_BIGDATA:
            if node.data_at + node.size > self.page_size:
                raise self._error(
                    page.pgno, f"value of {node.size} bytes runs past the page", index
                )
            return
        if node.data_at + _U64.size > self.page_size:
            raise self._error(page.pgno, "overflow reference runs past the page", index)
        (first,) = _U64.unpack_from(page.raw, node.data_at)
        if not META_PAGES <= first < self.page_count:
            raise self._error(page.pgno, f"its value is on page {first}, outside the file", index)
        run = self.read_page(first)
        needed = (PAGE_HEADER_SIZE - 1 + node.size) // self.page_size + 1
        if run.flags != P_OVERFLOW or run.overflow_pages < needed:
            raise self._error(
                page.pgno, f"its {node.size}-byte value does not fit the run at page {first}", index
            )

    def databases(self, meta: MetaPage | None = None) -> Catalog:
        """The named databases of the snapshot of ``meta`` (by default the current one).

        Raises:
            StoreCorruptedError: ``meta`` is not valid, or neither meta page is.
        """
        meta = self._usable(meta)
        found: dict[bytes, DbRecord] = {}
        skipped: list[Skipped] = []
        for item in self.walk(meta.main_db.root):
            if isinstance(item, Skipped):
                skipped.append(item)
            elif item.flags & F_SUBDATA:
                record = DbRecord.unpack(item.value)
                if record.empty or META_PAGES <= record.root <= meta.last_page:
                    found[item.key] = record
                else:
                    reason = (
                        f"database {item.key!r} has its root at page {record.root}, outside "
                        f"pages {META_PAGES}..{meta.last_page}"
                    )
                    skipped.append(Skipped(item.pgno, reason, item.index))
            # A plain key in the main database belongs to no named database: not ours.
        return Catalog(found, tuple(skipped))

    def free_pages(self, meta: MetaPage | None = None) -> FreeList:
        """The pages the free-page database of ``meta`` (by default the current one) lists.

        Raises:
            StoreCorruptedError: ``meta`` is not valid, or neither meta page is.
        """
        meta = self._usable(meta)
        pages: set[int] = set()
        skipped: list[Skipped] = []
        for item in self.walk(meta.free_db.root):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            value = item.value
            count = _U64.unpack_from(value)[0] if len(value) >= _U64.size else -1
            if not 0 <= count < len(value) // _U64.size:
                reason = f"a free-page list of {len(value)} bytes cannot hold {count} pages"
                skipped.append(Skipped(item.pgno, reason, item.index))
                continue
            pages.update(struct.unpack_from(f"<{count}Q", value, _U64.size))
        return FreeList(frozenset(pages), tuple(skipped))

    def _usable(self, meta: MetaPage | None) -> MetaPage:
        meta = self.current if meta is None else meta
        if meta is None or not meta.valid:
            problems = "; ".join(f"meta page {m.slot}: {m.problem}" for m in self.metas)
            raise StoreCorruptedError(
                f"{self.path} has no valid meta page to read from ({problems})",
                path=self.path,
                hint="scan the pages instead (`lmdbstate recover` does)",
            )
        return meta

    def scan(self) -> Iterator[LeafItem | Skipped]:
        """Every leaf item on every page from page 2 to the end of the file, in page order.

        This reads stale copies too (pages freed by later transactions keep their old
        contents), so a key may come more than once: the caller tells copies apart. Pages
        that cannot be read are yielded as :class:`Skipped`, except the pages of an overflow
        run, which hold a value rather than a header.
        """
        run_end = 0  # pages before this belong to the last overflow run seen
        for pgno in range(META_PAGES, self.page_count):
            try:
                page = self.read_page(pgno)
            except PageError as exc:
                if pgno >= run_end:
                    yield exc.skipped()
                continue
            # Pages inside a run are still read: a stale run's later pages may have been
            # reused as tree pages, and those carry a header naming themselves.
            if page.flags == P_OVERFLOW:
                run_end = max(run_end, pgno + page.overflow_pages)
            elif page.flags == P_LEAF:
                for index in range(page.node_count):
                    try:
                        yield self._leaf_item(page, index)
                    except PageError as exc:
                        yield exc.skipped()


class _TreeCheck:
    """One run of :meth:`DataFile.check_tree`: what it has seen and found so far."""

    def __init__(self, data: DataFile, depth: int) -> None:
        self.data = data
        self.depth = depth
        self.problems: list[Skipped] = []
        self.last_key: bytes | None = None
        self.visited: set[int] = set()

    def page(self, pgno: int, level: int, bounds: tuple[bytes | None, bytes | None]) -> int:
        """Check page ``pgno`` at ``level`` (1: the root) and what is below; return its items.

        Every key below must lie in ``bounds``: ``[low, high)``, None for no bound.
        """
        if pgno in self.visited:
            self.problems.append(Skipped(pgno, "reached a second time: the tree has a cycle"))
            return 0
        self.visited.add(pgno)
        try:
            page = self.data.read_page(pgno)
        except PageError as exc:
            self.problems.append(exc.skipped())
            return 0
        expected = P_LEAF if level == self.depth else P_BRANCH
        if page.flags != expected or level > self.depth:
            kind = "leaf" if expected == P_LEAF else "branch"
            reason = f"flags {page.flags:#06x} at level {level} of {self.depth}: not a {kind}"
            self.problems.append(Skipped(pgno, reason))
            return 0
        if expected == P_BRANCH:
            return self.branch(page, level, bounds)
        return self.leaf(page, bounds)

    def branch(self, page: Page, level: int, bounds: tuple[bytes | None, bytes | None]) -> int:
        """Check a branch page's children, each within the keys its neighbours give it."""
        # Node 0's key is not used (LMDB leaves it empty); node i > 0's key is the lowest key
        # below child i and above everything below child i - 1.
        children: list[tuple[int, bytes | None]] = []
        for index in range(page.node_count):
            try:
                child = self.data._child(page, index)
                key = None if index == 0 else self.data._node(page, index).key
            except PageError as exc:
                self.problems.append(exc.skipped())
                return 0
            children.append((child, key))
        low, high = bounds
        items = 0
        for index, (child, key) in enumerate(children):
            child_low = low if key is None else key
            child_high = children[index + 1][1] if index + 1 < len(children) else high
            items += self.page(child, level + 1, (child_low, child_high))
        return items

    def leaf(self, page: Page, bounds: tuple[bytes | None, bytes | None]) -> int:
        """Check a leaf page's nodes and keys; return how many items it holds."""
        low, high = bounds
        items = 0
        for index in range(page.node_count):
            try:
                node = self.data._node(page, index)
                self.data.check_leaf_node(page, index, node)
            except PageError as exc:
                self.problems.append(exc.skipped())
                continue
            if self.last_key is not None and node.key <= self.last_key:
                reason = "its key does not sort after the one before"
                self.problems.append(Skipped(page.pgno, reason, index))
            elif (low is not None and node.key < low) or (high is not None and node.key >= high):
                reason = "its key is outside its branch keys' range"
                self.problems.append(Skipped(page.pgno, reason, index))
            self.last_key = node.key
            items += 1
        return items


def mirror_meta(path: str | os.PathLike[str], txnid: int) -> None:
    """Make both meta pages of a compacted copy describe its data, as of transaction ``txnid``.

    LMDB's compacting copy writes the data under meta page 1 with transaction id 1 and leaves
    meta page 0 empty (transaction 0). Put in place of a store's file, the copy meets the store's
    old lock.mdb whenever a process opened the store meanwhile: that process keeps the lock
    table's transaction id (the store's last, ``txnid``) and reads the meta page of that id's
    parity. Here the meta page of ``txnid``'s parity gets the data and ``txnid``, the other the
    data and ``txnid - 1``, so that either way, and for a process that rebuilds the lock table
    from the file, the snapshot read is the copy's, and its transaction id is the lock table's.

    Raises:
        StoreCorruptedError: the file is not such a copy (meta page 1 is not the valid newer one).
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        metas = _read_metas(fd)
        newest = current_meta(metas)
        if newest is None or newest.slot != 1 or not metas[0].valid or metas[0].txnid != 0:
            raise StoreCorruptedError(
                f"{path} is not a fresh compacted copy: its meta pages are not as LMDB writes them",
                path=os.fspath(path),
            )
        txnid = max(txnid, 1)
        body = os.pread(fd, _META_END_AT - PAGE_HEADER_SIZE, newest.offset + PAGE_HEADER_SIZE)
        for meta in metas:
            page_txnid = txnid if meta.slot == txnid % 2 else txnid - 1
            offset = meta.slot * newest.page_size + PAGE_HEADER_SIZE
            os.pwrite(fd, body + _META_END.pack(newest.last_page, page_txnid), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- preflight --------------------------------------------------------------------------------


def lock_holders(inode: int) -> list[tuple[str, int, int]] | None:
    """The POSIX locks held on the file with this inode: (READ or WRITE, first byte, pid) each.

    Read from /proc/locks, never by taking a lock: opening and closing lock.mdb here would drop
    every lock this process holds on it (POSIX record locks belong to the process), including
    LMDB's own. None when /proc/locks cannot be read.
    """
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    held = []
    suffix = f":{inode}"
    for line in lines:
        fields = line.split()
        # "1: POSIX ADVISORY READ 4242 fe:00:2149881 0 0"; blocked requests carry a "->".
        if len(fields) >= 8 and "->" not in fields and fields[5].endswith(suffix):
            start, pid = fields[6], fields[4]
            held.append(
                (fields[3], int(start) if start.isdigit() else -1, int(pid) if pid.isdigit() else 0)
            )
    return held


def _check_lock_file(directory: str) -> None:
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        found = os.stat(lock_path)
    except FileNotFoundError:
        return  # LMDB creates it
    if not stat.S_ISREG(found.st_mode):
        raise StoreCorruptedError(
            f"store {directory} is damaged: lock.mdb is not a regular file",
            path=directory,
            hint="remove it: LMDB creates lock.mdb again when it opens the store",
        )
    if found.st_size >= LOCK_HEADER_SIZE:
        return
    # The first process to open a store rebuilds lock.mdb whatever it holds. A later one reads
    # it as the lock table the others use: shorter than its header, the reader count it works
    # out wraps around and LMDB crashes (SIGSEGV, measured). Others hold a shared lock on byte 0
    # while they have the store open; a creator still setting the file up holds an exclusive
    # one, and LMDB waits for it.
    holders = lock_holders(found.st_ino)
    if holders is not None and not any(kind == "READ" and start == 0 for kind, start, _ in holders):
        return
    why = (
        "while another process has the store open"
        if holders is not None
        else "and /proc/locks cannot tell whether another process has the store open"
    )
    raise StoreCorruptedError(
        f"store {directory} is damaged: lock.mdb is {found.st_size} bytes, shorter than LMDB's "
        f"{LOCK_HEADER_SIZE}-byte lock table header, {why}: opening the store now would crash "
        f"this process",
        path=directory,
        hint="stop the processes using the store, then open it: the first opener rebuilds lock.mdb",
    )


def _creation_in_progress(directory: str, metas: tuple[MetaPage, MetaPage]) -> bool:
    """Whether another process may be creating the store right now.

    LMDB creates lock.mdb first and holds a lock on it while it writes the two meta pages of a
    new data.mdb; a concurrent opener sees an empty or half-written file. LMDB itself waits for
    the creator. Deferring to it is safe whenever no transaction was ever committed: a
    snapshot of transaction 0 uses pages 0 and 1 only, so LMDB cannot read past the file.
    """
    if any(meta.valid and meta.txnid != 0 for meta in metas):
        return False
    try:
        inode = os.stat(os.path.join(directory, LOCK_FILE)).st_ino
    except OSError:
        return False
    return bool(lock_holders(inode))


def _verdict(
    directory: str, data_path: str, fd: int, metas: tuple[MetaPage, MetaPage]
) -> StoreError | None:
    """What is wrong with the data file, as an error to raise; None when LMDB can map it."""
    size = os.fstat(fd).st_size  # after the meta pages were read: see DataFile.__init__
    if size == 0:
        return StoreCorruptedError(
            f"store {directory} is damaged: data.mdb is empty (0 bytes), it holds no LMDB "
            f"environment",
            path=directory,
            hint=(
                "if a process died while creating this store, nothing was lost: delete "
                "the directory and open it again; otherwise restore a backup"
            ),
        )
    if size < META_BYTES:
        return StoreCorruptedError(
            f"store {directory} is damaged: data.mdb is {size} bytes, too short to hold even "
            f"one LMDB meta page",
            path=directory,
            hint="restore a backup if there is one; the file holds nothing to recover",
        )
    meta0, meta1 = metas
    current = current_meta(metas)
    if current is None:
        if all(meta.magic == MAGIC and meta.version != DATA_VERSION for meta in metas):
            return UnsupportedFormatError(
                f"store {directory}: data.mdb is in LMDB data format version {meta0.version}; "
                f"this LMDB reads version {DATA_VERSION}",
                path=directory,
            )
        return StoreCorruptedError(
            f"store {directory} is damaged: data.mdb has no valid LMDB meta page: meta page 0: "
            f"{meta0.problem}; meta page 1: {meta1.problem}",
            path=directory,
            hint=(
                "check the path; if this was a store, restore a backup, or let "
                "`lmdbstate recover` scan its pages for intact checkpoints"
            ),
        )
    damaged = next((meta for meta in metas if not meta.valid), None)
    if damaged is not None:
        return StoreCorruptedError(
            f"store {directory} is damaged: meta page {damaged.slot} of data.mdb: "
            f"{damaged.problem}; LMDB refuses the whole store for it, although meta page "
            f"{current.slot} is intact",
            path=directory,
            hint=(
                f"`lmdbstate recover` can get back every checkpoint committed up to "
                f"transaction {current.txnid}: meta page {current.slot} and the snapshot it "
                f"points to are intact"
            ),
        )
    page_size = current.page_size
    needed = (current.last_page + 1) * page_size
    if size >= needed:
        return None
    missing = range(size // page_size, current.last_page + 1)
    if _all_free(data_path, page_size, current, missing):
        # LMDB never writes a page it allocated and freed again in one transaction: when
        # such a page is the last one, the file ends before it. LMDB never reads free pages.
        log.debug("%s ends before page %d, which is free", data_path, current.last_page)
        return None
    return StoreCorruptedError(
        f"store {directory} is damaged: data.mdb is truncated, {size} bytes, but transaction "
        f"{current.txnid} (meta page {current.slot}) uses pages 0..{current.last_page} of "
        f"{page_size} bytes, {needed} bytes; LMDB would crash the process (SIGBUS) on the "
        f"missing pages",
        path=directory,
        hint=(
            "restore a backup if there is one; `lmdbstate recover` salvages the checkpoints "
            "on the pages that remain"
        ),
    )


def _all_free(data_path: str, page_size: int, meta: MetaPage, pages: range) -> bool:
    try:
        with DataFile(data_path, page_size=page_size) as data:
            free = data.free_pages(meta)
    except StoreError:
        return False
    return not free.skipped and all(pgno in free.pages for pgno in pages)


def preflight(path: str | os.PathLike[str]) -> None:
    """Check a store's files before LMDB maps them, so that damage is a typed error, not a crash.

    A store without ``data.mdb`` passes: LMDB creates it. Otherwise both meta pages must be
    valid (LMDB refuses a store with one damaged meta page, with a vague error), and the file
    must hold every page of the current snapshot (LMDB would otherwise die of SIGBUS). A
    ``lock.mdb`` shorter than LMDB's lock table header is refused only while another process
    has the store open; the first opener rebuilds it. Costs two reads of 152 bytes and three
    stats, unless something is wrong.

    Raises:
        StoreCorruptedError: the files cannot be opened safely; the message says what is
            wrong and the hint what to do.
        UnsupportedFormatError: ``data.mdb`` is an LMDB file of another data format version.
    """
    directory = os.fspath(path)
    data_path = os.path.join(directory, DATA_FILE)
    try:
        found = os.stat(data_path)
    except OSError:
        return  # no data.mdb yet (LMDB creates it), or one LMDB will report on (permissions)
    if not stat.S_ISREG(found.st_mode):
        raise StoreCorruptedError(
            f"store {directory} is damaged: data.mdb is not a regular file",
            path=directory,
            hint="a store is a directory holding the files data.mdb and lock.mdb",
        )
    try:
        fd = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        problem = _read_verdict(directory, data_path, fd)
    finally:
        os.close(fd)
    if problem is not None:
        raise problem
    _check_lock_file(directory)


def _read_verdict(directory: str, data_path: str, fd: int) -> StoreError | None:
    for _ in range(_PREFLIGHT_ATTEMPTS):
        metas = _read_metas(fd)
        problem = _verdict(directory, data_path, fd, metas)
        if problem is None:
            return None
        # A meta page read while another process writes it can be torn, and a commit between
        # reading the meta pages and the free-page list changes both: judge only what stayed.
        if _read_metas(fd) == metas:
            break
    if _creation_in_progress(directory, metas):
        log.debug("%s is being created by another process; LMDB waits for it", data_path)
        return None
    return problem
