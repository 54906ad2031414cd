"""Benchmark P2: pages per second of `corpus ocr` (2 workers) vs the `tesseract` command line.

Pages: every page of the first ``--scans`` scans (by scan id) of the development share
(../shared/data/legacy_share.tar.gz; image-only PDFs and page-image folders at 150-300 dpi).
In one run:

* baseline: the pages rendered to PNG beforehand (not timed: "given ready page images"),
  then ``tesseract page.png out -l eng`` one page at a time in one process. Which
  OMP_THREAD_LIMIT is fastest is decided on the first 4 pages (Tesseract's own threads,
  OMP unset, vs OMP_THREAD_LIMIT=1); the faster setting then runs every page;
* ours: ``run_ocr`` with 2 workers on a freshly ingested lakehouse — fetching the bytes from
  the object store, rendering each PDF page at its embedded image's resolution, recognising
  with word boxes, and one Delta commit per page.

Goal: ours >= 1.8x the baseline's pages per second.

    .venv/bin/python bench/ocr_pages.py [--runs 2] [--scans 15]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from catalog import Lakehouse
from corpus.demo import sample_share_tarball
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, page_counts, plan_pages, render_page, run_ocr

OUT = Path(__file__).resolve().parent / "out" / "ocr_pages.json"
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data")
GOAL = 1.8


def ready_images(lh: Lakehouse, dest: Path, scan_ids: list[str]) -> list[Path]:
    """Render every page of the scans once, the way ours does, and save it as PNG."""
    import pyarrow.compute as pc

    scans = lh.read("scans", filter=pc.field("scan_id").isin(scan_ids))
    files = lh.read("files")
    counts = page_counts(lh.store, scans, files)
    tasks, _ = plan_pages(scans, files, set(), counts)
    paths = []
    from PIL import Image

    for t in tasks:
        img, dpi, _ = render_page(lh.store.get_bytes(t.blob_key), t.pdf_page, t.frame)
        if isinstance(img, tuple):  # the scanner's encoded image itself
            img = Image.open(io.BytesIO(img[0])).convert("L")
        p = dest / f"{t.scan_id}-{t.page_no:04d}.png"
        img.save(p, dpi=(dpi or 300, dpi or 300))
        paths.append(p)
    return paths


def tesseract_cli(images: list[Path], omp: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    if omp:
        env["OMP_THREAD_LIMIT"] = omp
    t0 = time.perf_counter()
    for img in images:
        subprocess.run(["tesseract", str(img), str(img.with_suffix("")), "-l", "eng"],
                       env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def ours(share: Path, workers: int, scan_ids: list[str], page_foot: bool) -> tuple[float, int]:
    root = tempfile.mkdtemp(prefix="corpus-bench-ocr-")
    try:
        lh = Lakehouse(root)
        run_ingest(lh, share, workers=workers)
        t0 = time.perf_counter()
        r = run_ocr(lh, config=OcrConfig(workers=workers, page_foot=page_foot),
                    scan_ids=scan_ids)
        return time.perf_counter() - t0, r.pages_done
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scans", type=int, default=15, help="how many scans (~2-6 pages each)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corpus-bench-ocr-share-"))
    try:
        tarball = SHARED / "legacy_share.tar.gz"
        with tarfile.open(tarball if tarball.exists() else sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")
        share = tmp / "legacy_share"
        lh = Lakehouse(str(tmp / "lake"))
        run_ingest(lh, share, workers=args.workers)
        scan_ids = sorted(lh.read("scans").column("scan_id").to_pylist())[:args.scans]
        (tmp / "png").mkdir()
        images = ready_images(lh, tmp / "png", scan_ids)
        n = len(images)
        probe = {"threads": tesseract_cli(images[:4], None), "omp1": tesseract_cli(images[:4], "1")}
        best = min(probe, key=probe.get)
        base: list[float] = []
        mine: list[float] = []
        bare: list[float] = []  # --no-page-foot: the same Tesseract work as the baseline
        for _ in range(args.runs):
            base.append(tesseract_cli(images, None if best == "threads" else "1"))
            for page_foot, times in ((True, mine), (False, bare)):
                t, pages = ours(share, args.workers, scan_ids, page_foot)
                assert pages == n, (pages, n)
                times.append(t)
        mb, mo, mn = statistics.median(base), statistics.median(mine), statistics.median(bare)
        print(f"{n} pages of {len(scan_ids)} scans; first 4 pages: tesseract with its own "
              f"threads {probe['threads']:.2f} s, with OMP_THREAD_LIMIT=1 {probe['omp1']:.2f} s")
        label = "own threads" if best == "threads" else "OMP_THREAD_LIMIT=1"
        rows = [(f"tesseract CLI, one page at a time, {label}", mb),
                (f"corpus ocr, {args.workers} workers (render + recognise + commit)", mo),
                (f"corpus ocr --no-page-foot, {args.workers} workers", mn)]
        print("\n| side | median s | pages/s |\n|---|---:|---:|")
        for label, t in rows:
            print(f"| {label} | {t:.2f} | {n / t:.2f} |")
        ratio = mb / mo
        print(f"\nspeed-up over the faster baseline ({best}): {ratio:.2f}x (goal >= {GOAL}x); "
              f"without the page-foot pass (the baseline's work): {mb / mn:.2f}x")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"pages": n, "probe_s": probe, "baseline_s": base,
                                   "ours_s": mine, "ours_no_foot_s": bare,
                                   "best_baseline": best, "ratio": ratio,
                                   "ratio_no_foot": mb / mn},
                                  indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
