"""Benchmark P4: megabytes per second per core of noisy-variant generation.

Text: every edited book of the development share (../shared/data/legacy_share.tar.gz, 396
books, ~0.94 MB of CLEAR prose), as they are (short books: per-book overhead shows) and
joined as the 396 chapters of one long book; the noise model is mined from the share's 50
scan/edited pairs (the lakehouse is built once: ingest, OCR, mine; reused from ``--root``).

In one run, interleaved, each side in one process (so MB/s is per core):

* ours: what one `corpus noise` worker runs (:func:`noise.generate.generate` with one
  process): typesetting (title page, lines, hyphenation, headers, page numbers, headings)
  plus the mined character confusions at each book's drawn error level;
* nlpaug: ``OcrAug`` (nlpaug 1.1.11) on the same books, paragraph by paragraph, tuned to a
  similar error level. nlpaug needs pandas, so it runs in its own environment (``--nlpaug-
  python``; by default ``bench/out/nlpaug-venv``, created with pip if missing); its time
  is measured inside that process and excludes start-up and imports;
* python loop: a plain Python per-character loop applying the same mined confusions
  (same contexts and probabilities; no typesetting) — what the vectorised code replaces.

Plus the whole command once per run: ``run_noise`` with 2 workers and 4 variants per book,
Delta commits included (MB/s per core = 4 x MB / seconds / 2).

Goal: ours >= 5x the baseline and >= 5 MB/s per core.

    .venv/bin/python bench/noise_throughput.py [--runs 5] [--root LAKEHOUSE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.compute as pc

from catalog import Lakehouse
from noise.evaluate import nlpaug_ocr, nlpaug_word_p
from noise.generate import BookMeta, NoiseConfig, generate, load_noise_model, run_noise
from noise.model import CharNoise, exact_context

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ROOT = HERE.parent
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data")
GOAL_RATIO, GOAL_MBS = 5.0, 5.0
PER_BOOK = 4


def build_lakehouse(root: Path) -> Lakehouse:
    """Ingest, OCR and mine the development share into ``root`` (once)."""
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr
    from noise.mine import MineConfig, run_mine

    lh = Lakehouse(str(root))
    if lh.exists("artifacts"):
        return lh
    share = OUT / "share"
    if not (share / "legacy_share").exists():
        share.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / "legacy_share.tar.gz") as tar:
            tar.extractall(share, filter="tar")
    print("building the bench lakehouse: ingest, OCR (~1.5 min), mine", flush=True)
    run_ingest(lh, share / "legacy_share", workers=2)
    run_ocr(lh, config=OcrConfig(workers=2))
    run_mine(lh, config=MineConfig())
    return lh


def nlpaug_python(given: str | None) -> str:
    """An interpreter with nlpaug: given, or bench/out/nlpaug-venv (created if missing)."""
    if given:
        return given
    venv = OUT / "nlpaug-venv"
    exe = venv / "bin" / "python"
    if not exe.exists():
        print("creating bench/out/nlpaug-venv (nlpaug pulls pandas)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(exe), "-m", "pip", "install", "-q", "nlpaug==1.1.11"], check=True)
    return str(exe)


def loop_table(chars: CharNoise, rate: float, sample: str) -> dict:
    """The mined confusions as a dict ``(left, edited, right) -> [(raw, p)]`` for the
    per-character loop, scaled like ours (expected edits = rate * characters)."""
    from noise.model import _codes

    table: dict[tuple[str, str, str], list[tuple[str, float]]] = {}
    for c in chars.confusions:
        left, right = exact_context(c.context) or ("", "")  # mined contexts are exact
        table.setdefault((left, c.edited, right), []).append((c.raw, c.probability))
    total = sum(float(p.sum()) for _, _, p, _ in chars.candidates(_codes(sample)))
    scale = rate * len(sample) / total if total else 0.0
    return {k: [(raw, min(p * scale, 0.95)) for raw, p in v] for k, v in table.items()}


def loop_noise(text: str, table: dict, rnd: random.Random) -> str:
    """Baseline: one Python step per character: an insertion before it, then the longest
    pattern starting at it, each looked up with its neighbours."""
    out = []
    i, n = 0, len(text)
    while i <= n:
        left = text[i - 1] if i else "\n"
        outs = table.get((left, "", text[i] if i < n else "\n"))
        if outs:
            r, acc = rnd.random(), 0.0
            for raw, p in outs:
                acc += p
                if r < acc:
                    out.append(raw)
                    break
        if i == n:
            break
        done = False
        for length in (3, 2, 1):
            if i + length > n:
                continue
            right = text[i + length] if i + length < n else "\n"
            outs = table.get((left, text[i:i + length], right))
            if outs:
                r, acc = rnd.random(), 0.0
                for raw, p in outs:
                    acc += p
                    if r < acc:
                        out.append(raw)
                        i += length
                        done = True
                        break
                if done:
                    break
        if not done:
            out.append(text[i])
            i += 1
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--root", type=Path, default=OUT / "noise-lakehouse")
    ap.add_argument("--nlpaug-python", default=os.environ.get("NLPAUG_PYTHON"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lh = build_lakehouse(args.root)
    model = load_noise_model(lh)
    texts = sorted(lh.read("texts", columns=["book_id", "variant", "text", "chapter_offsets"],
                           filter=pc.field("variant") == "edited").to_pylist(),
                   key=lambda t: t["book_id"])
    metas = {b["book_id"]: BookMeta(b["book_id"], b["title"] or "", b["author"] or "")
             for b in lh.read("books", columns=["book_id", "title", "author"]).to_pylist()}
    # the same text twice: as the share's 396 short books, and as one long book of 396
    # chapters (what a publisher's books look like: per-book overhead no longer matters)
    long_text, offsets, pos = [], [], 0
    for t in texts:
        offsets.append(pos)
        long_text.append(t["text"])
        pos += len(t["text"]) + 2
    long_row = {"book_id": texts[0]["book_id"], "text": "\n\n".join(long_text),
                "chapter_offsets": offsets}
    cases = {"396 short books": texts, "1 long book": [long_row]}
    mb = sum(len(t["text"].encode()) for t in texts) / 1e6
    level = statistics.median(model.error_levels)
    table = loop_table(model.chars, level, "\n\n".join(t["text"] for t in texts[:50]))
    py = nlpaug_python(args.nlpaug_python)
    word_p = nlpaug_word_p([t["text"] for t in texts[:60]], python=py, target_cer=level,
                           seed=0)
    print(f"{len(texts)} books, {mb:.3f} MB; median error level {level:.4f}; nlpaug "
          f"aug_word_p {word_p:.3f}", flush=True)

    def ours(rows) -> float:
        config = NoiseConfig(seed=1, workers=1)
        t0 = time.perf_counter()
        for _ in generate(rows, metas, model=model, config=config):
            pass
        return time.perf_counter() - t0

    def loop(rows) -> float:
        rnd = random.Random(1)
        t0 = time.perf_counter()
        for t in rows:
            loop_noise(t["text"], table, rnd)
        return time.perf_counter() - t0

    def nlpaug(rows) -> float:
        return nlpaug_ocr([t["text"] for t in rows], python=py, seed=1, word_p=word_p)[1]

    def command() -> float:
        # 4 variants per book: the whole command, fixed costs included (model from the
        # tables, layout calibration, worker start-up, Delta merges)
        t0 = time.perf_counter()
        run_noise(lh, config=NoiseConfig(seed=100, per_book=PER_BOOK, workers=2))
        return time.perf_counter() - t0

    sides = {"ours": ours, "nlpaug OcrAug": nlpaug, "python loop": loop}
    timings: dict[str, list[float]] = {f"{c} / {s}": [] for c in cases for s in sides}
    command_name = f"corpus noise: run_noise, 2 workers, {PER_BOOK} per book"
    timings[command_name] = []
    for r in range(args.runs):
        for case, rows in cases.items():
            for side, fn in sides.items():
                timings[f"{case} / {side}"].append(fn(rows))
        timings[command_name].append(command())
        print(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in timings.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in timings.items()}
    rate = {k: mb / v for k, v in med.items()}
    rate[command_name] *= PER_BOOK / 2  # every book PER_BOOK times, on 2 cores
    print(f"\n{'case / side':<46} {'median s':>9} {'MB/s per core':>14}")
    for k in timings:
        print(f"{k:<46} {med[k]:>9.3f} {rate[k]:>14.2f}")
    ratios = {}
    for case in cases:
        for base in ("nlpaug OcrAug", "python loop"):
            ratios[f"{case}: ours / {base}"] = med[f"{case} / {base}"] / med[f"{case} / ours"]
    for k, v in ratios.items():
        print(f"{k}: {v:.1f}x")
    met = {case: min(ratios[f"{case}: ours / nlpaug OcrAug"],
                     ratios[f"{case}: ours / python loop"]) >= GOAL_RATIO
           and rate[f"{case} / ours"] >= GOAL_MBS for case in cases}
    print(f"goal >= {GOAL_RATIO:.0f}x and >= {GOAL_MBS:.0f} MB/s per core: " + ", ".join(
        f"{case} {'met' if ok else 'NOT met'}" for case, ok in met.items()))
    (OUT / "noise_throughput.json").write_text(json.dumps(
        {"mb": mb, "books": len(texts), "level": level, "nlpaug_word_p": word_p,
         "model": model.summary(), "timings": timings, "median": med,
         "mb_per_s_per_core": rate, "ratios": ratios, "goal_met": met}, indent=2))


if __name__ == "__main__":
    main()
