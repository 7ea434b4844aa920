"""lmdbstate: crash-safe workflow checkpoints in LMDB, with integrity checks on every read."""

from importlib import metadata as _metadata

from .errors import (
    CheckpointNotFoundError,
    CodecError,
    ConfigError,
    ForkedStoreError,
    IntegrityError,
    InvalidInputError,
    InvalidSeqError,
    InvalidStatusError,
    InvalidWorkflowIdError,
    LmdbStateError,
    NotFoundError,
    ReadOnlyStoreError,
    SequenceConflictError,
    StoreClosedError,
    StoreCorruptedError,
    StoreDiskFullError,
    StoreError,
    StoreFullError,
    StoreInUseError,
    StoreNotFoundError,
    UnsupportedFormatError,
    WorkflowNotFoundError,
)
from .models import Checkpoint, CheckpointInfo, StoreStats, WorkflowInfo
from .store import Batch, CheckpointStore

try:
    __version__ = _metadata.version("lmdbstate")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "Batch",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "CodecError",
    "ConfigError",
    "ForkedStoreError",
    "IntegrityError",
    "InvalidInputError",
    "InvalidSeqError",
    "InvalidStatusError",
    "InvalidWorkflowIdError",
    "LmdbStateError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "SequenceConflictError",
    "StoreClosedError",
    "StoreCorruptedError",
    "StoreDiskFullError",
    "StoreError",
    "StoreFullError",
    "StoreInUseError",
    "StoreNotFoundError",
    "StoreStats",
    "UnsupportedFormatError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "__version__",
]
