"""`corpus demo`: the pipeline on the bundled sample, in an embedded local lakehouse.

Every stage runs here, on the sample's 15 books (5 of them scanned) and 60 labelled passages:
a short training of a small packaged backbone stands in for a real run.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
from rich.console import Console

from catalog import Lakehouse
from catalog.rules import DEFAULT_SEQ_LEN, EDITED, NOISY, OCR
from corpus.score import iter_items, load_scorer, resolve_run, score_stream
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.passages import run_import
from ingest.sample import SAMPLE_CONFIG, sample_passages, sample_share_tarball
from noise.generate import NoiseConfig, run_noise
from noise.mine import MineConfig, run_mine
from sql import SqlSession
from sql.output import write_result
from train.evaluate import EvalConfig, run_eval
from train.launch import LaunchConfig, run_training
from train.model import ModelConfig
from train.recipe import TrainConfig
from train.shards import ShardsConfig, build_shards

DEMO_BACKBONE = "all-minilm-l6-v2"  # 22M parameters, shipped in a PyPI package: fast on CPU
DEMO_SEQ_LEN = 128  # short windows of the short sample texts: a fast CPU training


def run_name() -> str:
    """A new run name (time-stamped: a rerun of the demo trains a new run)."""
    from datetime import UTC, datetime

    return f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def run_demo(lakehouse: Lakehouse, console: Console, *, run_root: str | Path = ".") -> None:
    """The whole pipeline on the bundled sample: ingest, OCR, mine, noise, import passages,
    shards, a short training, evaluation, scoring, SQL and lineage.

    Args:
        lakehouse: Where every table goes.
        console: Where the story is told.
        run_root: Folder for run folders (``runs/``) and reports (``reports/``).
    """
    workers = min(2, os.cpu_count() or 1)
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
    ocr = run_ocr(lakehouse, config=OcrConfig(workers=workers))
    console.print(f"{ocr.pages_done} page(s) recognised ({ocr.pages_skipped} already done), "
                  f"{ocr.scans_done} scan(s) done, {len(ocr.scans_failed or {})} failed "
                  f"in {ocr.seconds:.1f} s")
    with SqlSession(lakehouse) as session:
        write_result(session.batches(
            "SELECT s.book_id, s.status, s.n_pages, round(s.mean_confidence, 1) AS confidence,"
            " left(replace(t.text, chr(10), ' '), 60) AS ocr_text FROM scans s"
            f" LEFT JOIN texts t ON t.book_id = s.book_id AND t.variant = '{OCR}'"
            " ORDER BY s.book_id"), fmt="table", stream=console.file)

    console.rule("4. align edited and OCR text, mine the OCR artifact patterns")
    mined = run_mine(lakehouse, config=MineConfig(workers=workers))
    console.print(f"{mined.books} book(s) aligned: CER {mined.cer:.3f} (without page furniture "
                  f"{mined.body_cer:.3f}), WER {mined.wer:.3f}; patterns by kind: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(mined.kinds.items())))
    for t in mined.top[:5]:
        console.print(f"  {t['kind']}: {t['edited']!r} -> {t['raw']!r} "
                      f"(x{t['count']}, p={t['probability']:.2f})", markup=False)

    console.rule("5. noisy variants of the edited books, calibrated to the mined patterns")
    noisy = run_noise(lakehouse, config=NoiseConfig(recipe="mined", seed=0, workers=workers))
    console.print(f"{noisy.rows} noisy text(s) of {noisy.books} book(s): "
                  f"{', '.join(noisy.variants)} in {noisy.seconds:.1f} s")

    console.rule("6. import the bundled sample passages (CLEAR excerpts, CC BY-NC-SA 4.0)")
    result = run_import(lakehouse, sample_passages(), config=SAMPLE_CONFIG)
    console.print(f"{result.books.num_rows} passages, {result.scores.num_rows} scores, "
                  f"{len(result.rejected)} rows rejected")

    console.rule("7. versioned token shards (split by book; edited, OCR and noisy variants)")
    shards = build_shards(lakehouse, config=ShardsConfig(
        dataset="sample", tokenizer=DEMO_BACKBONE, seq_len=DEMO_SEQ_LEN, window="chunks",
        variants=(EDITED, OCR, f"{NOISY}/*"), val_frac=0.2, seed=0, workers=workers))
    console.print(f"dataset sample = shards@{shards.version}: train {shards.samples['train']} "
                  f"samples of {shards.books['train']} books, validation "
                  f"{shards.samples['validation']} of {shards.books['validation']}; "
                  f"{shards.excluded_no_target} book(s) without a score left out")

    console.rule("8. a short LoRA training under torchrun (2 gloo processes on CPU)")
    run = run_training(lakehouse, TrainConfig(
        root=lakehouse.root, dataset="sample", shards_version=shards.version,
        model=ModelConfig(backbone=DEMO_BACKBONE, head="attention", lora_r=8).to_dict(),
        epochs=2, batch=8, lr=1e-3, ckpt_every=10, seed=0, seq_len=DEMO_SEQ_LEN),
        LaunchConfig(nproc=2, max_restarts=1), run_dir=Path(run_root) / "runs" / run_name())
    m = run.metrics
    console.print(f"run {run.run_id}: {run.status}; loss {m.get('first_loss', 0):.3f} -> "
                  f"{m.get('last_loss', 0):.3f}, {m.get('tokens_per_s', 0):,.0f} tokens/s; "
                  f"logs and checkpoints in {run.run_dir}")

    console.rule("9. evaluation on held-out books: model vs readability formulas")
    ev = run_eval(lakehouse, run.run_id,
                  config=EvalConfig(out=str(Path(run_root) / "reports" / run.run_id)))
    for fam, entry in ev.summary["variants"].items():
        best = entry.get("best_formula")
        line = f"  {fam}: model RMSE {entry['model']['rmse']:.3f} (n={entry['model']['n']})"
        if best:
            line += f", best formula {best} {entry[best]['rmse']:.3f}"
        console.print(line, markup=False)
    console.print(f"report: {ev.report_dir.resolve() / 'report.md'}")

    console.rule("10. score a scanned PDF (OCR on the fly) and a catalog book")
    with tempfile.TemporaryDirectory(prefix="corpus-demo-score-") as tmp:
        with tarfile.open(sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")
        scan = next(Path(tmp).rglob("*_scan.pdf"))
        model_dir, seq_len = resolve_run(lakehouse, run.run_id)
        scorer = load_scorer(model_dir=model_dir, seq_len=seq_len or DEFAULT_SEQ_LEN)
        book = lakehouse.read("books", columns=["book_id"]).column("book_id")[0].as_py()
        for row in score_stream(iter_items([str(scan), book], lakehouse=lakehouse), scorer):
            console.print(f"  {Path(row['name']).name} ({row['source']}): "
                          + (f"{row['prediction']:.3f}" if row["error"] is None
                             else row["error"]), markup=False)

    console.rule("11. SQL over the catalog: easiest and hardest passages")
    query = """
        WITH s AS (SELECT book_id, metric, value FROM current_scores)
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

    console.rule("12. tables and lineage")
    for name in ("files", "books", "texts", "scores", "scans", "ocr_pages", "alignments",
                 "artifacts", "shards", "runs", "predictions"):
        s = lakehouse.stats(name)
        console.print(f"{name}@{s.version}: {s.rows} rows, {s.files} files, {s.bytes:,} bytes")
    last = lakehouse.history("scores", limit=1)[0]
    console.print(f"scores@{last.version} written by '{last.operation}' "
                  f"(code {last.code_version}) from:")
    for src in last.sources:
        console.print(f"  {src}")
    console.print(f"\nTry: corpus --root {lakehouse.root} sql \"SELECT * FROM corpus_commits\"")
    # the last line: where the editors' desk for these scans is
    console.print(f"Review the scans: corpus --root {lakehouse.root} review   "
                  "(then open http://127.0.0.1:8765/)")
