"""`corpus ingest SHARE`: migrate an editorial share into the lakehouse.

The driver walks the share, fans the per-file work out over a process pool, assembles the
books (pure, :mod:`ingest.assemble`) and writes only the rows that changed, each table in
one commit whose lineage names the share. Re-running on an unchanged share writes nothing;
a killed run is finished by the next one (blobs are content-addressed, table commits are
atomic, and every table is rewritten from the whole share's state).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pyarrow as pa

from catalog import Lakehouse, LakehouseConfig, Lineage, TableNotFoundError, spec
from catalog.log import progress
from catalog.storage import cached_store
from catalog.workers import process_pool
from ingest.assemble import Assembled, assemble
from ingest.share import FileRecord, inspect_file, walk_share

log = logging.getLogger(__name__)

# Columns that change on every run without the data changing: not compared.
VOLATILE = {"ingested_at", "updated_at", "created_at"}
# scans: OCR owns status/progress once a scan is registered; ingest only adds new scans.
INSERT_ONLY = {"scans"}


@dataclass
class IngestReport:
    """What one ingest run found and wrote."""

    share: str
    n_files: int = 0
    n_read: int = 0  # files read and hashed this run (the others were unchanged: reused)
    by_status: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)   # table -> rows inserted/updated
    versions: dict[str, int] = field(default_factory=dict)  # table -> version after the run
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    score_rejects: list = field(default_factory=list)
    seconds: float = 0.0


def _inspect(root: str, config: LakehouseConfig | None, rel: str) -> FileRecord:
    return inspect_file(root, rel, cached_store(config) if config is not None else None)


@functools.cache
def readers_version() -> str:
    """A digest of the code that turns a file into a :class:`FileRecord`: a cached record is
    reused only when this code is unchanged (a reader fix re-reads every file)."""
    h = hashlib.sha256()
    for mod in ("share", "readers", "scoresheets"):
        h.update((Path(__file__).parent / f"{mod}.py").read_bytes())
    return h.hexdigest()[:16]


def _stat_key(p: Path) -> tuple[int, int]:
    st = p.lstat()
    return st.st_size, st.st_mtime_ns


def record_cache_key(share: Path) -> str:
    """Object-store key of the inventory cache of ``share`` (one per share path)."""
    where = hashlib.sha256(str(share.resolve()).encode()).hexdigest()[:16]
    return f"cache/ingest/{where}/records-{readers_version()}.pkl"


def load_record_cache(store, key: str) -> dict[str, tuple[tuple[int, int], FileRecord]]:
    """The records of the previous run (path -> ((size, mtime_ns), record)); empty when
    there is none or it cannot be read (the cache is only an optimisation)."""
    try:
        if not store.exists(key):
            return {}
        cached = pickle.loads(store.get_bytes(key))
        return cached if isinstance(cached, dict) else {}
    except Exception as e:  # a damaged cache costs a full inventory, never a failed ingest
        log.warning("ignoring the unreadable ingest cache %s: %s", key, e)
        return {}


def inventory(share: Path, *, config: LakehouseConfig | None, workers: int,
              cached: dict[str, tuple[tuple[int, int], FileRecord]] | None = None,
              stats: dict[str, tuple[int, int]] | None = None) -> list[FileRecord]:
    """Inspect every file of the share (in parallel when ``workers`` > 1).

    A file whose path, size and modification time (ns) equal those of a record in
    ``cached`` is not read again: its record is reused (as make and rsync decide, a file
    rewritten with the same size and mtime goes unnoticed; ``--full`` re-reads everything).
    ``stats``, when given, receives every regular file's ``(size, mtime_ns)`` as seen
    *before* it was read (so a file changed during the run is read again next time).
    """
    paths = [rel for rel, _ in walk_share(share)]
    root = str(share.resolve())
    seen = {rel: _stat_key(share / rel) for rel in paths if not (share / rel).is_symlink()}
    if stats is not None:
        stats.update(seen)
    got: dict[str, FileRecord] = {}
    for rel in paths if cached else ():
        hit = cached.get(rel)
        if hit is not None and rel in seen and hit[0] == seen[rel]:
            got[rel] = hit[1]
    todo = [rel for rel in paths if rel not in got]
    if got:
        log.info("%d of %d files unchanged since the last ingest: not read again",
                 len(got), len(paths))
    if workers <= 1 or len(todo) <= 1:
        it = ((rel, _inspect(root, config, rel)) for rel in todo)
        got.update(progress(it, desc="files", total=len(todo), unit="file"))
        return [got[rel] for rel in paths]
    # Import the readers before the pool starts: forked workers then share them instead of
    # each paying ~0.5 s of imports (PyMuPDF, python-docx, lxml, ebooklib...).
    import ingest.readers
    import ingest.scoresheets  # noqa: F401

    # Heaviest first (sorted by size) keeps both cores busy until the end.
    order = sorted(todo, key=lambda rel: -(share / rel).lstat().st_size)
    # A forked worker must not reuse the parent's S3 client (its connections are not
    # fork-safe): each worker starts with an empty client cache.
    with process_pool(workers, initializer=cached_store.cache_clear) as pool:
        got.update(zip(order, progress(pool.map(partial(_inspect, root, config), order,
                                                chunksize=4),
                                       desc="files", total=len(order), unit="file"),
                       strict=True))
    return [got[rel] for rel in paths]


def _fingerprint(table: pa.Table, keys: tuple[str, ...]) -> dict[tuple, str]:
    cols = [c for c in table.column_names if c not in VOLATILE]
    out = {}
    cols.sort()
    for row in table.select(cols).to_pylist():
        key = tuple(row[k] for k in keys)
        h = hashlib.sha256()
        for c in cols:
            v = row[c]
            # strings hashed as bytes: repr() of a whole book's text costs ~10x more
            h.update(v.encode() if isinstance(v, str) else repr(v).encode())
            h.update(b"\x1f" if isinstance(v, str) else b"\x1e")
        out[key] = h.hexdigest()
    return out


def changed_rows(lakehouse: Lakehouse, name: str, new: pa.Table) -> pa.Table:
    """Rows of ``new`` that are absent from table ``name`` or differ from it (volatile
    timestamps ignored); insert-only tables keep their existing rows untouched."""
    keys = spec(name).keys
    try:
        old = lakehouse.read(name)
    except TableNotFoundError:
        return new
    old_fp = _fingerprint(old, keys)
    if name in INSERT_ONLY:
        mask = [tuple(r[k] for k in keys) not in old_fp for r in new.select(keys).to_pylist()]
    else:
        new_fp = _fingerprint(new, keys)
        mask = [old_fp.get(k) != fp for k, fp in new_fp.items()]
    return new.filter(pa.array(mask, pa.bool_()))


def _removed(lakehouse: Lakehouse, files: pa.Table, now: datetime) -> pa.Table:
    """Rows of files that an earlier run saw and the share no longer holds: kept, marked
    ``removed`` (their bytes stay in the object store)."""
    old = lakehouse.read("files")
    present = set(files.column("path").to_pylist())
    rows = []
    for r in old.to_pylist():
        if r["path"] in present or r["status"] == "removed":
            continue
        seen = r["ingested_at"]
        rows.append({**r, "status": "removed", "ingested_at": now,
                     "reason": f"no longer in the share (last seen {seen:%Y-%m-%d %H:%M} UTC, "
                               f"was {r['status']}); its bytes are kept at blob_uri"})
    return pa.Table.from_pylist(rows, schema=files.schema)


def run_ingest(
    lakehouse: Lakehouse, share: str | Path, *, workers: int | None = None,
    dry_run: bool = False, full: bool = False,
) -> IngestReport:
    """Ingest ``share`` into the lakehouse (see the module docstring).

    Files unchanged since the previous ingest of the same share (path, size, mtime) are not
    read again: their records come from a cache in the object store, so a re-run costs about
    a walk of the share, and a share with a few new or modified files reads only those.

    Args:
        lakehouse: Where to write.
        share: The share's root folder.
        workers: Processes for the per-file work (default: all cores).
        dry_run: Inspect and assemble, store nothing, write nothing.
        full: Read and hash every file again, ignoring the cache of the previous run.
    """
    t0 = datetime.now(UTC)
    share = Path(share).resolve()
    workers = workers or os.cpu_count() or 1
    cache_key = record_cache_key(share)
    cached = {} if dry_run or full else load_record_cache(lakehouse.store, cache_key)
    stats: dict[str, tuple[int, int]] = {}
    records = inventory(share, config=None if dry_run else lakehouse.config, workers=workers,
                        cached=cached, stats=stats)
    if not dry_run:
        fresh = {r.path: (stats[r.path], r) for r in records if r.path in stats}
        if fresh.keys() != cached.keys() or any(
                cached[p][0] != v[0] or cached[p][1] is not v[1] for p, v in fresh.items()):
            lakehouse.store.put_bytes(cache_key, pickle.dumps(fresh, protocol=5))
    store = None if dry_run else lakehouse.store
    out: Assembled = assemble(records, ingested_at=t0,
                              blob_uri=(store.uri if store else (lambda k: k)))
    report = IngestReport(share=str(share), n_files=len(records),
                          n_read=sum(1 for r in records if cached.get(r.path, (0, None))[1]
                                     is not r))
    for r in out.files.to_pylist():
        report.by_status[r["status"]] = report.by_status.get(r["status"], 0) + 1
        report.by_kind[r["kind"]] = report.by_kind.get(r["kind"], 0) + 1
        if r["status"] == "quarantined":
            report.quarantined.append((r["path"], r["reason"]))
    report.score_rejects = list(out.score_rejects)
    files = out.files
    if not dry_run and lakehouse.exists("files"):
        files = pa.concat_tables([files, _removed(lakehouse, files, t0)])
        report.by_status["removed"] = files.num_rows - out.files.num_rows
        if not report.by_status["removed"]:
            del report.by_status["removed"]
    if not dry_run:
        digest = hashlib.sha256("\n".join(
            f"{r.path}\t{r.sha256}" for r in records).encode()).hexdigest()
        lineage = Lineage(
            operation="ingest", sources=[f"{share} ({len(records)} files, manifest "
                                         f"sha256:{digest})"],
            config={"share": str(share), "workers": workers},
        )
        # files last: a run killed before it is visibly unfinished and simply redone.
        for name, table in (("books", out.books), ("texts", out.texts),
                            ("scans", out.scans), ("scores", out.scores),
                            ("files", files)):
            todo = changed_rows(lakehouse, name, table)
            report.written[name] = todo.num_rows
            if todo.num_rows and not lakehouse.exists(name):
                lakehouse.append(name, todo, lineage=lineage)  # first run: no merge plan
            elif todo.num_rows:
                lakehouse.merge(name, todo, lineage=lineage)
            report.versions[name] = lakehouse.create(name).version()
    report.seconds = (datetime.now(UTC) - t0).total_seconds()
    return report
