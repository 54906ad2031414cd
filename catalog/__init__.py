"""Ground floor of Corpus: config, table schemas, errors, object storage, Delta tables, lineage,
and every data rule two stages share (catalog/rules.py).

Stages import from here and never from each other.
"""

from catalog.config import LakehouseConfig
from catalog.errors import (
    CommitConflictError,
    ConfigError,
    CorpusError,
    QueryError,
    SchemaError,
    StorageError,
    TableNotFoundError,
    VersionNotFoundError,
)
from catalog.lineage import Commit, Lineage, LineageNode
from catalog.schemas import TABLE_NAMES, TableSpec, spec
from catalog.storage import (
    ObjectStore,
    content_key,
    key_from_uri,
    put_content_addressed,
    sha256_file,
)
from catalog.tables import Lakehouse, TableStats, parse_table_ref

__all__ = [
    "TABLES",
    "TABLE_NAMES",
    "Commit",
    "CommitConflictError",
    "ConfigError",
    "CorpusError",
    "Lakehouse",
    "LakehouseConfig",
    "Lineage",
    "LineageNode",
    "ObjectStore",
    "QueryError",
    "SchemaError",
    "StorageError",
    "TableNotFoundError",
    "TableSpec",
    "TableStats",
    "VersionNotFoundError",
    "content_key",
    "key_from_uri",
    "parse_table_ref",
    "put_content_addressed",
    "sha256_file",
    "spec",
]


def __getattr__(name: str):
    # TABLES holds the Arrow schemas: built (and pyarrow imported) on first use only.
    if name == "TABLES":
        from catalog.schemas import TABLES

        return TABLES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
