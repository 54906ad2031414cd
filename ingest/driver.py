"""`corpus ingest SHARE`: migrate an editorial share into the lakehouse.

The driver walks the share, fans the per-file work out over a process pool, assembles the
books (pure, :mod:`ingest.assemble`) and writes only the rows that changed, each table in
one commit whose lineage names the share. Re-running on an unchanged share writes nothing;
a killed run is finished by the next one (blobs are content-addressed, table commits are
atomic, and every table is rewritten from the whole share's state).
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pyarrow as pa

from catalog import Lakehouse, LakehouseConfig, Lineage, TableNotFoundError, spec
from catalog.log import progress
from catalog.storage import cached_store
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
    by_status: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)   # table -> rows inserted/updated
    versions: dict[str, int] = field(default_factory=dict)  # table -> version after the run
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    score_rejects: list = field(default_factory=list)
    seconds: float = 0.0


def _inspect(root: str, config: LakehouseConfig | None, rel: str) -> FileRecord:
    return inspect_file(root, rel, cached_store(config) if config is not None else None)


def inventory(share: Path, *, config: LakehouseConfig | None, workers: int) -> list[FileRecord]:
    """Inspect every file of the share (in parallel when ``workers`` > 1)."""
    paths = [rel for rel, _ in walk_share(share)]
    root = str(share.resolve())
    if workers <= 1:
        it = (_inspect(root, config, rel) for rel in paths)
        return list(progress(it, desc="files", total=len(paths), unit="file"))
    # Import the readers before the pool starts: forked workers then share them instead of
    # each paying ~0.5 s of imports (PyMuPDF, python-docx, lxml, ebooklib...).
    import ingest.readers
    import ingest.scoresheets  # noqa: F401

    # Heaviest first (sorted by size) keeps both cores busy until the end.
    order = sorted(paths, key=lambda rel: -(share / rel).lstat().st_size)
    # A forked worker must not reuse the parent's S3 client (its connections are not
    # fork-safe): each worker starts with an empty client cache.
    with ProcessPoolExecutor(workers, initializer=cached_store.cache_clear) as pool:
        got = dict(zip(order, progress(pool.map(partial(_inspect, root, config), order,
                                                chunksize=4),
                                       desc="files", total=len(order), unit="file"),
                       strict=True))
    return [got[rel] for rel in paths]


def _fingerprint(table: pa.Table, keys: tuple[str, ...]) -> dict[tuple, str]:
    cols = [c for c in table.column_names if c not in VOLATILE]
    out = {}
    for row in table.select(cols).to_pylist():
        key = tuple(row[k] for k in keys)
        out[key] = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
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
    dry_run: bool = False,
) -> IngestReport:
    """Ingest ``share`` into the lakehouse (see the module docstring).

    Args:
        lakehouse: Where to write.
        share: The share's root folder.
        workers: Processes for the per-file work (default: all cores).
        dry_run: Inspect and assemble, store nothing, write nothing.
    """
    t0 = datetime.now(UTC)
    share = Path(share).resolve()
    workers = workers or os.cpu_count() or 1
    records = inventory(share, config=None if dry_run else lakehouse.config, workers=workers)
    store = None if dry_run else lakehouse.store
    out: Assembled = assemble(records, ingested_at=t0,
                              blob_uri=(store.uri if store else (lambda k: k)))
    report = IngestReport(share=str(share), n_files=len(records))
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
