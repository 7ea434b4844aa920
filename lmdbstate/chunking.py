"""Record format 2's chunking: a state's long lists kept as content-addressed chunks (pure).

docs/format2-design.md explains the choice. A list of at least ``MIN_ITEMS`` items among the
values of the state's top-level map becomes a *list node*:

- each element, packed on its own by the codec, is a chunk keyed by the xxh3-128 of its bytes;
- the node, a chunk too, is ``[previous node digest or nil, [element digests]]``. A list that
  extends the list the same key held in the workflow's previous checkpoint names that
  checkpoint's node and only the new elements; every ``FLAT_EVERY``-th node is *flat* (no
  previous node, every element), so that a read follows at most ``FLAT_EVERY`` nodes;
- in the record, the list is replaced by a ``ListRef`` (codec extension ``EXT_LIST_NODE``)
  naming its node.

Reading joins the elements' bytes behind one array header and decodes the list in one codec
call, so a chunked list costs about what the same list costs inline. Everything here is pure:
the store fetches and writes the chunks, and keeps their reference counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


def digest_of(payload: bytes) -> bytes:
    """A chunk's key: the xxh3-128 of its bytes."""
    return xxhash.xxh3_128_digest(payload)


@dataclass(frozen=True, slots=True)
class ListNode:
    """A chunked list as a checkpoint stored it: what the next checkpoint's list may extend."""

    digest: bytes
    """The node chunk's key."""
    items: tuple[bytes, ...]
    """The digest of every element, in order."""
    depth: int
    """Nodes between this one and the flat node its chain starts from (0: it is flat)."""


@dataclass(frozen=True, slots=True)
class Chunked:
    """A state split for a format-2 record."""

    state: dict[Any, object]
    """The top-level map, each chunked list replaced by a ``ListRef``."""
    chunks: dict[bytes, bytes] = field(default_factory=dict)
    """Every element and node chunk the split made, by digest (the store writes the missing)."""
    links: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    """For each node made: the chunks it references (its previous node and its elements)."""
    lists: dict[Any, ListNode] = field(default_factory=dict)
    """Each chunked list's node, by key: what the workflow's next checkpoint may extend."""

    @property
    def refs(self) -> tuple[bytes, ...]:
        """The node chunks the record itself references."""
        return tuple(node.digest for node in self.lists.values())


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


def split(state: object, previous: Mapping[Any, ListNode]) -> Chunked | None:
    """Split ``state``'s long lists into chunks; None when it has none (the body stays inline).

    Args:
        state: the state to store.
        previous: the ``lists`` of the workflow's previous checkpoint (empty when unknown).

    Raises:
        CodecError: an element holds something the codec cannot carry.
    """
    if type(state) is not dict or not any(_chunkable(value) for value in state.values()):
        return None
    split_state: dict[Any, object] = {}
    chunked = Chunked(split_state)
    for key, value in state.items():
        if _chunkable(value):
            assert isinstance(value, list)
            node = _list_node(key, value, previous.get(key), chunked)
            chunked.lists[key] = node
            split_state[key] = ListRef(node.digest)
        else:
            split_state[key] = value
    return chunked


def _chunkable(value: object) -> bool:
    return type(value) is list and len(value) >= MIN_ITEMS


def _list_node(key: object, items: list[Any], before: ListNode | None, out: Chunked) -> ListNode:
    digests = []
    for index, item in enumerate(items):
        payload = codec.encode(item, root=f"state[{key!r}][{index}]")
        digest = digest_of(payload)
        out.chunks[digest] = payload
        digests.append(digest)
    extends = (
        before is not None
        and len(digests) >= len(before.items)
        and tuple(digests[: len(before.items)]) == before.items
    )
    if before is not None and extends and len(digests) == len(before.items):
        return before  # the same list: the record names the same node
    if before is not None and extends and before.depth + 1 < FLAT_EVERY:
        new = digests[len(before.items) :]
        payload = encode_node(before.digest, new)
        node = ListNode(digest_of(payload), tuple(digests), before.depth + 1)
        out.links[node.digest] = (before.digest, *new)
    else:
        payload = encode_node(None, digests)
        node = ListNode(digest_of(payload), tuple(digests), 0)
        out.links[node.digest] = tuple(digests)
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


def join(state: object, fetch: Callable[[bytes], bytes]) -> object:
    """``state`` as stored before ``split``: each ``ListRef`` of its top-level map rebuilt.

    ``fetch`` returns a chunk's bytes by digest (checked against its digest by the store).

    Raises:
        CodecError: a chunk cannot be decoded.
    """
    if type(state) is not dict:
        return state
    return {
        key: _joined(value, fetch) if isinstance(value, ListRef) else value
        for key, value in state.items()
    }


def _joined(ref: ListRef, fetch: Callable[[bytes], bytes]) -> list[Any]:
    items = list_items(ref.digest, fetch)
    header = msgpack.Packer().pack_array_header(len(items))
    joined: list[Any] = codec.decode(header + b"".join(fetch(item) for item in items))
    return joined
