"""Delta tables under the lakehouse root: create, read, write, time travel, maintenance.

Every write takes a :class:`~catalog.lineage.Lineage` (keyword-only, required), so no commit
can be made without saying what it was derived from. Writes that can conflict with a
concurrent writer (merge, delete, overwrite) are retried on a fresh snapshot; appends are
retried by delta-rs itself. On S3, safe concurrent commits rely on conditional puts, which
the server must honour; no lock table is used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

from catalog.config import LakehouseConfig
from catalog.errors import (
    CommitConflictError,
    CorpusError,
    SchemaError,
    TableNotFoundError,
    VersionNotFoundError,
)
from catalog.lineage import Commit, Lineage, LineageNode
from catalog.schemas import COMMENT, TABLE_NAMES, check_name, spec
from catalog.storage import ObjectStore, open_store

# pyarrow (and tenacity) are imported where they are used: `corpus sql` on a local root opens
# tables and reads their Parquet files with DuckDB, and never pays for them (pyarrow ~60 ms,
# pyarrow.dataset ~0.2 s).
if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

    from catalog.datafiles import DataFile
    from catalog.schemas import TableSpec

log = logging.getLogger(__name__)

TABLES_DIR = "tables"
COMMIT_ATTEMPTS = 10

VersionRef = int | str | datetime | None


@dataclass(frozen=True)
class TableStats:
    """Size of one table at its current version (what ``corpus tables`` prints)."""

    name: str
    version: int
    rows: int
    files: int
    bytes: int
    description: str


def parse_table_ref(ref: str) -> tuple[str, VersionRef]:
    """Split ``TABLE``, ``TABLE@7`` or ``TABLE@2026-01-31T12:00:00`` into name and version."""
    name, sep, at = ref.partition("@")
    if not sep:
        return name, None
    at = at.strip()
    if at.isdigit():
        return name, int(at)
    return name, parse_timestamp(at)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; a timestamp without a zone is taken as UTC."""
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VersionNotFoundError(
            f"{text!r} is neither a table version (an integer) nor an ISO timestamp "
            "such as 2026-11-22T08:30:00."
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def conform(table_spec: TableSpec, data: Any) -> pa.Table:
    """Turn Arrow-like data (pa.Table, RecordBatch, Polars frame, list of dicts) into the
    table's declared schema: columns reordered and cast, absent nullable columns null-filled.

    Raises:
        SchemaError: naming unknown columns, missing required columns or failed casts.
    """
    import pyarrow as pa

    if isinstance(data, list):
        data = pa.Table.from_pylist(data)
    elif not isinstance(data, pa.Table):
        try:
            data = pa.table(data)
        except (TypeError, ValueError, pa.ArrowException) as e:
            raise SchemaError(
                f"Cannot read data for table {table_spec.name!r} as Arrow: {e}"
            ) from e
    schema = table_spec.schema
    unknown = [c for c in data.column_names if c not in schema.names]
    if unknown:
        raise SchemaError(
            f"Table {table_spec.name!r} has no columns {unknown}. Its columns are "
            f"{schema.names}; add new columns to catalog/schemas.py first."
        )
    cols = []
    for fld in schema:
        if fld.name in data.column_names:
            col = data.column(fld.name)
            try:
                col = col.cast(fld.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(
                    f"Column {table_spec.name}.{fld.name}: cannot convert {col.type} to "
                    f"{fld.type}: {e}"
                ) from e
            if not fld.nullable and col.null_count:
                raise SchemaError(
                    f"Column {table_spec.name}.{fld.name} is required but {col.null_count} "
                    f"of {len(col)} rows are null."
                )
        elif fld.nullable:
            col = pa.nulls(data.num_rows, fld.type)
        else:
            raise SchemaError(
                f"Table {table_spec.name!r} needs column {fld.name!r} ({fld.type}); "
                f"the data has {data.column_names}."
            )
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=table_spec.data_schema)


def _viewed(t: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.string_view()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_field
        return pa.list_(pa.field(v.name, _viewed(v.type), v.nullable))
    return t


def _scan_schema(schema: pa.Schema) -> pa.Schema:
    """The declared schema with string columns as ``string_view`` (see Lakehouse.dataset)."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, _viewed(f.type), f.nullable) for f in schema])


def scan_dataset(name: str, dt: DeltaTable) -> pads.Dataset:
    """The Arrow dataset of an opened table snapshot, typed for scanning (see
    :meth:`Lakehouse.dataset`)."""
    return dt.to_pyarrow_dataset(schema=_scan_schema(spec(name).schema))


_OP = "__corpus_op"  # the per-row operation column of a sync's merge source


def _quote(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


REPLACE_MAX_KEYS = 64  # above this a merge costs less than parsing the listed keys


def _literal(v: Any) -> str:
    return str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"


def _keys_predicate(cols: list[str], rows: list[dict[str, Any]]) -> str:
    """A SQL predicate true for exactly the rows with one of the given key values: the last
    key column as an IN list, grouped by the others (``variant = 'edited' AND book_id IN
    (...)``): the column with the most distinct values is the list."""
    cols = sorted(cols, key=lambda c: len({r[c] for r in rows}))
    *lead, last = cols
    groups: dict[tuple, list[Any]] = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in lead), []).append(r[last])
    terms = []
    for head, values in groups.items():
        parts = [f"{_quote(c)} = {_literal(v)}" for c, v in zip(lead, head, strict=True)]
        parts.append(f"{_quote(last)} IN ({', '.join(_literal(v) for v in values)})")
        terms.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(terms)


class Lakehouse:
    """The catalog's tables and objects under one root (local folder or S3 prefix)."""

    def __init__(self, config: LakehouseConfig | str | None = None):
        if not isinstance(config, LakehouseConfig):
            config = LakehouseConfig.resolve(config)
        self.config = config
        self._store: ObjectStore | None = None
        self._handles: dict[str, DeltaTable] = {}
        self._seen: dict[str, int] = {}  # table -> newest version opened or committed here
        self._ensured: set[str] = set()  # tables created and schema-checked by this object

    # ---- locations -------------------------------------------------------------------
    @property
    def root(self) -> str:
        """The lakehouse root URI."""
        return self.config.root

    @property
    def store(self) -> ObjectStore:
        """Object storage for blobs (created on first use)."""
        if self._store is None:
            self._store = open_store(self.config)
        return self._store

    @property
    def _opts(self) -> dict[str, str]:
        return dict(self.config.storage_options)

    def table_uri(self, name: str) -> str:
        """Where table ``name`` lives."""
        check_name(name)
        return f"{self.root}/{TABLES_DIR}/{name}"

    # ---- open / create ---------------------------------------------------------------
    def exists(self, name: str) -> bool:
        """Whether table ``name`` has been created."""
        return DeltaTable.is_deltatable(self.table_uri(name), storage_options=self._opts)

    def create(self, name: str) -> DeltaTable:
        """Create table ``name`` with its declared schema if it does not exist yet."""
        s = spec(name)
        uri = self.table_uri(name)
        if not self.exists(name):
            try:
                DeltaTable.create(
                    uri, s.schema, mode="ignore", name=name, description=s.description,
                    storage_options=self._opts,
                    commit_properties=CommitProperties(
                        custom_metadata=Lineage(operation="create").to_metadata()
                    ),
                )
            except (CommitFailedError, DeltaError) as e:
                # Another process may have created it between our check and our commit.
                if not self.exists(name):
                    raise CorpusError(f"Cannot create table {name!r} at {uri}: {e}") from e
        dt = self.open(name)
        return self.add_columns(name, dt)

    def add_columns(self, name: str, dt: DeltaTable | None = None) -> DeltaTable:
        """Add the columns declared in catalog/schemas.py since the table was created (a
        lakehouse written by an older version keeps working: old rows read them as null).

        Opening a table's latest version does this once per Lakehouse object; a schema
        change is never made by hand elsewhere. Returns the table, opened after the change.
        """
        dt = dt if dt is not None else DeltaTable(self.table_uri(name),
                                                  storage_options=self._opts)
        have = {f.name for f in dt.schema().fields}
        new = [f for f in spec(name).schema if f.name not in have]
        if not new:
            return dt
        if any(not f.nullable for f in new):
            raise SchemaError(f"Table {name!r} lacks required column(s) "
                              f"{[f.name for f in new if not f.nullable]}; new columns of an "
                              "existing table must be nullable.")
        from deltalake import Field

        fields = [Field.from_arrow(f) for f in new]
        try:
            dt.alter.add_columns(fields, commit_properties=CommitProperties(
                custom_metadata=Lineage(operation="add_columns",
                                        config={"columns": [f.name for f in new]}
                                        ).to_metadata()))
        except (CommitFailedError, DeltaError) as e:  # another process added them first
            dt = self.open(name)
            if not {f.name for f in new} <= {f.name for f in dt.schema().fields}:
                raise CorpusError(f"Cannot add columns to table {name!r}: {e}") from e
        self._handles.pop(name, None)
        return self.open(name)

    def write_descriptions(self, name: str) -> int:
        """Write the declared descriptions of table ``name`` and its columns into its Delta
        metadata (column descriptions as field metadata ``comment``), where they differ.

        A table created by this version has them from its first commit (and columns added
        since get theirs with them); this brings an older table up to date. deltalake changes
        one column's metadata per commit, so that is one commit per column whose description
        differs, plus one for the table's description; none when all match. Like any schema
        change it makes concurrent writers retry. Returns the number of commits made.
        """
        s = spec(name)
        commits = 0

        def changes(dt: DeltaTable) -> tuple[list[str], bool]:
            have = {f.name: (f.metadata or {}).get(COMMENT) for f in dt.schema().fields}
            cols = [f.name for f in s.schema if f.name in have and have[f.name] != s.doc(f.name)]
            return cols, dt.metadata().description != s.description

        def props(what: list[str]) -> CommitProperties:
            return self._props(Lineage(operation="describe", config={"columns": what}))

        cols, table_doc = changes(self.open(name))
        for col in cols:
            def run(col: str = col) -> None:
                self.open(name).alter.set_column_metadata(col, {COMMENT: s.doc(col)},
                                                          commit_properties=props([col]))

            self._retrying(name, "describe", run)
            commits += 1
        if table_doc:
            def run_table() -> None:
                self.open(name).alter.set_table_description(s.description,
                                                            commit_properties=props([]))

            self._retrying(name, "describe", run_table)
            commits += 1
        if commits:
            self._handles.pop(name, None)  # the append handle's snapshot is stale now
        return commits

    def _ensure(self, name: str) -> None:
        """:meth:`create` once per Lakehouse object: a writer that commits often (ingest,
        OCR) need not re-check the table's existence and columns before every commit."""
        if name not in self._ensured:
            self.create(name)
            self._ensured.add(name)

    def init(self) -> list[str]:
        """Create every declared table that does not exist yet; returns the names created."""
        created = [n for n in TABLE_NAMES if not self.exists(n)]
        for name in created:
            self.create(name)
        return created

    def open(self, name: str, version: VersionRef = None, *, read_only: bool = False
             ) -> DeltaTable:
        """Open table ``name`` at its latest version, a version number or a timestamp.

        The latest version of a table created by an older version of Corpus gets the columns
        declared since (a commit), once per Lakehouse object; ``read_only`` opens it as it is.
        """
        check_name(name)
        uri = self.table_uri(name)
        try:
            dt = DeltaTable(uri, storage_options=self._opts)
        except DeltaTableNotFound:
            raise TableNotFoundError(
                f"Table {name!r} does not exist yet under {self.root}. Run the stage that "
                f"writes it, or `corpus init` to create empty tables."
            ) from None
        if version is None:
            # once per object: columns declared since the table was created
            if name not in self._ensured and not read_only:
                dt = self.add_columns(name, dt)
                self._ensured.add(name)
            self._seen[name] = dt.version()
            return dt
        if isinstance(version, str):
            version = int(version) if version.isdigit() else parse_timestamp(version)
        if isinstance(version, datetime):
            version = self._version_at(name, dt, version)
        latest = dt.version()
        try:
            dt.load_as_version(version)
        except (DeltaError, ValueError, OSError):
            raise VersionNotFoundError(
                f"Table {name!r} has no version {version!s}; its versions are 0..{latest}."
            ) from None
        return dt

    @staticmethod
    def _version_at(name: str, dt: DeltaTable, when: datetime) -> int:
        """The newest version committed at or before ``when``.

        Resolved from the commit timestamps in the log rather than by delta-rs, which uses
        object modification times: those have one-second resolution on some S3 servers.
        """
        when_ms = when.timestamp() * 1000
        versions = [h["version"] for h in dt.history() if h["timestamp"] <= when_ms]
        if not versions:
            raise VersionNotFoundError(f"Table {name!r} did not exist yet at {when.isoformat()}.")
        return max(versions)

    def version(self, name: str) -> int:
        """Latest version of table ``name``."""
        return self.open(name).version()

    def seen_version(self, name: str) -> int | None:
        """The newest version of ``name`` this object has opened or committed (None: none
        yet), without opening the table again: what a driver reports as a table's version
        after its run (its own commit, or the version it read when it wrote nothing)."""
        return self._seen.get(name)

    def pin(self, *names: str) -> dict[str, int]:
        """Current versions of the named tables: what a driver records as its inputs."""
        return {n: self.version(n) for n in names}

    # ---- read ------------------------------------------------------------------------
    def dataset(self, name: str, version: VersionRef = None) -> pads.Dataset:
        """A lazy Arrow dataset over ``name`` (zero-copy; filters are pushed into the scan).

        String columns are typed ``string_view``: delta-rs writes some files with view types
        and others with plain strings, and pyarrow has no kernels comparing the two, so a
        plain-typed dataset fails on any pushed-down string predicate. With views on both
        sides every file scans (DuckDB then returns ordinary strings).
        """
        return scan_dataset(name, self.open(name, version))

    def read(
        self,
        name: str,
        *,
        version: VersionRef = None,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
    ) -> pa.Table:
        """Read (part of) a table into memory, with the declared column types.

        ``filter`` is applied after the scan (see :meth:`dataset` for why not pushed down);
        for selective reads of big tables, query through :mod:`sql` instead.
        """
        import pyarrow as pa

        table = self.dataset(name, version).to_table(columns=columns)
        declared = spec(name).schema
        table = table.cast(pa.schema([declared.field(c) for c in table.column_names]))
        return table.filter(filter) if filter is not None else table

    # ---- write -----------------------------------------------------------------------
    def _props(self, lineage: Lineage) -> CommitProperties:
        return CommitProperties(
            custom_metadata=lineage.to_metadata(), max_commit_retries=COMMIT_ATTEMPTS
        )

    def _retrying(self, name: str, op: str, fn) -> Any:
        """Run a conflicting-prone commit, retrying on a fresh snapshot when a writer won."""
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_random_exponential,
        )

        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(CommitFailedError),
                stop=stop_after_attempt(COMMIT_ATTEMPTS),
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                reraise=False,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        log.info("%s on %s: retry %d after a concurrent commit", op, name,
                                 attempt.retry_state.attempt_number)
                    return fn()
        except RetryError as e:
            raise CommitConflictError(
                f"{op} on table {name!r} lost to concurrent writers {COMMIT_ATTEMPTS} times; "
                f"nothing was written. Retry later. Last error: {e.last_attempt.exception()}"
            ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def append(self, name: str, data: Any, *, lineage: Lineage) -> int:
        """Append rows; returns the new table version."""
        s = spec(name)
        table = conform(s, data)
        if name not in self._handles:
            self.create(name)
            # Kept open: writing through a loaded table skips re-reading the log on every
            # append (half the cost of a small append); delta-rs rebases the commit onto
            # any newer version another writer made meanwhile.
            self._handles[name] = self.open(name)
        tries = 0

        def run() -> None:
            nonlocal tries
            tries += 1
            if tries > 1:  # lost a race the rebase could not settle: start from the latest
                self._handles[name] = self.open(name)
            write_deltalake(self._handles[name], table, mode="append",
                            commit_properties=self._props(lineage))

        # delta-rs retries appends that race other appends, but not one that races a
        # metadata change (e.g. the commit that created the table a moment earlier).
        try:
            self._retrying(name, "append", run)
        except CorpusError:
            self._handles.pop(name, None)
            raise
        self._seen[name] = self._handles[name].version()
        return self._seen[name]

    def upsert(self, name: str, data: Any, *, lineage: Lineage,
               on: Iterable[str] | None = None) -> int:
        """Insert or update rows by the table's keys (or ``on``); returns the new version.

        The first write of a table is an append (no merge plan, no join over nothing); a
        later one by the table's keys with at most ``REPLACE_MAX_KEYS`` keys an overwrite
        whose predicate lists them, any other a :meth:`merge`. Source rows must be unique
        on the keys.
        """
        table = conform(spec(name), data)
        _check_unique(name, table, on or spec(name).keys, "upsert into")
        if name not in self._ensured and not self.exists(name):  # opened here: it exists
            return self.append(name, table, lineage=lineage)
        if on is None:
            version = self._replace_keys(name, table, table, lineage)
            if version is not None:
                return version
        return self.merge(name, table, lineage=lineage, on=on)["version"]

    def _replace_keys(self, name: str, table: Any, keys: Any, lineage: Lineage) -> int | None:
        """Replace the rows whose keys are among ``keys``' with ``table`` in one commit (an
        overwrite whose predicate lists the keys), or None when the keys are too many or
        not plain strings and integers (the caller merges instead). For a few keys this
        takes 0.6-0.8x the time of a merge, which plans a join over the whole table: most
        of what a small re-ingest costs."""
        import pyarrow as pa

        s = spec(name)
        cols = list(s.keys)
        n = keys.num_rows
        if not 0 < n <= REPLACE_MAX_KEYS or any(
                keys.column(k).null_count for k in cols) or not all(
                pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                for t in (s.schema.field(k).type for k in cols)):
            return None
        predicate = _keys_predicate(cols, keys.select(cols).to_pylist())
        self._ensure(name)
        done: list[DeltaTable] = []

        def run() -> None:
            done.append(self.open(name))
            write_deltalake(done[-1], table, mode="overwrite", predicate=predicate,
                            commit_properties=self._props(lineage))

        self._retrying(name, "upsert", run)
        self._handles.pop(name, None)  # the append handle's snapshot is stale now
        self._seen[name] = done[-1].version()  # the handle moved to its commit
        return self._seen[name]

    def overwrite(
        self, name: str, data: Any, *, lineage: Lineage, predicate: str | None = None
    ) -> int:
        """Replace the table's rows (or only those matching a SQL ``predicate``)."""
        s = spec(name)
        table = conform(s, data)
        self.create(name)

        def run() -> None:
            write_deltalake(
                self.table_uri(name), table, mode="overwrite", predicate=predicate,
                storage_options=self._opts, commit_properties=self._props(lineage),
            )

        self._retrying(name, "overwrite", run)
        self._handles.pop(name, None)  # the append handle's snapshot is stale now
        return self.version(name)

    def merge(
        self,
        name: str,
        data: Any,
        *,
        lineage: Lineage,
        on: Iterable[str] | None = None,
        delete_missing: bool = False,
        columns: Iterable[str] | Mapping[str, str] | None = None,
        insert: bool = True,
    ) -> dict[str, Any]:
        """Upsert rows by the table's keys (or ``on``): update matches, insert the rest.

        Source rows must be unique on the key. With ``delete_missing`` target rows whose key
        is absent from the source are deleted (a full sync). With ``columns``, a matched row
        gets only those columns from the source and keeps the rest as the table has them at
        commit time: a writer that owns a few columns (OCR progress, an editor's flag) never
        reverts columns another writer changed meanwhile, even when the commit is retried.
        ``columns`` may also map each column to an SQL expression over the target row ``t``
        and the source row ``s`` (e.g. ``CASE WHEN t.status = 'x' THEN t.status ELSE
        s.status END``), evaluated on the snapshot the commit lands on: a value decided by
        what the table holds at commit time, not by what the writer read earlier.
        With ``insert=False`` source rows without a match are dropped (update only).
        Returns delta-rs merge metrics plus the new ``version``.
        """

        s = spec(name)
        table = conform(s, data)
        keys = tuple(on or s.keys)
        _check_unique(name, table, keys, "merge into")
        self._ensure(name)
        predicate = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
        if columns is not None and not isinstance(columns, Mapping):
            columns = {c: f"s.{_quote(c)}" for c in columns}
        owned = None if columns is None else {_quote(c): e for c, e in columns.items()}
        unknown = sorted(set(columns or ()) - set(s.schema.names))
        if unknown:
            raise SchemaError(f"merge into {name!r}: no column(s) {unknown} in its schema.")

        def run() -> dict[str, Any]:
            dt = self.open(name)
            done.append(dt)
            merger = dt.merge(
                table, predicate=predicate, source_alias="s", target_alias="t",
                commit_properties=self._props(lineage),
            )
            if owned is None:
                merger = merger.when_matched_update_all()
            else:
                merger = merger.when_matched_update(owned)
            if insert:
                merger = merger.when_not_matched_insert_all()
            if delete_missing:
                merger = merger.when_not_matched_by_source_delete()
            return merger.execute()

        done: list[DeltaTable] = []
        metrics = self._retrying(name, "merge", run)
        self._handles.pop(name, None)  # the append handle's snapshot is stale now
        metrics["version"] = self._seen[name] = done[-1].version()  # the handle moved to its commit
        return metrics

    def sync(
        self, name: str, upserts: Any, *, lineage: Lineage, delete_keys: Any = None,
    ) -> dict[str, Any]:
        """Upsert ``upserts`` by the table's keys and delete the rows whose keys are in
        ``delete_keys``, in ONE commit (one table version; a reader never sees half of it).

        This is how a driver that owns a subset of a table's rows (ingest owns the books of
        its share, not the passages ``corpus import`` added) brings that subset to a new
        state: rows it still produces are upserted, rows it no longer produces are deleted,
        and rows it does not own are untouched. Nothing is written when both are empty.
        Returns delta-rs merge metrics plus the new ``version`` (``None`` when idle).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        s = spec(name)
        empty = upserts is None or (isinstance(upserts, list) and not upserts)
        table = s.schema.empty_table() if empty else conform(s, upserts)
        keys = list(s.keys)
        if delete_keys is None:
            delete_keys = pa.table({k: pa.array([], s.schema.field(k).type) for k in keys})
        elif isinstance(delete_keys, list):
            delete_keys = pa.Table.from_pylist(delete_keys) if delete_keys else pa.table(
                {k: pa.array([], s.schema.field(k).type) for k in keys})
        if not table.num_rows and not delete_keys.num_rows:
            return {"version": None}
        loose = pa.schema([f.with_nullable(True) for f in s.schema])
        gone = pa.Table.from_arrays(
            [delete_keys.column(f.name).cast(f.type) if f.name in keys
             else pa.nulls(delete_keys.num_rows, f.type) for f in loose], schema=loose)
        source = pa.concat_tables([table.cast(loose), gone])
        ops = ["u"] * table.num_rows + ["d"] * gone.num_rows
        source = source.append_column(_OP, pa.array(ops, pa.string()))
        dup = (source.group_by(keys).aggregate([([], "count_all")])
               .filter(pc.greater(pc.field("count_all"), 1)))
        if dup.num_rows:
            raise SchemaError(
                f"sync of {name!r}: {dup.num_rows} key(s) {tuple(keys)} occur more than once "
                f"among the upserts and deletions, e.g. {dup.slice(0, 1).to_pylist()[0]}.")
        version = self._replace_keys(name, table, pa.concat_tables(
            [table.select(keys), gone.select(keys).cast(table.select(keys).schema)]), lineage)
        if version is not None:
            return {"version": version}
        self._ensure(name)
        predicate = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
        done: list[DeltaTable] = []

        def run() -> dict[str, Any]:
            done.append(self.open(name))
            return (
                done[-1].merge(
                    source, predicate=predicate, source_alias="s", target_alias="t",
                    commit_properties=self._props(lineage))
                .when_matched_update_all(predicate=f"s.{_OP} = 'u'", except_cols=[_OP])
                .when_matched_delete(predicate=f"s.{_OP} = 'd'")
                .when_not_matched_insert_all(predicate=f"s.{_OP} = 'u'", except_cols=[_OP])
                .execute()
            )

        metrics = self._retrying(name, "sync", run)
        self._handles.pop(name, None)
        metrics["version"] = self._seen[name] = done[-1].version()  # the handle moved to its commit
        return metrics

    def delete(self, name: str, predicate: str, *, lineage: Lineage) -> dict[str, Any]:
        """Delete rows matching a SQL predicate; returns metrics plus the new ``version``."""
        if not predicate or not predicate.strip():
            raise CorpusError(
                f"delete from {name!r} needs a predicate; use overwrite to empty a table."
            )

        def run() -> dict[str, Any]:
            return self.open(name).delete(predicate, commit_properties=self._props(lineage))

        metrics = self._retrying(name, "delete", run)
        self._handles.pop(name, None)  # the append handle's snapshot is stale now
        metrics["version"] = self.version(name)
        return metrics

    def commit_files(self, name: str, files: Iterable[DataFile], *, lineage: Lineage,
                     replace: Iterable[tuple] = ()) -> int | None:
        """Commit data files that workers wrote (:mod:`catalog.datafiles`) in ONE commit.

        ``replace`` lists keys (tuples of the table's key columns) whose rows the files
        replace: in the same commit, a file holding only rows with such keys is removed and a
        file mixing them with other rows is rewritten without them (read here). Rows must be
        unique on the keys across what stays and what is added; the caller makes sure the
        new files hold each key once.

        Returns:
            The new table version, or None when there was nothing to commit.
        """
        files = list(files)
        wrong = sorted({f.table for f in files} - {name})
        if wrong:
            raise SchemaError(f"commit to {name!r} was handed data files of {wrong}.")
        replace = {tuple(k) for k in replace}
        self._ensure(name)
        written: list[DataFile] = []  # rewrites of mixed files, made once per attempt

        def run() -> bool:
            dt = self.open(name)
            actions = [f.add_action() for f in files]
            for f in written:  # an earlier attempt's rewrites: stale now
                self._delete_data_file(name, f.path)
            written.clear()
            if replace:
                actions += self._replace_actions(name, dt, replace, written)
            if not actions:
                return False
            dt.create_write_transaction(actions, mode="append", schema=dt.schema(),
                                        commit_properties=self._props(lineage))
            return True

        committed = self._retrying(name, "commit", run)
        self._handles.pop(name, None)  # the append handle's snapshot is stale now
        return self.version(name) if committed else None

    def _replace_actions(self, name: str, dt: DeltaTable, replace: set[tuple],
                         written: list[DataFile]) -> list:
        """Remove actions for the files holding rows with keys in ``replace``, and add
        actions for rewrites of those files that also hold other rows."""
        import time

        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake.transaction import RemoveAction

        from catalog.datafiles import write_data_file

        keys = list(spec(name).keys)
        per_col = {k: {r[i] for r in replace} for i, k in enumerate(keys)}
        maybe = {}
        for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
            ruled_out = False
            for k, vals in per_col.items():
                lo, hi = a.get(f"min.{k}"), a.get(f"max.{k}")
                if lo is not None and hi is not None and not any(lo <= v <= hi for v in vals):
                    ruled_out = True  # the statistics say no key of this file is replaced
                    break
            if not ruled_out:
                maybe[a["path"]] = a
        if not maybe:
            return []
        wanted = pa.array(sorted("\x1f".join(map(str, k)) for k in replace), pa.string())

        def hits(table: pa.Table) -> pa.ChunkedArray:
            joined = pc.binary_join_element_wise(
                *[table.column(k).cast(pa.string()) for k in keys], "\x1f")
            return pc.is_in(joined, value_set=wanted)

        now = int(time.time() * 1000)
        actions = []
        for frag in scan_dataset(name, dt).get_fragments():
            path = next((p for p in maybe if frag.path == p or frag.path.endswith("/" + p)),
                        None)
            if path is None:
                continue
            hit = hits(frag.to_table(columns=keys))
            n_hit = pc.sum(hit).as_py() or 0
            if not n_hit:
                continue
            actions.append(RemoveAction(path, True, now, maybe[path]["size_bytes"]))
            if n_hit < len(hit):  # other rows share the file: they stay, in a new one
                rows = frag.to_table()
                keep = rows.filter(pc.invert(hits(rows))).cast(spec(name).schema)
                f = write_data_file(self.config, name, keep)
                written.append(f)
                actions.append(f.add_action())
        return actions

    def _delete_data_file(self, name: str, path: str) -> None:
        from catalog.datafiles import _table_store

        _table_store(self.config, name).delete(path)

    # ---- history, lineage ------------------------------------------------------------
    def history(self, name: str, limit: int | None = None) -> list[Commit]:
        """Commits of table ``name``, newest first."""
        return [Commit.from_history(name, h) for h in self.open(name).history(limit)]

    def lineage(self, name: str, version: VersionRef = None) -> LineageNode:
        """Walk lineage transitively from ``name@version`` down to its sources.

        The lineage of a version is every commit up to it (a table version is the sum of
        its commits) and, recursively, every table version those commits read.
        """
        memo: dict[tuple[str, int], LineageNode] = {}
        histories: dict[str, list[Commit]] = {}

        def node(table: str, ver: int) -> LineageNode:
            if (table, ver) in memo:
                return memo[(table, ver)]
            if table not in histories:
                histories[table] = self.history(table)
            commits = [c for c in histories[table] if c.version <= ver]
            sources = sorted({s for c in commits for s in c.sources})
            n = LineageNode(table, ver, commits, [], sources)
            memo[(table, ver)] = n
            inputs = sorted({(t, v) for c in commits for t, v in c.inputs.items()})
            n.parents = [node(t, v) for t, v in inputs]
            return n

        return node(name, self.open(name, version).version())

    # ---- maintenance -----------------------------------------------------------------
    def optimize(self, name: str, *, lineage: Lineage | None = None) -> dict[str, Any]:
        """Compact small files into larger ones (a new version; data unchanged)."""
        lineage = lineage or Lineage(operation="optimize")
        self._handles.pop(name, None)
        dt = self.open(name)
        return dt.optimize.compact(commit_properties=self._props(lineage))

    def vacuum(
        self, name: str, *, retention_hours: int = 168, dry_run: bool = True
    ) -> list[str]:
        """Delete files no longer referenced by versions newer than the retention window, and
        files no commit ever referenced (the data files of a job that failed before its
        commit, :mod:`catalog.datafiles`) once they are older than the window.

        Time travel to versions older than the window stops working for vacuumed files;
        hence the one-week default and ``dry_run`` by default.
        """
        dt = self.open(name)
        return dt.vacuum(
            retention_hours=retention_hours, dry_run=dry_run,
            enforce_retention_duration=False, full=True,
            commit_properties=self._props(Lineage(operation="vacuum")),
        )

    def list_tables(self) -> list[str]:
        """Names of the declared tables that exist under this root."""
        return [n for n in TABLE_NAMES if self.exists(n)]

    def stats(self, name: str) -> TableStats:
        """Version, rows, data files and bytes of table ``name`` at its latest version."""
        import pyarrow as pa
        import pyarrow.compute as pc

        dt = self.open(name)
        actions = pa.table(dt.get_add_actions(flatten=True))
        rows = pc.sum(actions.column("num_records")).as_py() if actions.num_rows else 0
        size = pc.sum(actions.column("size_bytes")).as_py() if actions.num_rows else 0
        return TableStats(
            name=name, version=dt.version(), rows=int(rows or 0), files=actions.num_rows,
            bytes=int(size or 0), description=spec(name).description,
        )


def _check_unique(name: str, table: Any, keys: Iterable[str], op: str) -> None:
    """Refuse source rows that repeat a key: a merge would fail on them half-way."""
    import pyarrow.compute as pc

    keys = tuple(keys)
    dup = (
        table.group_by(list(keys)).aggregate([([], "count_all")])
        .filter(pc.greater(pc.field("count_all"), 1))
    )
    if dup.num_rows:
        raise SchemaError(
            f"{op} {name!r}: {dup.num_rows} key(s) {keys} occur more than once in "
            f"the source, e.g. {dup.slice(0, 1).to_pylist()[0]}; deduplicate first."
        )
