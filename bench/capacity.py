"""The cost of one book of ~400,000 characters in every stage, on one core: the measured
figures behind the README's capacity table (250,000 books on a cluster).

A "book" is real edited prose from the development share (tests/fixtures/prose_books.json.gz)
repeated to ``--chars`` characters. Each stage's own work function runs in this process on
one thread (``OMP_THREAD_LIMIT``, ``TOKENIZERS_PARALLELISM`` and torch set to one), median
of ``--runs``:

* ingest: the book as a .txt and as a .docx file, hashed, stored, classified and read
  (``ingest.share.inspect_file``);
* ocr: Tesseract on the bundled sample share's scanned pages (``ingest.ocr.recognise_page``,
  page-foot pass included), seconds per page, times the pages a book has: its characters
  over the characters per page of real multi-page scans (tests/fixtures/ocr_pairs.json.gz);
* mine: the book aligned with a noisy copy of itself (the stand-in for its OCR text: the
  noise model mined from the recorded real OCR pairs) and its artifacts mined
  (``noise.mine.mine_book``);
* noise: one noisy variant (``noise.generate.noisy_text``);
* shards: tokenised (all-MiniLM-L6-v2), cut into windows of 256, written as a zstd shard
  file (the worker function of ``corpus shards build``);
* score: every window of 512 tokens predicted by all-MiniLM-L6-v2 (untrained weights cost
  what trained ones do) (``train.model.predict_windows``).

Run from the repository root (a few minutes)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/capacity.py [--chars 400000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

for _k, _v in {"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM":
               "false", "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = Path(__file__).resolve().parent / "out" / "capacity.json"


NODES = (8, 32, 128)


def _duration(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 2 else f"{hours:.1f} h"


def _load(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def timed(fn, runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=400_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--books", type=int, default=250_000, help="books to project for")
    ap.add_argument("--cores-per-node", type=int, default=16)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    prose = _load(FIXTURES / "prose_books.json.gz")["first"]
    text = "\n\n".join(prose)
    book = (text + "\n\n") * (args.chars // len(text) + 1)
    book = book[:book.rfind("\n\n", 0, args.chars)]
    pairs = _load(FIXTURES / "ocr_pairs.json.gz")["pairs"]
    chars_per_page = (sum(len(p["raw"]) for p in pairs)
                      / sum(len(p["page_offsets"]) for p in pairs))
    cost: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="corpus-capacity-"))
    from catalog import Lakehouse

    lh = Lakehouse(str(tmp / "lakehouse"))

    # ingest: a txt and a docx of the book
    import docx

    from ingest.share import inspect_file

    share = tmp / "share" / "Editorial" / "Finished"
    share.mkdir(parents=True)
    (share / "9780000000002.txt").write_text(book, encoding="utf-8")
    d = docx.Document()
    for par in book.split("\n\n"):
        d.add_paragraph(par)
    d.save(share / "9780000000019.docx")
    root = str(tmp / "share")
    for fmt, rel in (("txt", "Editorial/Finished/9780000000002.txt"),
                     ("docx", "Editorial/Finished/9780000000019.docx")):
        rec = inspect_file(root, rel, lh.store)
        assert rec.text and len(rec.text) > 0.9 * len(book), (fmt, rec.reason)
        cost[f"ingest ({fmt})"] = timed(lambda r=rel: inspect_file(root, r, lh.store), args.runs)

    # ocr: seconds per page of the sample share's scans
    from ingest.ocr import recognise_page
    from ingest.sample import sample_share_tarball

    with tarfile.open(sample_share_tarball()) as tar:
        tar.extractall(tmp / "sample", filter="tar")
    pages = sorted((tmp / "sample").rglob("page_*.jpg"))[:6]
    t0 = time.perf_counter()
    for p in pages:
        row = recognise_page(p.read_bytes(), None, lang="eng", page_no=1)
        assert "error" not in row, row
    per_page = (time.perf_counter() - t0) / len(pages)
    n_pages = len(book) / chars_per_page
    cost["ocr"] = per_page * n_pages

    # noise and mine: the model mined from the recorded real OCR pairs
    from noise.generate import BookMeta, noisy_text
    from noise.mine import MineConfig, Pair, mine, mine_book
    from noise.model import model_from_tables

    ps = [Pair(**p) for p in pairs]
    al, art = mine(ps, config=MineConfig())
    model = model_from_tables(art.to_pylist(), al.to_pylist(), edited_texts=[p.edited
                                                                             for p in ps])
    meta = BookMeta("9780000000002", "A Book", "An Author")
    cost["noise"] = timed(lambda: noisy_text(book, model=model, meta=meta, seed=0), args.runs)
    raw = noisy_text(book, model=model, meta=meta, seed=0)
    pair = Pair("9780000000002", book, raw.text, raw.page_offsets, title="A Book",
                author="An Author")
    cost["mine"] = timed(lambda: mine_book(pair, config=MineConfig()), max(1, args.runs - 1))

    # shards: tokenise, cut windows, write a shard file
    from train.shards import _Group, _Task, _tok_setup, _TokJob, _write_groups

    job = _TokJob("all-minilm-l6-v2", 256, "chunks", None, 64, lh.config, "capacity",
                  32 * 2**20, None)
    state = _tok_setup(job)
    group = _Group("train", 0, _Task(["9780000000002"], ["edited"], [book], [0.0]))
    cost["shards"] = timed(lambda: _write_groups(state, [group]), args.runs)
    tokens = len(state.tok(book, add_special_tokens=False)["input_ids"])

    # score: every window of 512 tokens through the model
    from train.backbones import load_tokenizer
    from train.model import ModelConfig, build_model, predict_windows

    model_ = build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=4), seed=0)
    tok = load_tokenizer("all-minilm-l6-v2")
    cost["score"] = timed(lambda: predict_windows([book], model=model_, tokenizer=tok,
                                                  seq_len=512, batch_size=16),
                          max(1, args.runs - 1))

    print(f"one book: {len(book):,} characters, {tokens:,} tokens, {n_pages:.0f} scanned "
          f"pages ({chars_per_page:.0f} characters a page, {per_page:.2f} s a page)")
    # the projection: every core of every node busy, no loss (P9 measures what is lost)
    cores = args.cores_per_node
    print(f"\n| stage | measured s per book (1 core) | projected node-hours, "
          f"{args.books:,} books ({cores}-core nodes) | "
          + " | ".join(f"projected wall time, {n} nodes" for n in NODES) + " |")
    print("|---|---:|---:|" + "---:|" * len(NODES))
    for stage, sec in cost.items():
        node_h = sec * args.books / 3600 / cores
        print(f"| {stage} | {sec:.3g} | {node_h:,.1f} | "
              + " | ".join(_duration(node_h / n) for n in NODES) + " |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"args": vars(args), "chars": len(book), "tokens": tokens,
                               "pages": n_pages,
                               "chars_per_page": chars_per_page, "ocr_s_per_page": per_page,
                               "seconds_per_book": cost}, indent=2))


if __name__ == "__main__":
    main()
