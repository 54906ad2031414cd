"""A DuckDB session over the catalog: every table a view, optionally pinned to a version.

Zero-copy either way: on a local root a table's view reads the Parquet files of its pinned
Delta snapshot with DuckDB's own reader (statistics, projection and filter pushdown, count(*)
from metadata); on ``s3://`` roots, where DuckDB's httpfs/delta extensions cannot be installed
offline, it scans the Arrow dataset deltalake provides (filters are pushed into the scan).
Tables are registered when a statement first names them, so a query over one table does not
pay for opening the other thirteen. A statement about the catalog itself (SHOW TABLES,
DESCRIBE, information_schema, duckdb_views() / duckdb_columns(), ...) sees every table that
exists and the derived views: a table no statement has named yet is a stub view with its
declared columns, made without opening the table (a real view opens its Delta log and reads
every data file's footer); the first statement that names it replaces the stub with the real
view. Once a statement has queried information_schema or duckdb_views()/duckdb_columns(),
every view carries the catalog's descriptions as DuckDB comments (COLUMN_COMMENT, comment).

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
from catalog.schemas import COMMENT, check_name, closest, column_doc, spec
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
# what each view holds (its DuckDB comment; a table's comes from catalog/schemas.py)
VIEW_DESCRIPTIONS = {
    "current_scores": "the current score per (book, metric): the newest row of scores",
    "current_texts": "each book's best text: edited, else corrected, else OCR",
    COMMITS_VIEW: "every commit of every table with its lineage",
}
# the columns of corpus_commits: name, type (see _commits_schema), description
_COMMIT_COLUMNS = (
    ("table_name", "string", "the table committed to"),
    ("version", "int64", "the table version the commit made"),
    ("committed_at", "timestamp", "when it was committed"),
    ("operation", "string", "the stage or command that wrote (ingest, ocr, mine, ...)"),
    ("delta_operation", "string", "the Delta operation (CREATE TABLE, WRITE, MERGE, ...)"),
    ("inputs", "string", "JSON: the table versions the commit read, {table: version}"),
    ("sources", "string", "JSON: what outside the catalog it read (share paths, files)"),
    ("config", "string", "JSON: the resolved configuration of the write"),
    ("code_version", "string", "the version of Corpus that wrote"),
)
# Words of statements about the catalog rather than a table: they see every table (as stubs).
# Those that list names and types only (SHOW, DESCRIBE) skip the comments (~200 statements).
_LISTINGS = frozenset({"show", "describe", "show_tables", "show_tables_expanded"})
_DISCOVERY = _LISTINGS | {
    "information_schema", "pg_catalog", "duckdb_tables", "duckdb_views", "duckdb_columns",
    "duckdb_constraints", "duckdb_dependencies", "pg_tables", "pg_views", "pg_class",
    "pg_attribute", "sqlite_master", "sqlite_schema",
}
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
        self._stubs: set[str] = set()  # tables and views a catalog statement sees as stubs
        self._commenting = False  # a catalog query ran: views carry their descriptions
        self._uncommented: set[str] = set()  # views (re)made since their comments were set
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

    @property
    def views(self) -> list[str]:
        """Names of the views over the catalog: those derived from a table that exists, and
        corpus_commits."""
        existing = set(self.tables)
        return [v for v, (base, _) in DERIVED_VIEWS.items() if base in existing] + [COMMITS_VIEW]

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
                f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM read_parquet([{listing}], '
                "union_by_name = true)"
            )
        else:
            self.con.execute(f'DROP VIEW IF EXISTS "{name}"')  # its stub
            self.con.register(name, scan_dataset(name, dt))
        self._replaced(name)
        # views derived from the table were bound to its stub: bind them to the real view
        for view, (base, _) in DERIVED_VIEWS.items():
            if base == name and view in self._derived:
                self._derive(view)
        return True

    def _replaced(self, name: str) -> None:
        """``name`` is a real view now (no stub), without its comments yet."""
        self._stubs.discard(name)
        self._uncommented.add(name)

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
        self.con.execute(f'DROP VIEW IF EXISTS "{COMMITS_VIEW}"')  # its stub
        self.con.register(COMMITS_VIEW, pa.Table.from_pylist(rows, schema=_commits_schema()))
        self._commits_registered = True
        self._replaced(COMMITS_VIEW)

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
        if words & _DISCOVERY:
            self._discover()
            self._commenting |= bool(words & (_DISCOVERY - _LISTINGS))
        if self._commenting and self._uncommented:
            self._comment()
        return statements

    def _register_derived(self, view: str) -> None:
        """A view defined by a catalog rule over a table (``current_scores`` over
        ``scores``), following that table's pin; nothing when the table does not exist."""
        base = DERIVED_VIEWS[view][0]
        if self.register(base) and view not in self._derived:
            self._derive(view)

    def _derive(self, view: str) -> None:
        """(Re)define a derived view over whatever its table is now: its real view or stub."""
        base, make_sql = DERIVED_VIEWS[view]
        self.con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {make_sql(base)}')
        self._derived.add(view)
        self._uncommented.add(view)

    def _discover(self) -> None:
        """Make every existing table and the views over them visible to a statement about
        the catalog (SHOW TABLES, information_schema, ...) without opening any table.

        A table no statement has named yet gets a stub: a view with its declared columns
        that refuses to be read (:func:`_stub_sql`). Checking which tables exist is the
        only cost (one small request per table).
        """
        existing = self.tables
        for name in existing:
            if name not in self.versions and name not in self._stubs:
                self._stub(name, spec(name).schema)
        for view, (base, _) in DERIVED_VIEWS.items():
            if base in existing and view not in self._derived:
                self._derive(view)
        if not self._commits_registered and COMMITS_VIEW not in self._stubs:
            self._stub(COMMITS_VIEW, _commits_schema())

    def _stub(self, name: str, schema: pa.Schema) -> None:
        self.con.execute(_stub_sql(name, schema.names, [_sql_type(f.type) for f in schema]))
        self._stubs.add(name)
        self._uncommented.add(name)

    def _comment(self) -> None:
        """Give the views made since the last time their descriptions as DuckDB comments
        (duckdb_views().comment, duckdb_columns().comment, information_schema.columns)."""
        have: dict[str, set[str]] = {}
        for view, column in self.con.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal"
                ).fetchall():
            have.setdefault(view, set()).add(column)
        statements = []
        for view in sorted(self._uncommented & set(have)):
            about, docs = _descriptions(view)
            statements.append(f'COMMENT ON VIEW "{view}" IS {_literal(about)}')
            statements += [f'COMMENT ON COLUMN "{view}"."{col}" IS {_literal(doc)}'
                           for col, doc in docs.items() if col in have[view]]
        if statements:
            self.con.execute(";\n".join(statements))
        self._uncommented.clear()

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
        if {w.lower() for w in _WORD.findall(sql)} & _DISCOVERY:
            # run now: run inside the COPY below, SHOW TABLES would list its __corpus_result
            rel = rel.materialize()
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
                f"{_suggest(msg)}\nCatalog tables here: {', '.join(self.tables) or '(none yet)'}"
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


def _commits_schema() -> pa.Schema:
    """The Arrow schema of corpus_commits, each field with its description."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "timestamp": pa.timestamp("us", "UTC")}
    return pa.schema([pa.field(name, types[typ], metadata={COMMENT: doc})
                      for name, typ, doc in _COMMIT_COLUMNS])


def _stub_sql(name: str, columns: list[str], types: list[str]) -> str:
    """A view with these columns that fails when read: what a statement about the catalog
    sees of a table before a statement names it. Never a silent empty table: only a query
    that reads no row of it (``LIMIT 0``) gets no rows, as it would from the table."""
    cols = ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in zip(columns, types, strict=True))
    why = (f"{name} is registered when a statement names it; this one reached it without "
           f"naming it. Name it in the query (SELECT ... FROM {name}).")
    return (f'CREATE OR REPLACE VIEW "{name}" AS SELECT {cols} '
            f"WHERE CAST(error({_literal(why)}) AS BOOLEAN)")


def _sql_type(t: pa.DataType) -> str:
    """The DuckDB type of a column of a declared Arrow type, as DuckDB reads it from the
    table's Parquet files or Arrow dataset (asking DuckDB would import pandas, ~0.8 s)."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _sql_type(t.value_type) + "[]"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR"
    if pa.types.is_timestamp(t) and t.unit == "us":
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    simple = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE",
              pa.bool_(): "BOOLEAN"}
    if t in simple:
        return simple[t]
    raise TypeError(f"no DuckDB type for {t} here: add it to sql.session._sql_type")


def _descriptions(view: str) -> tuple[str, dict[str, str]]:
    """What a view of the session holds and what each of its columns means."""
    if view == COMMITS_VIEW:
        return VIEW_DESCRIPTIONS[view], {n: doc for n, _, doc in _COMMIT_COLUMNS}
    if view in DERIVED_VIEWS:  # the columns of its table, unchanged
        return VIEW_DESCRIPTIONS[view], _descriptions(DERIVED_VIEWS[view][0])[1]
    s = spec(view)
    return s.description, {f.name: column_doc(f) for f in s.schema}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _suggest(msg: str) -> str:
    """DuckDB's message for a missing table, suggesting the catalog's closest table or view
    first: DuckDB only knows the views registered so far, and offers its own system tables
    (``scors``: "duckdb_columns") before a catalog table it has not seen."""
    m = re.search(r'Table with name "?([^"\s]+?)"? does not exist', msg)
    near = closest(m[1], [*TABLE_NAMES, *DERIVED_VIEWS, COMMITS_VIEW]) if m else []
    if not near:
        return msg
    hint = f'Did you mean "{near[0]}"?'
    if re.search(r'Did you mean "[^"]*"\?', msg):
        return re.sub(r'Did you mean "[^"]*"\?', hint, msg, count=1)
    first, _, rest = msg.partition("\n")
    return f"{first}\n{hint}" + (f"\n{rest}" if rest else "")


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
