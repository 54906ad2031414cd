"""`corpus ingest SHARE`: migrate an editorial share into the lakehouse, and follow it.

The driver walks the share, fans the per-file work out over an executor (a local process
pool, or a Ray cluster whose nodes see the share at the same path: :mod:`catalog.executor`;
the file records stream back), assembles the books (pure, :mod:`ingest.assemble`) and
brings each table to the share's state in one commit whose lineage names the share. The
contract, for any sequence of edits to the share (add, change, delete, move, new edition,
rescan, new score sheet): ingest(A) then ingest(B) leaves ``books``, the ``edited`` texts,
``scores`` and ``scans`` equal to a fresh ingest(B); ``files`` keeps every path ever seen (a
path that left the share is ``removed``, its bytes still stored) and older table versions
keep the old state.

A re-run reads only what changed. Per-file records (path, size, mtime, and what the readers
found, but no text) are kept in the object store as Arrow IPC, in buckets by path hash, keyed
by share and reader-code version; no code is ever deserialised from storage. A file whose
path, size and mtime (ns) match its record is not read; the books any new, changed or
vanished file belongs to are *dirty*, and only their files are read and only their rows
rewritten. When one score sheet changed, all sheets are read again (they are few and
small, and the current scores depend on all of them). The records are saved after the
tables commit, so a run killed anywhere is redone by the next one.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from catalog import Lakehouse, LakehouseConfig, Lineage, TableNotFoundError, rules, spec
from catalog.executor import Executor, Failed, make_executor
from catalog.storage import LocalStore, ObjectStore, cached_store
from ingest.assemble import Assembled, assemble, current_version_paths
from ingest.scan_status import FLAG_STATUSES
from ingest.share import EDITED, SCORES, FileRecord, inspect_file, walk_paths

log = logging.getLogger(__name__)

# Columns that change on every run without the data changing: not compared.
VOLATILE = {"ingested_at", "updated_at", "created_at"}
# scans: ingest owns identity and content; OCR and editors own the state columns, which
# ingest resets only when the scan's content changed (a rescan).
SCAN_OWNED = ("book_id", "source", "n_pages", "sha256")


@dataclass
class IngestReport:
    """What one ingest run found and wrote."""

    share: str
    n_files: int = 0
    n_read: int = 0  # files read and hashed this run (the others were unchanged: reused)
    n_dirty: int = 0  # books re-assembled this run (their files changed, or first run)
    by_status: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)   # table -> rows inserted/updated
    versions: dict[str, int] = field(default_factory=dict)  # table -> version after the run
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    score_rejects: list = field(default_factory=list)
    seconds: float = 0.0
    executor: dict = field(default_factory=dict)  # where the files were read (summary)


def _inspect(root: str, config: LakehouseConfig | None, rel: str) -> FileRecord:
    return inspect_file(root, rel, cached_store(config) if config is not None else None)


@functools.lru_cache(maxsize=1 << 20)
def _bucket(rel: str) -> int:
    return int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % N_BUCKETS


@functools.cache
def readers_version() -> str:
    """A digest of the code that turns a file into a :class:`FileRecord` and records into
    rows: a cached record is reused only when this code is unchanged (a reader fix, or a
    new assembly rule, re-reads every file and rebuilds every book: clean books keep their
    rows and statuses only while the rules that made them are the same)."""
    here = Path(__file__).parent
    files = [here / f"{mod}.py" for mod in ("share", "scoresheets", "assemble", "driver")]
    files += sorted((here / "readers").glob("*.py"))  # every room of the readers package
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(here).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _stat_key(p: Path) -> tuple[int, int]:
    st = p.lstat()
    return st.st_size, st.st_mtime_ns


# ---- the per-file record cache (Arrow IPC, no pickle, no text) ---------------------------------

N_BUCKETS = 16
SMALL_BATCH = 24  # fewer files than this are read in this process, without a pool
_BATCH = 4  # files per task of the pool
_INLINE_BELOW = -(-SMALL_BATCH // _BATCH)  # tasks
_CACHED = ("path", "size", "mtime", "sha256", "kind", "format", "encoding", "book_id",
           "reason", "blob_key", "title", "author", "n_pages", "symlink_to")
CACHE_SCHEMA = pa.schema([
    ("path", pa.string()), ("stat_size", pa.int64()), ("stat_mtime_ns", pa.int64()),
    ("size", pa.int64()), ("mtime", pa.timestamp("us", tz="UTC")), ("sha256", pa.string()),
    ("kind", pa.string()), ("format", pa.string()), ("encoding", pa.string()),
    ("book_id", pa.string()), ("reason", pa.string()), ("blob_key", pa.string()),
    ("title", pa.string()), ("author", pa.string()), ("n_pages", pa.int64()),
    ("symlink_to", pa.string()),
])


def record_cache_prefix(share: Path) -> str:
    """Object-store prefix of the record cache of ``share`` (one per share path and reader
    code version)."""
    where = hashlib.sha256(str(share.resolve()).encode()).hexdigest()[:16]
    return f"cache/ingest/{where}/records-{readers_version()}"


Cached = dict[str, tuple[tuple[int, int], FileRecord]]
assert [f.name for f in fields(FileRecord)][:len(_CACHED) - 2] == list(_CACHED[:-2])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _cache_key(prefix: str, bucket: int) -> str:
    return f"{prefix}/{bucket:02d}.arrow"


def load_record_cache(store: ObjectStore, prefix: str, paths: list[str]) -> Cached:
    """The records of the previous run for the buckets that ``paths`` fall in (path ->
    ((size, mtime_ns), record without text)). Empty when there are none or they cannot be
    read: the cache only saves work, a damaged one costs a full read, never a failed run.

    Objects are uncompressed Arrow IPC files: data only (nothing is deserialised into code),
    and about 25x cheaper to open than Parquet for objects this small (~0.05 ms against
    ~1 ms a bucket), which is most of an unchanged re-run's fixed cost on a small share."""
    import pyarrow.ipc as ipc

    def load(b: int) -> pa.Table | None:
        key = _cache_key(prefix, b)
        try:
            if not store.exists(key):
                return None
            table = ipc.open_file(pa.BufferReader(store.get_bytes(key))).read_all()
            if not table.schema.equals(CACHE_SCHEMA):
                raise ValueError("unexpected columns")
            table.validate(full=True)  # a damaged buffer is an error here, not a crash later
            return table
        except Exception as e:  # any damage means: read those files again
            log.warning("ignoring the unreadable ingest cache object %s: %s", key, e)
            return None

    buckets = sorted({_bucket(p) for p in paths})
    if isinstance(store, LocalStore):  # a local read costs less than a thread
        tables = [load(b) for b in buckets]
    else:  # fetched concurrently: on S3 each object is a round trip
        with ThreadPoolExecutor(8) as pool:
            tables = list(pool.map(load, buckets))
    out: Cached = {}
    for table in tables:
        if table is None:
            continue
        cols = {c: table.column(c).to_pylist() for c in table.column_names if c != "mtime"}
        # pyarrow builds a zone-aware datetime ~20x slower than this (most of a load)
        cols["mtime"] = [None if us is None else _EPOCH + timedelta(microseconds=us)
                         for us in table.column("mtime").cast(pa.int64()).to_pylist()]
        # positional up to ``author`` (the fields' order, checked below), then by name
        for stat_key, (*head, n_pages, symlink_to) in zip(
                zip(cols["stat_size"], cols["stat_mtime_ns"], strict=True),
                zip(*(cols[k] for k in _CACHED), strict=True), strict=True):
            out[head[0]] = (stat_key, FileRecord(*head, n_pages=n_pages, symlink_to=symlink_to))
    return out


def save_record_cache(store: ObjectStore, objects: dict[str, bytes]) -> int:
    """Write the objects of :func:`encode_record_cache`; returns how many."""
    # written concurrently: on S3 each object is a round trip, locally a rename
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: store.put_bytes(*kv), objects.items()))
    return len(objects)


def encode_record_cache(prefix: str, old: Cached, new: Cached) -> dict[str, bytes]:
    """The buckets whose records changed, as objects to write (a record is kept without its
    text and without the parsed scores of a sheet)."""
    import pyarrow.ipc as ipc

    changed = {_bucket(p) for p in old.keys() ^ new.keys()}
    changed |= {_bucket(p) for p, v in new.items() if p in old and old[p] != v}
    by_bucket: dict[int, list[str]] = defaultdict(list)
    for p in new:
        b = _bucket(p)
        if b in changed:
            by_bucket[b].append(p)
    def encode(b: int) -> bytes:
        paths = sorted(by_bucket.get(b, []))
        recs = [new[p] for p in paths]
        cols = {"path": paths, "stat_size": [k[0] for k, _ in recs],
                "stat_mtime_ns": [k[1] for k, _ in recs],
                **{f: [getattr(r, f) for _, r in recs] for f in _CACHED[1:]}}
        table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in CACHE_SCHEMA},
                         schema=CACHE_SCHEMA)
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, CACHE_SCHEMA) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    return {_cache_key(prefix, b): encode(b) for b in sorted(changed)}


@dataclass(frozen=True)
class _Share:
    """What a worker inspects files with: the share's root and the lakehouse (None: a dry
    run stores nothing)."""

    root: str
    config: LakehouseConfig | None


def _share_job(job: _Share) -> _Share:
    return job  # a worker's state: the share and where to store, handed over once


def _inspect_files(job: _Share, batch: list[str]) -> list[FileRecord]:
    """The worker function: each file hashed, stored, classified and read."""
    return [_inspect(job.root, job.config, rel) for rel in batch]


def inventory(share: Path, paths: list[str], *, config: LakehouseConfig | None,
              workers: int | None = None, executor: Executor | None = None,
              ) -> dict[str, FileRecord]:
    """Inspect the given files of the share, in parallel over ``executor`` (default: a local
    pool of ``workers``; one process when ``workers`` is 1 or the files are few).

    A file whose inspection raised (a reader bug, not a bad file: those become reasons) is
    quarantined with the error as its reason; the others are kept.
    """
    from ingest.share import _unusable_record

    root = str(share.resolve())
    executor = executor or make_executor("local", workers=workers)
    if executor.kind == "local" and executor.workers > 1 and len(paths) >= SMALL_BATCH:
        # Import the readers before the pool starts: forked workers then share them instead
        # of each paying ~0.5 s of imports (PyMuPDF, python-docx, lxml, ebooklib...).
        import ingest.readers
        import ingest.scoresheets  # noqa: F401

    def size(rel: str) -> int:
        try:
            return (share / rel).lstat().st_size
        except OSError:
            return 0

    # Heaviest first (sorted by size) keeps every worker busy until the end.
    order = sorted(paths, key=lambda rel: -size(rel))
    # a pool costs more to start than a few files cost to read (a typical re-run)
    records = executor.map(_inspect_files, [order[i:i + _BATCH]
                                            for i in range(0, len(order), _BATCH)],
                           setup=_share_job, setup_args=(_Share(root, config),),
                           desc="ingest", unit="file", total=len(order),
                           inline_below=_INLINE_BELOW)
    out = {}
    for rel, rec in zip(order, records, strict=True):
        if isinstance(rec, Failed):
            log.warning("%s: could not be inspected (%s): quarantined", rel, rec.reason)
            try:
                st = os.lstat(share / rel)
            except OSError:
                st = os.stat_result((0,) * 10)
            rec = _unusable_record(rel, st, f"could not be inspected: {rec.reason}")
        out[rel] = rec
    return out


def inventory_starts_processes(executor: Executor, n_files: int) -> bool:
    """Whether :func:`inventory` of ``n_files`` files would start worker processes."""
    return executor.starts_processes(-(-n_files // _BATCH), inline_below=_INLINE_BELOW)


def changed_rows(old: pa.Table, new: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Rows of ``new`` that are absent from ``old`` or differ from it (volatile timestamps
    ignored). Columns are compared with Arrow kernels where they can be (a 250k-row
    ``files`` table compares in milliseconds), list columns row by row."""
    if not new.num_rows:
        return new
    if not old.num_rows:
        return new
    key = _key_column(new, keys)
    idx = pc.index_in(key, value_set=_key_column(old, keys))
    found = pc.is_valid(idx)
    old_at = old.take(pc.fill_null(idx, 0))
    same = found
    for c in new.column_names:
        if c in VOLATILE:
            continue
        a, b = new.column(c), old_at.column(c)
        if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
            eq = pa.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])
        else:
            both_null = pc.and_(pc.is_null(a), pc.is_null(b))
            eq = pc.or_(both_null, pc.fill_null(pc.equal(a, b), False))
        same = pc.and_(same, eq)
    return new.filter(pc.invert(same))


def _key_column(table: pa.Table, keys: tuple[str, ...]) -> pa.Array:
    """One comparable key per row: the key column, or its columns joined as text."""
    if len(keys) == 1:
        return table.column(keys[0]).combine_chunks()
    parts = [pc.cast(table.column(k), pa.string()).fill_null("\x00") for k in keys]
    return pc.binary_join_element_wise(*parts, "\x1f").combine_chunks()


def _read(lakehouse: Lakehouse, name: str, columns=None) -> pa.Table:
    try:
        return lakehouse.read(name, columns=columns)
    except TableNotFoundError:
        t = spec(name).schema.empty_table()
        return t.select(columns) if columns else t


class _Prefetch:
    """The tables read in a thread while the share is walked and its changed files read
    (on a re-run of a small edit the two cost about the same). :meth:`result` joins the
    thread, and must be called before anything forks: a process forked while another
    thread runs can inherit a held lock and hang."""

    def __init__(self, lakehouse: Lakehouse) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-read")
        self._future = self._pool.submit(_read_owned, lakehouse)

    def result(self) -> dict[str, pa.Table]:
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True)  # joined: no thread left running


def _read_owned(lakehouse: Lakehouse) -> dict[str, pa.Table]:
    """The tables ingest compares its result with (``texts``: only which books have an
    ``edited`` text), read side by side: on a re-run of a small edit, opening and reading
    five tables one after the other is a good part of the run."""
    reads = {"files": {}, "books": {}, "texts": {"columns": ["book_id", "variant"]},
             "scans": {}, "scores": {}}
    with ThreadPoolExecutor(len(reads)) as pool:
        running = {name: pool.submit(_read, lakehouse, name, **kw) for name, kw in reads.items()}
        return {name: fut.result() for name, fut in running.items()}


def _keys(table: pa.Table, keys: tuple[str, ...]) -> set[tuple]:
    return {tuple(r[k] for k in keys) for r in table.select(list(keys)).to_pylist()}


def _sync_owned(lakehouse: Lakehouse, name: str, new: pa.Table, old: pa.Table,
                lineage: Lineage) -> int:
    """Bring the rows ingest owns (``old``) to ``new``: changed and new rows upserted,
    rows no longer produced deleted, in one commit. Returns the rows written."""
    keys = spec(name).keys
    todo = changed_rows(old, new, keys)
    gone = _keys(old, keys) - _keys(new, keys)
    delete = [dict(zip(keys, k, strict=True)) for k in sorted(gone, key=repr)]
    if delete:  # upserts and deletions in one commit
        lakehouse.sync(name, todo, delete_keys=delete, lineage=lineage)
    elif todo.num_rows:
        lakehouse.upsert(name, todo, lineage=lineage)
    return todo.num_rows + len(delete)


def _sync_texts(lakehouse: Lakehouse, out: Assembled, old_books: pa.Table, dirty: set[str],
                have_texts: set[str], lineage: Lineage) -> int:
    """The ``edited`` texts of the dirty books, without reading the old texts: a book's
    text row changes exactly when its ``books`` row does (text_sha256 and sources, which
    give derived_from), or when it has no text row yet."""
    changed = set(changed_rows(old_books, out.books, spec("books").keys)
                  .column("book_id").to_pylist())
    ids = out.texts.column("book_id")
    todo = out.texts.filter(pc.or_(
        pc.is_in(ids, value_set=pa.array(sorted(changed), pa.string())),
        pc.invert(pc.is_in(ids, value_set=pa.array(sorted(have_texts), pa.string())))))
    made = set(ids.to_pylist())
    gone = [{"book_id": b, "variant": rules.EDITED} for b in sorted(dirty & have_texts - made)]
    if gone:  # upserts and deletions in one commit
        lakehouse.sync("texts", todo, delete_keys=gone, lineage=lineage)
    elif todo.num_rows:
        lakehouse.upsert("texts", todo, lineage=lineage)
    return todo.num_rows + len(gone)


def _sync_scans(lakehouse: Lakehouse, new: pa.Table, registered: pa.Table,
                lineage: Lineage) -> int:
    """Scans found now vs registered: new ones inserted, vanished ones deleted, a changed
    content (a rescan) resets the OCR state (status new, pages recounted), and a changed
    book or page count of the same content updates only those columns."""
    old = {r["scan_id"]: r for r in registered.to_pylist()}
    now = {r["scan_id"]: r for r in new.to_pylist()}
    reset, owned = [], []
    for sid, r in now.items():
        o = old.get(sid)
        if o is None:
            reset.append(r)
        elif o["sha256"] is not None and o["sha256"] != r["sha256"]:
            # a rescan: OCR state back to new, old pages kept as history; an open flag
            # keeps its status (the rule of ingest.scan_status)
            keep = o["status"] if o["status"] in FLAG_STATUSES else "new"
            reset.append({**r, "status": keep})
        elif any(o[c] != r[c] for c in SCAN_OWNED):
            owned.append(r)
    gone = [{"scan_id": sid} for sid in sorted(set(old) - set(now))]
    if gone:  # upserts and deletions in one commit
        lakehouse.sync("scans", reset, delete_keys=gone, lineage=lineage)
    elif reset:
        lakehouse.upsert("scans", reset, lineage=lineage)
    if owned:  # OCR state untouched: only the columns ingest owns
        lakehouse.merge("scans", owned, lineage=lineage, columns=SCAN_OWNED, insert=False)
    return len(reset) + len(gone) + len(owned)


def _removed(old: pa.Table, files: pa.Table, now: datetime) -> pa.Table:
    """Rows of files that an earlier run saw (``old``) and the share no longer holds:
    kept, marked ``removed`` (their bytes stay in the object store)."""
    gone = pc.invert(pc.is_in(old.column("path"), value_set=files.column("path")))
    gone = pc.and_(gone, pc.not_equal(old.column("status"), "removed"))
    rows = []
    for r in old.filter(gone).to_pylist():
        seen = r["ingested_at"]
        rows.append({**r, "status": "removed", "ingested_at": now,
                     "reason": f"no longer in the share (last seen {seen:%Y-%m-%d %H:%M} UTC, "
                               f"was {r['status']}); its bytes are kept at blob_uri"})
    return pa.Table.from_pylist(rows, schema=files.schema)


def _dirty_books(edited: pa.Table, records: list[FileRecord], fresh: set[str],
                 cached: Cached, old_files: pa.Table, old_books: pa.Table, *, full: bool
                 ) -> tuple[set[str], set[str]]:
    """Books whose ``books``/``texts`` rows must be rebuilt: those of every file read this
    run (new or changed), of every cached path that left the share, and every book the
    share has that the tables lack (a run killed before its commits). Also returns the
    books that have an ``edited`` text row."""
    present = {r.path for r in records}
    dirty = {r.book_id for r in records if r.path in fresh and r.book_id}
    dirty |= {rec.book_id for p, (_, rec) in cached.items()
              if rec.book_id and (p in fresh or p not in present)}
    if full or not cached:
        dirty |= {r.book_id for r in records if r.book_id}
        dirty |= set(old_files.column("book_id").drop_null().to_pylist())
    expected = {r.book_id for r in records
                if r.kind == EDITED and r.reason is None and r.book_id}
    have_books = set(old_books.column("book_id").to_pylist())
    have_texts = {b for b, v in zip(edited.column("book_id").to_pylist(),
                                    edited.column("variant").to_pylist(), strict=True)
                  if v == rules.EDITED}
    return dirty | (expected - have_books) | (expected - have_texts), have_texts


@contextlib.contextmanager
def _no_cyclic_gc():
    """Pause the cyclic garbage collector: a run builds hundreds of thousands of small
    objects (records, rows) and no reference cycles, and its collection passes cost ~10% of
    a re-run; reference counting still frees everything as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def run_ingest(
    lakehouse: Lakehouse, share: str | Path, *, workers: int | None = None,
    dry_run: bool = False, full: bool = False, executor: str = "local",
    ray_address: str | None = None,
) -> IngestReport:
    """Ingest ``share`` into the lakehouse (see the module docstring and :func:`_ingest`)."""
    ex = make_executor(executor, workers=workers, address=ray_address)
    with _no_cyclic_gc():
        return _ingest(lakehouse, share, executor=ex, dry_run=dry_run, full=full)


def _ingest(
    lakehouse: Lakehouse, share: str | Path, *, executor: Executor,
    dry_run: bool = False, full: bool = False,
) -> IngestReport:
    """Ingest ``share`` into the lakehouse (see the module docstring).

    Args:
        lakehouse: Where to write.
        share: The share's root folder.
        executor: Where the per-file work runs (a local pool of all cores by default; on
            Ray every node must see the share at this path).
        dry_run: Inspect and assemble, store nothing, write nothing.
        full: Read and hash every file again, ignoring the records of the previous run.
    """
    t0 = datetime.now(UTC)
    share = Path(share).resolve()
    config = None if dry_run else lakehouse.config
    # what the tables hold now, read while the share is walked (joined before any fork)
    prefetch = None if dry_run else _Prefetch(lakehouse)
    try:
        return _ingest_with(lakehouse, share, executor=executor, dry_run=dry_run, full=full,
                            t0=t0, config=config, prefetch=prefetch)
    finally:
        if prefetch is not None:
            with contextlib.suppress(Exception):  # the run's own error is the one to raise
                prefetch.result()


def _ingest_with(lakehouse: Lakehouse, share: Path, *, executor: Executor, dry_run: bool,
                 full: bool, t0: datetime, config: LakehouseConfig | None,
                 prefetch: _Prefetch | None) -> IngestReport:
    paths = walk_paths(share)
    # (size, mtime_ns) as seen *before* reading: a file changed during the run is read again
    # next time. lstat: never follows a link, never opens a FIFO.
    stats: dict[str, tuple[int, int]] = {}
    root = str(share)
    for rel in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(f"{root}/{rel}")
            stats[rel] = st.st_size, st.st_mtime_ns
    prefix = record_cache_prefix(share)
    cached: Cached = ({} if dry_run or full
                      else load_record_cache(lakehouse.store, prefix, paths))
    records_by_path: dict[str, FileRecord] = {}
    for rel in paths:
        hit = cached.get(rel)
        if hit is not None and rel in stats and hit[0] == stats[rel]:
            records_by_path[rel] = hit[1]
    todo = [rel for rel in paths if rel not in records_by_path]
    if records_by_path:
        log.info("%d of %d files unchanged since the last ingest: not read again",
                 len(records_by_path), len(paths))
    tables = None
    if prefetch is not None and inventory_starts_processes(executor, len(todo)):
        tables = prefetch.result()  # no thread may run while a pool forks its workers
    records_by_path.update(inventory(share, todo, config=config, executor=executor))
    fresh = set(todo)
    records = [records_by_path[rel] for rel in paths]
    if tables is None:
        tables = {} if prefetch is None else prefetch.result()
    old_files = None if dry_run else tables["files"]
    all_books = None if dry_run else tables["books"]
    dirty, have_texts = ((None, set()) if dry_run else
                         _dirty_books(tables["texts"], records, fresh, cached,
                                      old_files, all_books,
                                      full=full))
    known = None
    if dirty is not None and old_files.num_rows:
        live = old_files.filter(pc.and_(pc.equal(old_files.column("kind"), EDITED),
                                        pc.not_equal(old_files.column("status"), "removed")))
        known = dict(zip(live.column("path").to_pylist(),
                         zip(live.column("status").to_pylist(),
                             live.column("reason").to_pylist(), strict=True), strict=True))
    if dirty is not None:
        # a clean book whose files the files table does not know (it was rolled back or
        # edited by hand) cannot keep its statuses: rebuild it
        dirty |= {r.book_id for r in records if r.kind == EDITED and r.book_id
                  and r.book_id not in dirty and r.path not in (known or {})}
    # the unchanged files of the dirty books' current versions are read too: their text is
    # not cached (and the text of an older version is not needed)
    if dirty is None:
        wanted = None
    else:
        wanted = current_version_paths([r for r in records if r.kind == EDITED
                                        and r.book_id in dirty])
    need = [r.path for r in records if r.kind == EDITED and r.text is None and r.reason is None
            and r.book_id and (wanted is None or r.path in wanted)]
    # score sheets: all read again when one is new, changed or gone (the current scores
    # depend on every sheet), none when none changed
    present = set(paths)
    if any(r.kind == SCORES and r.path in fresh for r in records) or any(
            rec.kind == SCORES and p not in present for p, (_, rec) in cached.items()):
        need += [r.path for r in records if r.kind == SCORES and r.path not in fresh]
    if need:
        records_by_path.update(inventory(share, need, config=config, executor=executor))
        fresh |= set(need)
        records = [records_by_path[rel] for rel in paths]
    store = None if dry_run else lakehouse.store
    out: Assembled = assemble(records, ingested_at=t0, dirty=dirty, known=known,
                              blob_uri=(store.uri if store else (lambda k: k)))
    report = IngestReport(share=str(share), n_files=len(records), n_read=len(fresh),
                          n_dirty=len(out.books))
    for col, counts in (("status", report.by_status), ("kind", report.by_kind)):
        for vc in pc.value_counts(out.files.column(col)).to_pylist():
            counts[vc["values"]] = vc["counts"]
    held = out.files.filter(pc.equal(out.files.column("status"), "quarantined"))
    report.quarantined = list(zip(held.column("path").to_pylist(),
                                  held.column("reason").to_pylist(), strict=True))
    report.score_rejects = list(out.score_rejects)
    report.executor = executor.summary()
    if dry_run:
        report.seconds = (datetime.now(UTC) - t0).total_seconds()
        return report
    files = out.files
    if old_files.num_rows:
        files = pa.concat_tables([files, _removed(old_files, files, t0)])
        n_removed = files.num_rows - out.files.num_rows
        if n_removed:
            report.by_status["removed"] = n_removed
    digest = hashlib.sha256("\n".join(
        f"{r.path}\t{r.sha256}" for r in records).encode()).hexdigest()
    lineage = Lineage(
        operation="ingest", sources=[f"{share} ({len(records)} files, manifest "
                                     f"sha256:{digest})"],
        config={"share": str(share), "executor": executor.describe()},
    )
    share_paths = set(files.column("path").to_pylist())
    dirty_ids = pa.array(sorted(dirty), pa.string())
    old_books = all_books.filter(pc.is_in(all_books.column("book_id"), value_set=dirty_ids))
    old_scores = tables["scores"]
    old_scores = old_scores.filter(pc.is_in(old_scores.column("source_file"),
                                            value_set=pa.array(sorted(share_paths), pa.string())))
    # the five tables are independent and commit side by side: on a small edit each commit
    # is mostly fixed cost (a merge plan, a log write), and delta-rs runs it without the GIL.
    # A run killed between them is redone by the next one: the records are saved last.
    scores_changed = all(r.path in fresh for r in records if r.kind == SCORES)
    todo_files = changed_rows(old_files, files, spec("files").keys)

    def sync_files() -> int:
        if todo_files.num_rows:
            lakehouse.upsert("files", todo_files, lineage=lineage)
        return todo_files.num_rows

    # entries whose bytes were never read (a FIFO, a file nobody may read) are looked at
    # again every run: a chmod fixes a file without changing its size or mtime
    new_cache = {r.path: (stats[r.path], r) for r in records
                 if r.path in stats and (r.blob_key or r.symlink_to)}
    syncs = {
        "books": lambda: _sync_owned(lakehouse, "books", out.books, old_books, lineage),
        "texts": lambda: _sync_texts(lakehouse, out, old_books, dirty, have_texts, lineage),
        "scans": lambda: _sync_scans(lakehouse, out.scans, tables["scans"], lineage),
        # no sheet changed: the scores stay as they are
        "scores": ((lambda: _sync_owned(lakehouse, "scores", out.scores, old_scores, lineage))
                   if scores_changed else (lambda: 0)),
        "files": sync_files,
    }
    with ThreadPoolExecutor(len(syncs) + 1) as pool:
        running = {name: pool.submit(fn) for name, fn in syncs.items()}
        # encoded meanwhile, written only after every commit
        objects = pool.submit(encode_record_cache, prefix, cached, new_cache)
        for name, fut in running.items():
            report.written[name] = fut.result()
        objects = objects.result()
    for name in ("books", "texts", "scans", "scores", "files"):
        seen = lakehouse.seen_version(name)  # each was read or written above
        if seen is None:
            with contextlib.suppress(TableNotFoundError):
                seen = lakehouse.version(name)
        if seen is not None:
            report.versions[name] = seen
    # the records last: a run killed before here is redone by the next one
    save_record_cache(lakehouse.store, objects)
    report.seconds = (datetime.now(UTC) - t0).total_seconds()
    return report


