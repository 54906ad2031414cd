"""Benchmark P5: `corpus shards build` vs the tokenizer's own batch encoding of the same texts.

In one run, interleaved, median of ``--runs``:

* baseline: the texts already in memory and the very tokenizer call shards make, on all of
  them at once: ``backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)``
  (the Rust fast tokenizer, no character offsets, parallel over the cores), nothing written;
* ours: ``build_shards`` end to end into the same lakehouse: read the pinned ``texts`` and
  ``scores`` tables, tokenise in batches over ``--workers`` processes, cut windows, split by
  book, write zstd Parquet shard files (sha256, content-addressed) and commit the manifest.
  Each run builds a new dataset name, so every shard file is really written.

Texts: the CLEAR corpus (../shared/data/clear/clear_corpus.csv, 3,793 excerpts) imported
with ``corpus import`` into a fresh local lakehouse. Throughput ratio = baseline time / ours.
Both sides tokenise the same texts: the token counts (without special tokens) are asserted
equal. Goal: ours >= 0.9x the tokenizer's throughput.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/shards_build.py [--runs 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from catalog import Lakehouse
from ingest.passages import ImportConfig, run_import
from train.backbones import load_tokenizer
from train.shards import ShardsConfig, build_shards, special_tokens

GOAL = 0.9
ROOT = Path(__file__).resolve().parent.parent
CLEAR = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data"
             ) / "clear" / "clear_corpus.csv"
OUT = Path(__file__).resolve().parent / "out" / "shards_build.json"
TOKENIZER = "all-minilm-l6-v2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--window", default="chunks")
    ap.add_argument("--csv", type=Path, default=CLEAR)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="corpus-bench-p5-") as tmp:
        lh = Lakehouse(str(Path(tmp) / "lakehouse"))
        run_import(lh, args.csv, config=ImportConfig(
            id_col="ID", text_col="Excerpt", scores={"bt_easiness": "BT_easiness"}))
        texts = lh.read("texts", columns=["text"]).column("text").to_pylist()
        n_chars = sum(map(len, texts))
        tok = load_tokenizer(TOKENIZER)
        # exactly what train.shards._encode_batch calls, on every text in one batch, with the
        # backend set up as shards' workers set it up (no truncation, no padding)
        tok.backend_tokenizer.no_truncation()
        tok.backend_tokenizer.no_padding()
        encode = tok.backend_tokenizer.encode_batch_fast
        n_tokens = sum(len(e.ids) for e in encode(texts, add_special_tokens=False))  # warm-up
        build_shards(lh, config=ShardsConfig(dataset="warmup", tokenizer=TOKENIZER,
                                             seq_len=args.seq_len, window=args.window,
                                             workers=args.workers))
        base, ours, reports = [], [], []
        for i in range(args.runs):
            def run_base() -> None:
                t0 = time.perf_counter()
                encode(texts, add_special_tokens=False)
                base.append(time.perf_counter() - t0)

            def run_ours(i: int = i) -> None:
                t0 = time.perf_counter()
                r = build_shards(lh, config=ShardsConfig(
                    dataset=f"bench{i}", tokenizer=TOKENIZER, seq_len=args.seq_len,
                    window=args.window, workers=args.workers))
                ours.append(time.perf_counter() - t0)
                reports.append({"samples": r.samples, "tokens": r.tokens, "shards": r.shards})

            for step in ((run_base, run_ours) if i % 2 == 0 else (run_ours, run_base)):
                step()
            # the same texts on both sides: window tokens minus the special tokens per window
            spec = sum(map(len, special_tokens(tok)))
            n_ours = sum(reports[-1]["tokens"].values()) - spec * sum(
                reports[-1]["samples"].values())
            if n_ours != n_tokens:
                raise AssertionError(f"ours tokenised {n_ours:,} tokens, the baseline "
                                     f"{n_tokens:,}")

    mb, mo = statistics.median(base), statistics.median(ours)
    result = {
        "texts": len(texts), "chars": n_chars, "tokens": n_tokens, "workers": args.workers,
        "seq_len": args.seq_len, "window": args.window, "runs": args.runs,
        "baseline_s": base, "ours_s": ours, "median_baseline_s": mb, "median_ours_s": mo,
        "throughput_ratio": mb / mo, "goal": GOAL, "builds": reports,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"{len(texts)} texts, {n_chars / 1e6:.1f} M chars, {n_tokens / 1e6:.2f} M tokens; "
          f"{args.workers} workers, seq_len {args.seq_len}, {args.window}")
    print(f"baseline encode_batch_fast: median {mb:.3f} s ({n_tokens / mb / 1e6:.2f} M tok/s)")
    print(f"ours build_shards:         median {mo:.3f} s ({n_tokens / mo / 1e6:.2f} M tok/s)")
    print(f"throughput ours/baseline: {mb / mo:.2f}x (goal >= {GOAL}x: "
          f"{'met' if mb / mo >= GOAL else 'NOT met'}); raw timings in {OUT}")


if __name__ == "__main__":
    main()
