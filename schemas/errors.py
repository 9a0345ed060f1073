"""Errors a user can act on. The CLI prints their message on one line and exits non-zero."""


class LongseqError(Exception):
    """Bad input, bad arguments or a missing prerequisite: no traceback, just the message."""

    exit_code = 1


class SchemaMismatchError(LongseqError):
    """Data read from disk does not have the columns and types its contract requires."""


class MissingPrerequisiteError(LongseqError):
    """Something the command needs is not installed or not there (Java, a partition, ...)."""
