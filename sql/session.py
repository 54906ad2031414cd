"""A DuckDB session over the catalog: every table a view, optionally pinned to a version.

Tables are registered as Arrow datasets from deltalake, so nothing is copied and DuckDB
pushes filters and projections into the scan. DuckDB's own delta/httpfs extensions are not
used (they cannot be installed offline); the same code serves local and ``s3://`` roots.

Read-only by default: DuckDB's external access is disabled and the configuration locked, so
a query can read only catalog tables, and only SELECT/EXPLAIN/PRAGMA statements run. The
views are over Arrow datasets, so no statement can modify a lakehouse table in any mode.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

import duckdb
import pyarrow as pa

from catalog import Lakehouse, QueryError, TableNotFoundError, VersionNotFoundError, spec
from catalog.tables import VersionRef, scan_dataset

log = logging.getLogger(__name__)

COMMITS_VIEW = "corpus_commits"
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA"}


def _statement_type(stmt) -> str:
    return str(stmt.type).rsplit(".", 1)[-1].upper()


class SqlSession:
    """DuckDB with the catalog registered; one per CLI call or shell.

    Args:
        lakehouse: The lakehouse whose tables become views.
        as_of: Pin tables to a version or timestamp, ``{"texts": 3}``; others are latest.
        allow_files: Allow queries to read and write local files (``read_csv``, ``COPY``).
        threads: DuckDB worker threads (default: DuckDB's choice, all cores).
    """

    def __init__(
        self,
        lakehouse: Lakehouse,
        *,
        as_of: Mapping[str, VersionRef] | None = None,
        allow_files: bool = False,
        threads: int | None = None,
    ):
        self.lakehouse = lakehouse
        self.allow_files = allow_files
        self.as_of = dict(as_of or {})
        for name in self.as_of:
            spec(name)  # unknown names fail here with the list of tables
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.versions: dict[str, int] = {}
        existing = set(lakehouse.list_tables())
        missing = [n for n in self.as_of if n not in existing]
        if missing:
            raise TableNotFoundError(
                f"--as-of names {missing}, which do not exist under {lakehouse.root}."
            )
        for name in sorted(existing):
            dt = lakehouse.open(name, self.as_of.get(name))
            self.versions[name] = dt.version()
            self.con.register(name, scan_dataset(name, dt))
        self._commits_registered = False
        if not allow_files:
            self.con.execute("SET enable_external_access = false")
        # Locked either way: a query must not re-enable file access or change the session.
        self.con.execute("SET lock_configuration = true")

    @property
    def tables(self) -> list[str]:
        """Names of the registered catalog views."""
        return sorted(self.versions)

    def _register_commits(self) -> None:
        """The history of every table as one view: lineage is a query."""
        rows = []
        for name in self.tables:
            for c in self.lakehouse.history(name):
                if c.version > self.versions[name]:
                    continue
                rows.append({
                    "table_name": name, "version": c.version,
                    "committed_at": pa.scalar(c.timestamp_ms * 1000, pa.timestamp("us", "UTC")),
                    "operation": c.operation, "delta_operation": c.delta_operation,
                    "inputs": json.dumps(c.inputs), "sources": json.dumps(c.sources),
                    "config": json.dumps(c.config, default=str), "code_version": c.code_version,
                })
        schema = pa.schema([
            ("table_name", pa.string()), ("version", pa.int64()),
            ("committed_at", pa.timestamp("us", "UTC")), ("operation", pa.string()),
            ("delta_operation", pa.string()), ("inputs", pa.string()), ("sources", pa.string()),
            ("config", pa.string()), ("code_version", pa.string()),
        ])
        self.con.register(COMMITS_VIEW, pa.Table.from_pylist(rows, schema=schema))
        self._commits_registered = True

    def _check(self, sql: str) -> list:
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise QueryError(f"Bad SQL: {_clean(e)}") from None
        if not statements:
            raise QueryError("The query is empty.")
        if not self.allow_files:
            for stmt in statements:
                kind = _statement_type(stmt)
                if kind not in _READ_ONLY_TYPES:
                    raise QueryError(
                        f"{kind} statements are not allowed: `corpus sql` is read-only. "
                        "Lakehouse tables change only through pipeline stages; to read or "
                        "write local files pass --allow-files."
                    )
        if not self._commits_registered and re.search(COMMITS_VIEW, sql, re.IGNORECASE):
            self._register_commits()
        return statements

    def _run(self, sql: str) -> duckdb.DuckDBPyRelation | None:
        """Run every statement; the last one as a lazy relation (streams without a copy)."""
        statements = self._check(sql)
        try:
            for stmt in statements[:-1]:
                self.con.execute(stmt).fetchall()
            return self.con.sql(statements[-1])
        except duckdb.Error as e:
            raise self._error(e) from None

    def query(self, sql: str) -> pa.Table:
        """Run SQL and return the last statement's result as an Arrow table."""
        return self.batches(sql).read_all()

    def batches(self, sql: str, rows_per_batch: int = 65536) -> pa.RecordBatchReader:
        """Run SQL and stream the result as Arrow record batches (bounded memory)."""
        rel = self._run(sql)
        if rel is None:  # a statement without a result (e.g. COPY with --allow-files)
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        try:
            return rel.to_arrow_reader(rows_per_batch)
        except duckdb.Error as e:
            raise self._error(e) from None

    def _error(self, e: duckdb.Error) -> QueryError:
        msg = _clean(e)
        if isinstance(e, duckdb.PermissionException):
            return QueryError(
                f"{msg}\n`corpus sql` is read-only and cannot touch local files; "
                "pass --allow-files to allow read_csv/COPY and friends."
            )
        if isinstance(e, duckdb.CatalogException):
            return QueryError(
                f"{msg}\nCatalog tables here: {', '.join(self.tables) or '(none yet)'}"
                f" (and {COMMITS_VIEW})."
            )
        if isinstance(e, duckdb.ParserException):
            return QueryError(f"Bad SQL: {msg}")
        if isinstance(e, duckdb.InvalidInputException) and "locked" in msg:
            return QueryError(f"{msg}\nSession settings are fixed by `corpus sql` options.")
        return QueryError(msg)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def __enter__(self) -> SqlSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clean(e: Exception) -> str:
    return str(e).strip()


def parse_as_of(items: list[str] | tuple[str, ...]) -> dict[str, VersionRef]:
    """Parse ``TABLE=VERSION`` (or ``TABLE=ISO-TIMESTAMP``) options."""
    from catalog.tables import parse_timestamp

    out: dict[str, VersionRef] = {}
    for item in items:
        name, sep, ver = item.partition("=")
        if not sep or not name or not ver:
            raise VersionNotFoundError(
                f"--as-of {item!r}: expected TABLE=VERSION or TABLE=ISO-TIMESTAMP, "
                "e.g. --as-of texts=3."
            )
        out[name.strip()] = int(ver) if ver.strip().isdigit() else parse_timestamp(ver.strip())
    return out
