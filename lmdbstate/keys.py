r"""Workflow-id validation and the byte layout of keys (DESIGN section 3).

A checkpoint key is ``workflow_id_utf8 + b"\x00" + seq.to_bytes(8, "big")``. Workflow ids hold
no NUL, so the checkpoints of one workflow are contiguous and sorted by seq, and they all lie in
``[workflow_id_utf8 + b"\x00", workflow_id_utf8 + b"\x01")``.
"""

from __future__ import annotations

from .errors import InvalidSeqError, InvalidWorkflowIdError

MAX_WORKFLOW_ID_BYTES = 494
"""LMDB's 511-byte key limit, less what the longest key holding an id adds to it: an ``age`` key
is the 8-byte creation time, then the ``ckpt`` key (the id, the separator, the 8-byte seq)."""

SEQ_BYTES = 8
MAX_SEQ = (1 << (8 * SEQ_BYTES)) - 1
_SEPARATOR = b"\x00"
_AFTER_SEPARATOR = b"\x01"
_CREATED_BYTES = 8


def encode_workflow_id(workflow_id: object) -> bytes:
    """Validate a workflow id and return its UTF-8 bytes.

    Raises:
        InvalidWorkflowIdError: not a str, empty, longer than 494 UTF-8 bytes, holding a NUL,
            or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(workflow_id, str):
        raise InvalidWorkflowIdError(workflow_id, f"expected str, got {type(workflow_id).__name__}")
    try:
        raw = workflow_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidWorkflowIdError(workflow_id, "not encodable as UTF-8") from exc
    if not raw:
        raise InvalidWorkflowIdError(workflow_id, "empty")
    if len(raw) > MAX_WORKFLOW_ID_BYTES:
        raise InvalidWorkflowIdError(
            workflow_id, f"{len(raw)} UTF-8 bytes, more than {MAX_WORKFLOW_ID_BYTES}"
        )
    if _SEPARATOR in raw:
        raise InvalidWorkflowIdError(workflow_id, "contains a NUL character")
    return raw


def validate_seq(seq: object) -> int:
    """Return ``seq`` if it is an int in ``[1, 2**64)``; bools are refused.

    Raises:
        InvalidSeqError: anything else.
    """
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise InvalidSeqError(seq)
    return seq


def checkpoint_key(workflow_key: bytes, seq: int) -> bytes:
    """The ``ckpt`` key of checkpoint ``seq`` of the workflow whose id is ``workflow_key``."""
    return workflow_key + _SEPARATOR + seq.to_bytes(SEQ_BYTES, "big")


def split_checkpoint_key(key: bytes) -> tuple[bytes, int]:
    """Split a ``ckpt`` key into the workflow id bytes and the seq."""
    return key[: -SEQ_BYTES - 1], int.from_bytes(key[-SEQ_BYTES:], "big")


def seq_of(key: bytes) -> int:
    """The seq at the end of a ``ckpt`` key."""
    return int.from_bytes(key[-SEQ_BYTES:], "big")


def workflow_bounds(workflow_key: bytes) -> tuple[bytes, bytes]:
    """The half-open ``ckpt`` key range ``[low, high)`` holding every checkpoint of a workflow."""
    return workflow_key + _SEPARATOR, workflow_key + _AFTER_SEPARATOR


def age_key(created_ns: int, ckpt_key: bytes) -> bytes:
    """The ``age`` index key: creation time first, so a scan runs oldest first."""
    return created_ns.to_bytes(_CREATED_BYTES, "big") + ckpt_key


def split_age_key(key: bytes) -> tuple[int, bytes]:
    """Split an ``age`` key into created_ns and the ``ckpt`` key it points at."""
    return int.from_bytes(key[:_CREATED_BYTES], "big"), key[_CREATED_BYTES:]
