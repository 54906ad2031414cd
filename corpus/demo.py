"""`corpus demo`: the pipeline on the bundled sample, in an embedded local lakehouse.

Every stage runs here, on the sample's 15 books (5 of them scanned) and 60 labelled passages:
a short training of a small packaged backbone stands in for a real run.

Running it again in the same lakehouse changes no data: every step reads what it would read
and does its work only when that changed since its last run. Ingest, OCR and the passage
import are incremental themselves (the import merges the same rows again). Mining, noise,
shards and training are skipped when their inputs are unchanged (the texts mining aligns;
the edited texts, books and mined patterns noise draws from; texts and scores for shards;
the shards and training configuration for a run), and their earlier results are reused:
the same artifacts version, so no new ``noisy/mined-v<N>`` variants; the same dataset
version; the same run. Evaluation and scoring run again on that run and give the same
numbers. Timestamps of merged rows are the only difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.rule import Rule

from catalog import Commit, Lakehouse, TableNotFoundError
from catalog.rules import DEFAULT_SEQ_LEN, EDITED, NOISY, OCR, noisy_variant
from corpus.score import (
    find_scoring_run,
    grade_calibration,
    iter_items,
    load_scorer,
    score_stream,
)
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.passages import run_import
from ingest.sample import SAMPLE_CONFIG, sample_passages, sample_share_tarball
from noise.generate import NoiseConfig, run_noise
from noise.mine import MineConfig, MineReport, read_pairs, run_mine, top_confusions
from sql import SqlSession
from sql.output import write_result
from train.evaluate import EvalConfig, run_eval
from train.launch import LaunchConfig, run_training
from train.model import ModelConfig
from train.recipe import TrainConfig
from train.shards import ShardsConfig, build_shards

DEMO_BACKBONE = "all-minilm-l6-v2"  # 22M parameters, shipped in a PyPI package: fast on CPU
DEMO_SEQ_LEN = 128  # short windows of the short sample texts: a fast CPU training
RULE_WIDTH = 100  # a step's heading: as wide as the terminal, at most this (piped: this)
# Columns that only say when a row was written: a rerun that merges the same rows again
# renews them, and they are no part of what a table holds.
WRITE_TIMES = frozenset({"created_at", "updated_at", "ingested_at", "started_at",
                         "finished_at"})
# Options that change how fast a step runs, not what it writes.
# Where a step runs is one of them: Ray output equals local output (lineage records the
# executor as a dict, the config names it as a string).
SPEED_ONLY = frozenset({"workers", "batch_books", "batch_texts", "executor", "ray_address"})


def run_name() -> str:
    """A new run name (time-stamped), for when the demo trains a run."""
    from datetime import UTC, datetime

    return f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def table_digest(lakehouse: Lakehouse, name: str, version: int | None = None) -> str:
    """A digest of what table ``name`` holds at ``version`` (default: the latest): its rows
    in sorted order without the :data:`WRITE_TIMES` columns. Equal digests, same data."""
    table = lakehouse.read(name, version=version)
    table = table.drop_columns([c for c in table.column_names if c in WRITE_TIMES])
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _config(config: Any) -> dict[str, Any]:
    """A step's config as its lineage records it (JSON types), without speed-only options."""
    d = json.loads(json.dumps(asdict(config), default=str))
    return {k: v for k, v in d.items() if k not in SPEED_ONLY}


def _same_config(recorded: dict[str, Any], config: Any) -> bool:
    return all(recorded.get(k) == v for k, v in _config(config).items())


def _last_commit(lakehouse: Lakehouse, name: str, operation: str,
                 config: Any) -> Commit | None:
    """The newest commit of ``operation`` on ``name`` with ``config``, or None."""
    try:
        history = lakehouse.history(name)
    except TableNotFoundError:
        return None
    return next((c for c in history
                 if c.operation == operation and _same_config(c.config, config)), None)


def mined_up_to_date(lakehouse: Lakehouse, config: MineConfig) -> list | None:
    """The pairs mining would read, when the last ``corpus mine`` with ``config`` read the
    same ones (then its patterns are current); else None."""
    last = _last_commit(lakehouse, "artifacts", "mine", config)
    if last is None or lakehouse.history("artifacts", limit=1)[0].version != last.version:
        return None
    now = lakehouse.pin(*last.inputs)
    pairs = read_pairs(lakehouse, config=config, versions=now)
    if now == last.inputs or read_pairs(lakehouse, config=config,
                                        versions=last.inputs) == pairs:
        return pairs
    return None


def mine_summary(lakehouse: Lakehouse, pairs: list) -> MineReport:
    """What the last mining found, read back from ``alignments`` and ``artifacts`` (the
    figures :func:`noise.mine.run_mine` reports)."""
    rows = [r for r in lakehouse.read("alignments").to_pylist() if r["raw_variant"] == OCR]
    artifacts = [r for r in lakehouse.read("artifacts").to_pylist() if r["raw_variant"] == OCR]
    n_ref = sum(r["n_ref_chars"] for r in rows) or 1
    kinds: Counter = Counter()
    for r in artifacts:
        kinds[r["kind"]] += r["count"]
    return MineReport(
        books=len(rows), versions=lakehouse.pin("alignments", "artifacts"),
        cer=sum(r["n_ops"] for r in rows) / n_ref,
        body_cer=sum(r["body_cer"] * r["n_ref_chars"] for r in rows) / n_ref,
        wer=sum(r["word_distance"] for r in rows) / max(1, sum(r["n_ref_words"] for r in rows)),
        kinds=dict(kinds), top=top_confusions(artifacts, [p.edited for p in pairs]))


def _edited(lakehouse: Lakehouse, version: int) -> dict[str, tuple]:
    rows = lakehouse.read("texts", version=version,
                          columns=["book_id", "variant", "text", "chapter_offsets"]).to_pylist()
    return {r["book_id"]: (r["text"], r["chapter_offsets"]) for r in rows
            if r["variant"] == EDITED}


def noise_up_to_date(lakehouse: Lakehouse, config: NoiseConfig) -> tuple[list[str], int] | None:
    """``(variants, books)`` when the last ``corpus noise`` with ``config`` drew from the
    current patterns, edited texts and books and its variants are all there; else None."""
    last = _last_commit(lakehouse, "texts", "noise", config)
    if last is None or config.books:  # (the demo makes noisy variants of every book)
        return None
    now = lakehouse.pin("texts", "books", "artifacts", "alignments")
    if any(last.inputs.get(k) != now[k] for k in ("artifacts", "alignments")):
        return None
    edited = _edited(lakehouse, now["texts"])
    if edited != _edited(lakehouse, last.inputs["texts"]):
        return None
    metas = [lakehouse.read("books", version=v, columns=["book_id", "title", "author"])
             .sort_by("book_id") for v in (last.inputs["books"], now["books"])]
    if not metas[0].equals(metas[1]):
        return None
    names = [noisy_variant(config.recipe, now["artifacts"], config.seed + k)
             for k in range(config.per_book)]
    have = {(r["book_id"], r["variant"]) for r in lakehouse.read(
        "texts", columns=["book_id", "variant"]).to_pylist()}
    if any((b, n) not in have for b in edited for n in names):
        return None
    return names, len(edited)


def shards_up_to_date(lakehouse: Lakehouse, config: ShardsConfig) -> Commit | None:
    """The last build of ``config.dataset`` with ``config`` (a :class:`catalog.Commit`) when
    the texts and scores it read hold the same data now (:func:`table_digest`); else None."""
    last = _last_commit(lakehouse, "shards", "shards", config)
    if last is None:
        return None
    manifest = lakehouse.read("shards", columns=["dataset", "build_id"]).to_pylist()
    if {r["build_id"] for r in manifest if r["dataset"] == config.dataset} \
            != {last.config.get("build_id")}:
        return None  # rebuilt since (with another configuration)
    for name, version in last.inputs.items():
        if version != lakehouse.version(name) and \
                table_digest(lakehouse, name, version) != table_digest(lakehouse, name):
            return None
    return last


def trained_run(lakehouse: Lakehouse, cfg: TrainConfig) -> dict | None:
    """The newest finished run of exactly ``cfg`` (same pinned shards) whose checkpoint is
    still there, as its ``runs`` row; else None."""
    want = json.loads(json.dumps(cfg.to_dict(), sort_keys=True))
    try:
        runs = lakehouse.read("runs").to_pylist()
    except TableNotFoundError:
        return None
    for r in sorted(runs, key=lambda r: r["finished_at"] or r["started_at"], reverse=True):
        uri = r.get("checkpoint_uri") or ""
        if r["status"] != "finished" or not uri or json.loads(r["config"] or "{}") != want:
            continue
        if "://" not in uri.removeprefix("file://") and not Path(
                uri.removeprefix("file://")).exists():
            continue  # a local checkpoint that was deleted: train again
        return r
    return None


def _manifest_counts(lakehouse: Lakehouse, dataset: str,
                     version: int) -> tuple[dict[str, int], dict[str, int]]:
    """Samples and books per split of ``dataset`` at ``shards@version``."""
    rows = [r for r in lakehouse.read("shards", version=version,
                                      columns=["dataset", "split", "n_samples", "book_ids"])
            .to_pylist() if r["dataset"] == dataset]
    samples: Counter = Counter()
    books: dict[str, set[str]] = {"train": set(), "validation": set()}
    for r in rows:
        samples[r["split"]] += r["n_samples"] or 0
        books.setdefault(r["split"], set()).update(r["book_ids"] or ())
    return ({k: samples[k] for k in books}, {k: len(v) for k, v in books.items()})


def _step(console: Console, title: str) -> None:
    console.print(Rule(title), width=min(console.width, RULE_WIDTH))


def run_demo(lakehouse: Lakehouse, console: Console, *, run_root: str | Path = ".") -> None:
    """The whole pipeline on the bundled sample: ingest, OCR, mine, import passages, noise,
    shards, a short training, evaluation, scoring, SQL and lineage.

    Idempotent: run again on the same lakehouse, it writes the same data (see the module
    docstring for what each step does then).

    Args:
        lakehouse: Where every table goes.
        console: Where the story is told.
        run_root: Folder for run folders (``runs/``) and reports (``reports/``).
    """
    workers = min(2, os.cpu_count() or 1)
    _step(console, "1. lakehouse")
    created = lakehouse.init()
    console.print(f"{lakehouse.root}: {len(created)} new table(s), "
                  f"{len(lakehouse.list_tables())} in all")

    _step(console, "2. ingest the bundled sample share (built from CLEAR excerpts)")
    with tempfile.TemporaryDirectory(prefix="corpus-sample-share-") as tmp:
        with tarfile.open(sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")  # keeps modification times
        report = run_ingest(lakehouse, Path(tmp) / "legacy_share")
    console.print(f"{report.n_files} files: " + ", ".join(
        f"{n} {k}" for k, n in sorted(report.by_status.items())))
    for path, reason in report.quarantined:
        console.print(f"  quarantined {path}: {reason}", markup=False, highlight=False)
    console.print("written: " + ", ".join(f"{t} +{n}" for t, n in report.written.items()))

    _step(console, "3. OCR the sample's raw scans (PyMuPDF + Tesseract)")
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

    _step(console, "4. align edited and OCR text, mine the OCR artifact patterns")
    mine_config = MineConfig(workers=workers)
    pairs = mined_up_to_date(lakehouse, mine_config)
    if pairs is None:
        mined = run_mine(lakehouse, config=mine_config)
    else:
        mined = mine_summary(lakehouse, pairs)
        console.print(f"up to date: the texts mining aligns are unchanged since artifacts@"
                      f"{mined.versions['artifacts']}")
    console.print(f"{mined.books} book(s) aligned: CER {mined.cer:.3f} (without page furniture "
                  f"{mined.body_cer:.3f}), WER {mined.wer:.3f}; patterns by kind: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(mined.kinds.items())))
    for t in mined.top[:5]:
        console.print(f"  {t['kind']}: {t['edited']!r} -> {t['raw']!r} "
                      f"(x{t['count']}, p={t['probability']:.2f})", markup=False)

    # before the noise: the passages get noisy twins too
    _step(console, "5. import the bundled sample passages (CLEAR excerpts, CC BY-NC-SA 4.0)")
    result = run_import(lakehouse, sample_passages(), config=SAMPLE_CONFIG)
    console.print(f"{result.books.num_rows} passages, {result.scores.num_rows} scores, "
                  f"{len(result.rejected)} rows rejected")

    _step(console, "6. noisy variants of the edited books, calibrated to the mined patterns")
    noise_config = NoiseConfig(recipe="mined", seed=0, workers=workers)
    current = noise_up_to_date(lakehouse, noise_config)
    if current is None:
        noisy = run_noise(lakehouse, config=noise_config)
        console.print(f"{noisy.rows} noisy text(s) of {noisy.books} book(s): "
                      f"{', '.join(noisy.variants)} in {noisy.seconds:.1f} s")
    else:
        variants, n_books = current
        console.print(f"up to date: {', '.join(variants)} of all {n_books} edited books, "
                      "drawn from the same texts and patterns")

    _step(console, "7. versioned token shards (split by book; edited, OCR and noisy variants)")
    shards_config = ShardsConfig(
        dataset="sample", tokenizer=DEMO_BACKBONE, seq_len=DEMO_SEQ_LEN, window="chunks",
        variants=(EDITED, OCR, f"{NOISY}/*"), val_frac=0.2, seed=0, workers=workers)
    built = shards_up_to_date(lakehouse, shards_config)
    if built is None:
        shards = build_shards(lakehouse, config=shards_config)
        version, excluded = shards.version, shards.excluded_no_target
        samples, books = shards.samples, shards.books
    else:
        version, excluded = built.version, built.config.get("excluded_no_target", 0)
        samples, books = _manifest_counts(lakehouse, "sample", version)
        console.print(f"up to date: texts and scores hold the same data as when "
                      f"shards@{version} was built")
    console.print(f"dataset sample = shards@{version}: train {samples['train']} "
                  f"samples of {books['train']} books, validation "
                  f"{samples['validation']} of {books['validation']}; "
                  f"{excluded} book(s) without a score left out")

    _step(console, "8. a short LoRA training under torchrun (2 gloo processes on CPU)")
    train_config = TrainConfig(
        root=lakehouse.root, dataset="sample", shards_version=version,
        model=ModelConfig(backbone=DEMO_BACKBONE, head="attention", lora_r=8).to_dict(),
        epochs=2, batch=8, lr=1e-3, ckpt_every=10, seed=0, seq_len=DEMO_SEQ_LEN)
    done = trained_run(lakehouse, train_config)
    if done is None:
        run = run_training(lakehouse, train_config, LaunchConfig(nproc=2, max_restarts=1),
                           run_dir=Path(run_root) / "runs" / run_name())
        run_id, status, m, run_dir = run.run_id, run.status, run.metrics, run.run_dir
    else:
        run_id, status = done["run_id"], done["status"]
        m = json.loads(done["metrics"] or "{}")
        run_dir = m.get("run_dir")
        console.print(f"up to date: run {run_id} trained this configuration on shards@"
                      f"{version}")
    console.print(f"run {run_id}: {status}; loss {m.get('first_loss', 0):.3f} -> "
                  f"{m.get('last_loss', 0):.3f}, {m.get('tokens_per_s', 0):,.0f} tokens/s; "
                  f"logs and checkpoints in {run_dir}")

    _step(console, "9. evaluation on held-out books: model vs readability formulas")
    ev = run_eval(lakehouse, run_id,
                  config=EvalConfig(out=str(Path(run_root) / "reports" / run_id)))
    for fam, entry in ev.summary["variants"].items():
        best = entry.get("best_formula")
        line = f"  {fam}: model RMSE {entry['model']['rmse']:.3f} (n={entry['model']['n']})"
        if best:
            line += f", best formula {best} {entry[best]['rmse']:.3f}"
        console.print(line, markup=False)
    console.print(f"report: {ev.report_dir.resolve() / 'report.md'}")

    _step(console, "10. score a scanned PDF (OCR on the fly) and a catalog book, with grades")
    with tempfile.TemporaryDirectory(prefix="corpus-demo-score-") as tmp:
        with tarfile.open(sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")
        scan = next(Path(tmp).rglob("*_scan.pdf"))
        found = find_scoring_run(lakehouse, run_id)
        scorer = load_scorer(model_dir=found["model_dir"],
                             seq_len=found["seq_len"] or DEFAULT_SEQ_LEN)
        # BT easiness -> Lexile fit on the run's training books (kept with the run) -> band
        grades, _ = grade_calibration(lakehouse, found)
        book = lakehouse.read("books", columns=["book_id"]).column("book_id")[0].as_py()
        for row in score_stream(iter_items([str(scan), book], lakehouse=lakehouse), scorer,
                                metric=found["target"], run=run_id, grade=grades):
            console.print(f"  {Path(row['name']).name} ({row['source']}): "
                          + (f"{row['prediction']:.3f} {row['metric']}, {row['lexile']}L, "
                             f"grades {row['grade']}" if row["error"] is None
                             else row["error"]), markup=False)
    console.print(f"(Lexile from BT easiness fit on {grades.n_books} training books of run "
                  f"{run_id}; grade bands of the CCSS Appendix A table)")

    _step(console, "11. SQL over the catalog: easiest and hardest passages")
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

    _step(console, "12. tables and lineage")
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
