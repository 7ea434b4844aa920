"""Record format 2's chunking: a state's long lists kept as content-addressed chunks (pure).

docs/format2-design.md explains the choice. A list of at least ``MIN_ITEMS`` items among the
values of the state's top-level map becomes a *list node*:

- each element, packed on its own by the codec, is a chunk keyed by the xxh3-128 of its bytes;
- the node, a chunk too (keyed by the xxh3-128 of ``b"N"`` and its bytes, apart from every
  element), is ``[previous node digest or nil, [element digests]]``. A list that
  extends the list the same key held in the workflow's previous checkpoint names that
  checkpoint's node and only the new elements; every ``FLAT_EVERY``-th node is *flat* (no
  previous node, every element), so that a read follows at most ``FLAT_EVERY`` nodes;
- in the record, the list is replaced by a ``ListRef`` (codec extension ``EXT_LIST_REF``)
  naming its node.

Reading joins the elements' bytes behind one array header and decodes the list in one codec
call, so a chunked list costs about what the same list costs inline. Everything here is pure:
the store fetches and writes the chunks, and keeps their reference counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import xxhash

from . import codec
from .codec import ListRef
from .errors import CodecError

MIN_ITEMS = 8
"""Lists shorter than this stay inline: a chunk costs a key, a count and a B-tree node."""
INLINE_LIMIT = 2048
"""Bodies shorter than this (in bytes, as format 1 encodes them) are stored whole: splitting
them would cost CPU on every put and save little."""
FLAT_EVERY = 16
"""A flat node at least every this many nodes: a read follows at most this many."""
DIGEST_SIZE = 16
_ARRAY_HEADER = msgpack.Packer()
_LIST_REF = bytes((0xD8, codec.EXT_LIST_REF))
"""msgpack's fixext 16 header for a ``ListRef``: its 16-byte digest follows."""


def digest_of(payload: bytes) -> bytes:
    """An element chunk's key: the xxh3-128 of its bytes."""
    return xxhash.xxh3_128_digest(payload)


def node_digest(payload: bytes) -> bytes:
    """A list node's key: the xxh3-128 of ``b"N"`` and its bytes.

    Apart from every element's key: an element is one msgpack value, so no element's bytes are
    ``b"N"`` followed by more, and a list element holding a node's bytes is not taken for it.
    """
    return xxhash.xxh3_128_digest(b"N" + payload)


@dataclass(frozen=True, slots=True)
class ListNode:
    """A chunked list as a checkpoint stored it: what the next checkpoint's list may extend."""

    digest: bytes
    """The node chunk's key."""
    items: tuple[bytes, ...]
    """The digest of every element, in order."""
    depth: int
    """Nodes between this one and the flat node its chain starts from (0: it is flat)."""
    packed_size: int
    """Bytes of the elements as msgpack packed them in the list (after the array header)."""
    packed_digest: bytes
    """xxh3-128 of those bytes: a list that begins with them begins with these elements."""


@dataclass(slots=True)
class Chunked:
    """A state split for a format-2 record."""

    body: bytes
    """The record body holding ``state``."""
    chunks: dict[bytes, bytes] = field(default_factory=dict)
    """Every element and node chunk the split made, by digest (the store writes the missing)."""
    links: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    """For each node made: the chunks it references (its previous node and its elements)."""
    lists: dict[Any, ListNode] = field(default_factory=dict)
    """Each chunked list's node, by key: what the workflow's next checkpoint may extend."""
    packed: dict[bytes, bytes] = field(default_factory=dict)
    """Each chunked list as msgpack packed it (array header and elements), by node digest."""

    @property
    def refs(self) -> tuple[bytes, ...]:
        """The node chunks the record itself references."""
        return tuple(node.digest for node in self.lists.values())

    def named(self) -> set[bytes]:
        """Every chunk storing this split may touch: the record's nodes and what they name."""
        return {link for links in self.links.values() for link in links} | set(self.refs)


class RecentLists:
    """Each workflow's chunked lists as this process last wrote them, for at most ``limit``.

    The next put of a workflow extends them. Forgetting is always safe: a put that finds no
    entry writes flat nodes.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._lists: dict[str, Mapping[Any, ListNode]] = {}

    def get(self, workflow_id: str) -> Mapping[Any, ListNode]:
        """The lists to extend (empty: none known)."""
        return self._lists.get(workflow_id, {})

    def remember(self, workflow_id: str, chunked: Chunked | None) -> None:
        """Note what a put of ``workflow_id`` just wrote (None: it wrote no chunked list)."""
        if chunked is None:
            self._lists.pop(workflow_id, None)
            return
        if len(self._lists) >= self._limit and workflow_id not in self._lists:
            self._lists.clear()  # the next put of each workflow writes a flat node
        self._lists[workflow_id] = chunked.lists

    def forget(self, workflow_id: str) -> None:
        """Drop what is known of ``workflow_id`` (its put failed, or it was deleted)."""
        self._lists.pop(workflow_id, None)


def split(body: bytes, previous: Mapping[Any, ListNode]) -> Chunked | None:
    """Split the long lists of the state in ``body`` into chunks; None when it has none.

    ``body`` is a record body as ``records.encode_body`` makes it (a map whose ``state`` entry
    packs the state). Everything is read from it, never from the state object (which its
    caller may have changed since): each element's bytes are those msgpack wrote for it inside
    the list, so nothing is encoded twice. A list whose packed bytes begin with those of the
    list under the same key in ``previous`` is parsed from where those end.

    Args:
        body: the format-1 body holding the state.
        previous: the ``lists`` of the workflow's previous checkpoint (empty when unknown).
    """
    walk = _Walk(body)
    for _ in range(walk.unpacker.read_map_header()):
        if walk.unpacker.unpack() == "state":
            break
        walk.unpacker.skip()
    else:
        return None
    if not _MAP_FIRST_BYTES[body[walk.tell()]]:
        return None  # a state that is not a map keeps its lists inline
    chunked = Chunked(b"")
    pieces: list[bytes] = []
    done = 0
    for _ in range(walk.unpacker.read_map_header()):
        key_start = walk.tell()
        walk.unpacker.skip()
        start = walk.tell()
        if not _ARRAY_FIRST_BYTES[body[start]]:
            walk.unpacker.skip()
            continue
        count = walk.unpacker.read_array_header()
        if count < MIN_ITEMS:
            for _ in range(count):
                walk.unpacker.skip()
            continue
        key = codec.decode(body[key_start:start])
        node = _list_node(walk, count, previous.get(key), chunked)
        chunked.lists[key] = node
        chunked.packed[node.digest] = body[start : walk.tell()]
        pieces += (body[done:start], _LIST_REF + node.digest)  # as the codec packs a ListRef
        done = walk.tell()
    if not chunked.lists:
        return None
    pieces.append(body[done:])
    chunked.body = b"".join(pieces)
    return chunked


def _first_bytes(*ranges: tuple[int, int]) -> tuple[bool, ...]:
    return tuple(any(low <= byte <= high for low, high in ranges) for byte in range(256))


_MAP_FIRST_BYTES = _first_bytes((0x80, 0x8F), (0xDE, 0xDF))
"""The first bytes of a msgpack map: fixmap, map 16, map 32."""
_ARRAY_FIRST_BYTES = _first_bytes((0x90, 0x9F), (0xDC, 0xDD))
"""The first bytes of a msgpack array: fixarray, array 16, array 32."""


class _Walk:
    """An unpacker over ``body`` that can jump ahead: offsets are from the body's start."""

    __slots__ = ("base", "body", "unpacker")

    def __init__(self, body: bytes, base: int = 0) -> None:
        self.body = body
        self.jump(base)

    def jump(self, offset: int) -> None:
        self.base = offset
        self.unpacker = msgpack.Unpacker(max_buffer_size=max(len(self.body) - offset, 1))
        self.unpacker.feed(memoryview(self.body)[offset:])

    def tell(self) -> int:
        position: int = self.base + self.unpacker.tell()
        return position


def _list_node(walk: _Walk, count: int, before: ListNode | None, out: Chunked) -> ListNode:
    """Read the ``count`` items at ``walk`` (left past them) and make their node.

    The node extends ``before`` when the list begins with its items.
    """
    body = walk.body
    first = walk.tell()
    digests: list[bytes] = []
    if (
        before is not None
        and count >= len(before.items)
        and digest_of(body[first : first + before.packed_size]) == before.packed_digest
    ):
        digests += before.items  # the same elements, packed the same: not read again
        walk.jump(first + before.packed_size)
    else:
        before = None
    for _ in range(count - len(digests)):
        begin = walk.tell()
        walk.unpacker.skip()
        payload = body[begin : walk.tell()]
        digest = digest_of(payload)
        out.chunks[digest] = payload
        digests.append(digest)
    size = walk.tell() - first
    packed_digest = digest_of(body[first : first + size])
    if before is not None and count == len(before.items):
        return before  # the same list: the record names the same node
    if before is not None and before.depth + 1 < FLAT_EVERY:
        new = digests[len(before.items) :]
        payload = encode_node(before.digest, new)
        depth = before.depth + 1
        links: tuple[bytes, ...] = (before.digest, *new)
    else:
        payload = encode_node(None, digests)
        depth = 0
        links = tuple(digests)
    node = ListNode(node_digest(payload), tuple(digests), depth, size, packed_digest)
    out.links[node.digest] = links
    out.chunks[node.digest] = payload
    return node


def encode_node(previous: bytes | None, items: list[bytes]) -> bytes:
    """A node chunk's bytes: its previous node (None for a flat node) and its element digests."""
    packed: bytes = msgpack.packb([previous, items], use_bin_type=True)
    return packed


def decode_node(payload: bytes | memoryview) -> tuple[bytes | None, list[bytes]]:
    """The previous node and element digests of a node chunk.

    Raises:
        CodecError: the payload is not a node.
    """
    try:
        previous, items = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises many unrelated types for malformed input
        raise CodecError("list node", f"cannot decode: {exc}") from exc
    if not (previous is None or _is_digest(previous)) or not isinstance(items, list):
        raise CodecError("list node", "not a list node")
    if not all(_is_digest(item) for item in items):
        raise CodecError("list node", "an element digest is not 16 bytes")
    return previous, items


def _is_digest(value: object) -> bool:
    return type(value) is bytes and len(value) == DIGEST_SIZE


def list_items(digest: bytes, fetch: Callable[[bytes], bytes]) -> list[bytes]:
    """Every element digest of the list whose node is ``digest``, following previous nodes.

    Raises:
        CodecError: a node cannot be decoded, or the chain is longer than any writer makes.
    """
    tails: list[list[bytes]] = []
    node: bytes | None = digest
    while node is not None:
        if len(tails) > FLAT_EVERY:
            raise CodecError("list node", f"a chain of more than {FLAT_EVERY} nodes")
        node, items = decode_node(fetch(node))
        tails.append(items)
    return [item for tail in reversed(tails) for item in tail]


class ChunkSource(Protocol):
    """Where ``join`` reads chunks: the store's tables through a read transaction."""

    def payload(self, digest: bytes) -> bytes:
        """A chunk's bytes, checked against ``digest``."""
        ...

    def packed_list(self, node: bytes) -> bytes:
        """The list whose node is ``node`` as msgpack packs it: array header, then elements."""
        ...


def join(state: object, source: ChunkSource) -> object:
    """``state`` as stored before ``split``: each ``ListRef`` of its top-level map rebuilt.

    Raises:
        CodecError: a chunk cannot be decoded.
    """
    if type(state) is not dict:
        return state
    return {
        key: _joined(value, source) if isinstance(value, ListRef) else value
        for key, value in state.items()
    }


def _joined(ref: ListRef, source: ChunkSource) -> list[Any]:
    joined: list[Any] = codec.decode(source.packed_list(ref.digest))
    return joined


def pack_list(items: Sequence[bytes], payload: Callable[[bytes], bytes]) -> bytes:
    """The msgpack array of the elements ``items`` names, their bytes read by ``payload``."""
    header: bytes = _ARRAY_HEADER.pack_array_header(len(items))
    return header + b"".join([payload(item) for item in items])
