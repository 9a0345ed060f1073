"""The one definition of every longseq record, and the backend forms derived from it."""

from longseq.schemas.contracts import (
    CONTRACTS,
    DEFAULT_MAX_LEN,
    HISTORY_EVENT,
    PARTITION_COLUMN,
    QUARANTINE,
    RAW_LOG,
    REQUEST_RECORD,
    SUCCESS_MARKER,
    TARGET,
    TASKS,
    USER_STATE,
)
from longseq.schemas.errors import LongseqError, MissingPrerequisiteError, SchemaMismatchError
from longseq.schemas.types import Field, ListOf, Scalar, Schema

__all__ = [
    "CONTRACTS", "DEFAULT_MAX_LEN", "HISTORY_EVENT", "PARTITION_COLUMN", "QUARANTINE", "RAW_LOG", "REQUEST_RECORD",
    "SUCCESS_MARKER", "TARGET", "TASKS", "USER_STATE", "LongseqError", "MissingPrerequisiteError",
    "SchemaMismatchError", "Field", "ListOf", "Scalar", "Schema",
]
