"""The one error hierarchy of Corpus.

Every error a user can cause (bad configuration, an unknown table, bad input data, bad SQL)
is a :class:`CorpusError`. The CLI prints its message and exits with status 2 instead of a
traceback, so messages must say what was expected, what was found and how to fix it.
"""

from __future__ import annotations


class CorpusError(Exception):
    """Base class of every error Corpus raises on purpose."""


class ConfigError(CorpusError):
    """A configuration value (root, storage option, stage option) is invalid."""


class TableNotFoundError(CorpusError):
    """A table name is not declared in the catalog, or the table was never written."""


class VersionNotFoundError(CorpusError):
    """A table version or timestamp that the table's log does not contain."""


class SchemaError(CorpusError):
    """Data does not fit the declared schema of the table it is written to."""


class StorageError(CorpusError):
    """Object storage (local folder or S3) failed or holds something unexpected."""


class CommitConflictError(CorpusError):
    """A concurrent writer kept winning; the commit was retried and still failed."""


class QueryError(CorpusError):
    """A SQL query is malformed, names an unknown table, or is not allowed."""
