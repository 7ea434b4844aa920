"""lmdbstate: crash-safe workflow checkpoints in LMDB, with integrity checks on every read."""

from importlib import metadata as _metadata

from .config import Config, ConfigWatcher, load_config
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
from .memory import MEMORY_PATH
from .models import (
    Checkpoint,
    CheckpointInfo,
    DamagedRecord,
    IndexProblem,
    RecoverReport,
    RepairReport,
    StoreStats,
    VerifyReport,
    WorkflowInfo,
    WorkflowRecovery,
)
from .store import Batch, CheckpointStore, recover

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
    "Config",
    "ConfigError",
    "ConfigWatcher",
    "DamagedRecord",
    "ForkedStoreError",
    "IndexProblem",
    "IntegrityError",
    "InvalidInputError",
    "InvalidSeqError",
    "InvalidStatusError",
    "InvalidWorkflowIdError",
    "LmdbStateError",
    "MEMORY_PATH",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RecoverReport",
    "RepairReport",
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
    "VerifyReport",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowRecovery",
    "__version__",
    "load_config",
    "recover",
]
