"""A DuckDB session over the catalog: every table a view, optionally pinned to a version.

Zero-copy either way: on a local root a table's view reads the Parquet files of its pinned
Delta snapshot with DuckDB's own reader (statistics, projection and filter pushdown, count(*)
from metadata); on ``s3://`` roots, where DuckDB's httpfs/delta extensions cannot be installed
offline, it scans the Arrow dataset deltalake provides (filters are pushed into the scan).
Tables are registered when a statement first names them, so a query over one table does not
pay for opening the other eleven.

Read-only, always: :mod:`sql.guard` lets only SELECT, EXPLAIN of a SELECT and read-only
PRAGMAs run; DuckDB's external access is limited to the lakehouse's table folder, extensions are
never installed or auto-loaded and the configuration is locked, so a query can neither change a
lakehouse table nor read or write other local files. ``allow_files`` opens local files for
reading (``read_csv``) and allows one more statement, ``COPY ... TO`` a file outside the
lakehouse; the statement checks stay on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

import duckdb

from catalog import (
    TABLE_NAMES,
    Lakehouse,
    QueryError,
    TableNotFoundError,
    VersionNotFoundError,
)
from catalog.rules import current_scores_sql, current_texts_sql
from catalog.schemas import check_name
from catalog.tables import TABLES_DIR, VersionRef, scan_dataset
from sql import guard

# pyarrow is imported where it is used (Arrow results, views over Arrow datasets): a CSV
# query on a local root needs only DuckDB and deltalake, and starts ~60 ms sooner.
if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

COMMITS_VIEW = "corpus_commits"
# views defined by a catalog rule over a table: one definition, in catalog/rules.py
DERIVED_VIEWS = {"current_scores": ("scores", current_scores_sql),
                 "current_texts": ("texts", current_texts_sql)}
_NESTED = {"list", "struct", "map", "array", "union"}
_QUOTED = {"varchar", "blob", "enum", "uuid", "bit"}  # quoted in CSV, as pyarrow quotes them
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SqlSession:
    """DuckDB with the catalog registered; one per CLI call or shell.

    Args:
        lakehouse: The lakehouse whose tables become views.
        as_of: Pin tables to a version or timestamp, ``{"texts": 3}``; others are latest
            (as of the first statement that names them).
        allow_files: Allow queries to read local files (``read_csv``) and to
            ``COPY ... TO`` a file outside the lakehouse.
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
            check_name(name)  # unknown names fail here with the list of tables
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.versions: dict[str, int] = {}
        self._commits_registered = False
        self._derived: set[str] = set()
        self._local = not lakehouse.config.is_s3
        # Extensions could add functions that write; none is installed or loaded behind a
        # query's back (this also keeps DuckDB off the network).
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        if self._local and _under(os.getcwd(), lakehouse.root):
            # DuckDB spills to ./.tmp by default: not inside the lakehouse.
            spill = os.path.join(tempfile.gettempdir(), f"corpus-duckdb-{os.getpid()}-{id(self)}")
            self.con.execute("SET temp_directory = $1", [spill])
        # Where DuckDB writes CSV results (see csv_file): a private folder, removed on close.
        self._scratch = tempfile.mkdtemp(prefix="corpus-sql-")
        if not allow_files:
            # DuckDB's reader may open the table folders' Parquet files, nothing else; its
            # writer, our own scratch folder (the guard refuses COPY statements).
            allowed = [f"{lakehouse.root}/{TABLES_DIR}/"] if self._local else []
            self.con.execute("SET allowed_directories = $1", [[*allowed, self._scratch + "/"]])
            self.con.execute("SET enable_external_access = false")
        # Locked either way: a query must not re-enable file access or change the session.
        self.con.execute("SET lock_configuration = true")
        try:
            missing = [n for n in self.as_of if not lakehouse.exists(n)]
            if missing:
                raise TableNotFoundError(
                    f"--as-of names {missing}, which do not exist under {lakehouse.root}."
                )
            for name in self.as_of:
                self.register(name)
        except BaseException:
            self.close()
            raise

    @property
    def tables(self) -> list[str]:
        """Names of the catalog tables that exist (registered when first named)."""
        return self.lakehouse.list_tables()

    def register(self, name: str) -> bool:
        """Register table ``name`` as a view of its pinned snapshot; False if it does not exist."""
        if name in self.versions:
            return True
        try:
            dt = self.lakehouse.open(name, self.as_of.get(name), read_only=True)
        except TableNotFoundError:
            return False
        self.versions[name] = dt.version()
        files = dt.file_uris() if self._local and _plain_parquet(dt) else []
        if files:
            listing = ", ".join("'" + f.removeprefix("file://").replace("'", "''") + "'"
                                for f in files)
            self.con.execute(
                f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet([{listing}], '
                "union_by_name = true)"
            )
        else:
            self.con.register(name, scan_dataset(name, dt))
        return True

    def _register_commits(self) -> None:
        """The history of every table as one view: lineage is a query."""
        import pyarrow as pa

        rows = []
        for name in self.tables:
            self.register(name)
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
        statements = guard.split(sql, self.con)
        if not statements:
            raise QueryError("The query is empty.")
        # Every statement is checked before the first one runs.
        for stmt in statements:
            guard.check(stmt, allow_files=self.allow_files,
                        root=self.lakehouse.root if self._local else None)
        # Register the catalog tables the SQL names (a name inside a string literal only
        # costs an unneeded registration).
        words = {w.lower() for w in _WORD.findall(sql)}
        for name in TABLE_NAMES:
            if name in words:
                self.register(name)
        for view in DERIVED_VIEWS:
            if view in words:
                self._register_derived(view)
        if not self._commits_registered and COMMITS_VIEW in words:
            self._register_commits()
        return statements

    def _register_derived(self, view: str) -> None:
        """A view defined by a catalog rule over a table (``current_scores`` over
        ``scores``), following that table's pin; nothing when the table does not exist."""
        if view in self._derived:
            return
        base, make_sql = DERIVED_VIEWS[view]
        if self.register(base):
            self.con.execute(f'CREATE VIEW "{view}" AS {make_sql(base)}')
            self._derived.add(view)

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
        import pyarrow as pa

        rel = self._run(sql)
        if rel is None:  # a statement without a result (e.g. COPY with --allow-files)
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        try:
            return rel.to_arrow_reader(rows_per_batch)
        except duckdb.Error as e:
            raise self._error(e) from None

    def csv_file(self, sql: str) -> tuple[str, list[str], int] | None:
        """Run SQL and write the last statement's rows as CSV with DuckDB's own writer.

        Written as the Arrow path writes them: strings and binary values quoted, NULL an
        empty cell, nested values (lists, structs, maps), which CSV has no form for, as JSON
        text (a list of plain values spaced as Python's ``json.dumps`` spaces it). No header:
        the caller writes it. The file is in the session's scratch folder (removed on close).

        Returns:
            ``(path, column names, rows)``, or None for a statement without a result.
        """
        rel = self._run(sql)
        if rel is None:
            return None
        cols, quoted = [], []
        for i, typ in enumerate(rel.types):
            ref = f"#{i + 1}"  # by position: result column names may repeat
            if typ.id == "list" and typ.children[0][1].id not in _NESTED:
                expr = (f"'[' || array_to_string(list_transform({ref}, lambda x: "
                        f"coalesce(to_json(x)::VARCHAR, 'null')), ', ') || ']'")
            elif typ.id in _NESTED:
                expr = f"to_json({ref})::VARCHAR"
            else:
                expr = ref
            cols.append(f"{expr} AS c{i}")
            if typ.id in _NESTED or typ.id in _QUOTED:
                quoted.append(f"c{i}")
        fd, path = tempfile.mkstemp(suffix=".csv", dir=self._scratch)
        os.close(fd)
        options = "FORMAT csv, HEADER false" + (f", FORCE_QUOTE ({', '.join(quoted)})"
                                                if quoted else "")
        target = path.replace("'", "''")
        try:
            n = rel.query("__corpus_result", f"COPY (SELECT {', '.join(cols)} FROM "
                          f"__corpus_result) TO '{target}' ({options})").fetchall()
        except duckdb.Error as e:
            os.remove(path)
            raise self._error(e) from None
        return path, list(rel.columns), int(n[0][0]) if n else 0

    def _error(self, e: duckdb.Error) -> QueryError:
        msg = _clean(e)
        if isinstance(e, duckdb.PermissionException):
            return QueryError(
                f"{msg}\n`corpus sql` is read-only and cannot touch local files; pass "
                "--allow-files to read them or COPY a result to one outside the lakehouse."
            )
        if isinstance(e, duckdb.CatalogException):
            return QueryError(
                f"{msg}\nCatalog tables here: {', '.join(self.tables) or '(none yet)'}"
                f" (and the views {', '.join([*DERIVED_VIEWS, COMMITS_VIEW])})."
            )
        if isinstance(e, duckdb.ParserException):
            return QueryError(f"Bad SQL: {msg}")
        if isinstance(e, duckdb.InvalidInputException) and "locked" in msg:
            return QueryError(f"{msg}\nSession settings are fixed by `corpus sql` options.")
        return QueryError(msg)

    def close(self) -> None:
        """Close the DuckDB connection (and remove the scratch folder)."""
        self.con.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> SqlSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain_parquet(dt) -> bool:
    """Whether the snapshot's data files alone are the table (no deletion vectors or column
    mapping, which only a Delta reader applies)."""
    p = dt.protocol()
    features = set(p.reader_features or []) | set(p.writer_features or [])
    mapping = dt.metadata().configuration.get("delta.columnMapping.mode", "none")
    return not ({"deletionVectors", "columnMapping"} & features) and mapping == "none"


def _under(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


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
