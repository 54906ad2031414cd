"""`corpus demo`: the pipeline on the bundled sample, in an embedded local lakehouse.

What exists so far runs here; each later stage adds its step.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

import pyarrow as pa
from rich.console import Console

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.passages import ImportConfig, run_import
from sql import SqlSession
from sql.output import write_result

SAMPLE_CONFIG = ImportConfig(
    id_col="ID", text_col="Excerpt", title_col="Title", author_col="Author",
    scores={"bt_easiness": "BT_easiness", "lexile": "Lexile Band"}, id_prefix="clear-",
)


def sample_passages() -> Path:
    """Path of the bundled CLEAR sample (CC BY-NC-SA 4.0; see corpus/data/README.md)."""
    return Path(str(resources.files("corpus") / "data" / "sample_passages.csv"))


def sample_share_tarball() -> Path:
    """The bundled sample share (a tarball: it keeps the files' modification times)."""
    return Path(str(resources.files("corpus") / "data" / "sample_share.tar.gz"))


def run_demo(lakehouse: Lakehouse, console: Console) -> None:
    """Create the lakehouse, ingest the sample share, import passages, query, show lineage."""
    console.rule("1. lakehouse")
    created = lakehouse.init()
    console.print(f"{lakehouse.root}: {len(created)} new table(s), "
                  f"{len(lakehouse.list_tables())} in all")

    console.rule("2. ingest the bundled sample share (built from CLEAR excerpts)")
    with tempfile.TemporaryDirectory(prefix="corpus-sample-share-") as tmp:
        with tarfile.open(sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")  # keeps modification times
        report = run_ingest(lakehouse, Path(tmp) / "legacy_share")
    console.print(f"{report.n_files} files: " + ", ".join(
        f"{n} {k}" for k, n in sorted(report.by_status.items())))
    for path, reason in report.quarantined:
        console.print(f"  quarantined {path}: {reason}", markup=False, highlight=False)
    console.print("written: " + ", ".join(f"{t} +{n}" for t, n in report.written.items()))

    console.rule("3. OCR the sample's raw scans (PyMuPDF + Tesseract)")
    ocr = run_ocr(lakehouse, config=OcrConfig(workers=os.cpu_count() or 1))
    console.print(f"{ocr.pages_done} page(s) recognised ({ocr.pages_skipped} already done), "
                  f"{ocr.scans_done} scan(s) done, {len(ocr.scans_failed or {})} failed "
                  f"in {ocr.seconds:.1f} s")
    with SqlSession(lakehouse) as session:
        write_result(session.batches(
            "SELECT s.book_id, s.status, s.n_pages, round(s.mean_confidence, 1) AS confidence,"
            " left(replace(t.text, chr(10), ' '), 60) AS ocr_text FROM scans s"
            " LEFT JOIN texts t ON t.book_id = s.book_id AND t.variant = 'ocr'"
            " ORDER BY s.book_id"), fmt="table", stream=console.file)

    console.rule("4. import the bundled sample passages (CLEAR excerpts, CC BY-NC-SA 4.0)")
    result = run_import(lakehouse, sample_passages(), config=SAMPLE_CONFIG)
    console.print(f"{result.books.num_rows} passages, {result.scores.num_rows} scores, "
                  f"{len(result.rejected)} rows rejected")

    console.rule("5. SQL over the catalog: easiest and hardest passages")
    query = """
        WITH s AS (
            SELECT book_id, metric, arg_max(value, scored_at) AS value
            FROM scores GROUP BY ALL)
        SELECT b.book_id, left(b.title, 40) AS title, b.n_words,
               e.value AS bt_easiness, l.value AS lexile
        FROM books b
        JOIN s e ON e.book_id = b.book_id AND e.metric = 'bt_easiness'
        LEFT JOIN s l ON l.book_id = b.book_id AND l.metric = 'lexile'
        WHERE b.book_id LIKE 'clear-%'
        ORDER BY bt_easiness DESC
    """
    with SqlSession(lakehouse) as session:
        console.print("books per layout of the share (files.status = 'ok'):")
        write_result(session.batches(
            "SELECT file_format, count(*) AS books, sum(n_words) AS words FROM ("
            "  SELECT DISTINCT f.format AS file_format, b.book_id, b.n_words FROM books b"
            "  JOIN files f ON f.book_id = b.book_id AND f.status = 'ok' AND f.kind = 'edited')"
            " GROUP BY ALL ORDER BY books DESC"), fmt="table",
            stream=console.file)
        ranked = session.query(query)
        top_bottom = [*ranked.slice(0, 3).to_batches(),
                      *ranked.slice(ranked.num_rows - 3).to_batches()]
        write_result(pa.RecordBatchReader.from_batches(ranked.schema, top_bottom),
                     fmt="table", stream=console.file)
        corr = session.query(
            f"SELECT corr(bt_easiness, lexile) AS r FROM ({query})").column("r")[0].as_py()
        console.print(f"correlation of BT easiness with Lexile over the sample: {corr:.2f} "
                      "(negative: higher Lexile, harder text)")

    console.rule("6. tables and lineage")
    for name in ("files", "books", "texts", "scores", "scans", "ocr_pages"):
        s = lakehouse.stats(name)
        console.print(f"{name}@{s.version}: {s.rows} rows, {s.files} files, {s.bytes:,} bytes")
    last = lakehouse.history("scores", limit=1)[0]
    console.print(f"scores@{last.version} written by '{last.operation}' "
                  f"(code {last.code_version}) from:")
    for src in last.sources:
        console.print(f"  {src}")
    console.print(f"\nTry: corpus --root {lakehouse.root} sql \"SELECT * FROM corpus_commits\"")
