"""lmdbstate: crash-safe workflow checkpoints in LMDB, with integrity checks on every read."""

from importlib.metadata import PackageNotFoundError, version

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
    __version__ = version("lmdbstate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
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
