"""Benchmark P2: `corpus ocr` (2 workers) vs OCRmyPDF and vs 2 parallel `tesseract` processes.

Pages: every page of the first ``--scans`` scans (by scan id) of the development share
(../shared/data/legacy_share.tar.gz; image-only PDFs and page-image folders at 150-300 dpi).
In one run, interleaved (the order of the sides reversed every other round):

* OCRmyPDF, what a user would run instead: each scan as one PDF (an image-only PDF as it
  is; a folder of page images turned into one PDF with ``img2pdf`` beforehand, not timed:
  it embeds the JPEGs as they are), then, one scan after another,
  ``ocrmypdf --jobs 2 -l eng --optimize 0 --skip-text --sidecar scan.txt --output-type none
  scan.pdf -`` (the text only, as ours: no PDF written, no optimisation, no PDF/A). Also
  timed with ``--output-type pdf`` (writes the OCRed PDF, as most users would use it);
* xargs tesseract: the pages given ready (rendered beforehand, not timed: a scanner's
  full-page JPEG as it is, other pages rendered with PyMuPDF to PNG), then
  ``xargs -P 2 -I{} tesseract {} {} -l eng`` with ``OMP_THREAD_LIMIT=1``;
* ours: ``run_ocr`` with 2 workers and its page-foot pass (the default) on a freshly ingested
  lakehouse (ingest not timed) — fetching the bytes from the object store, getting each
  page's image, recognising with word boxes, the page-foot pass, one Delta commit per page.

Set-up (not timed, done once): OCRmyPDF and img2pdf in their own venv under
``~/.cache/corpus-bench/ocrmypdf-venv`` (``pip install ocrmypdf img2pdf``), and Debian's
``ghostscript`` (``apt-get install -y ghostscript``) when ``gs`` is missing. Where OCRmyPDF
cannot be set up or run, the error is printed and the run goes on with the xargs anchor.

Goal: ours >= 1.0x OCRmyPDF's pages per second.

    .venv/bin/python bench/ocr_pages.py [--runs 5] [--scans 15] [--no-ocrmypdf-pdf]
"""

from __future__ import annotations

import argparse
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
from catalog.storage import key_from_uri
from ingest.driver import run_ingest
from ingest.ocr import (
    OcrConfig,
    page_counts,
    plan_pages,
    render_page,
    run_ocr,
    scan_page_files,
)
from ingest.sample import sample_share_tarball

OUT = Path(__file__).resolve().parent / "out" / "ocr_pages.json"
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data")
VENV = Path(os.environ.get("CORPUS_BENCH_CACHE") or Path.home() / ".cache" / "corpus-bench"
            ) / "ocrmypdf-venv"
GOAL = 1.0


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def setup_ocrmypdf() -> tuple[Path | None, str]:
    """OCRmyPDF's bin folder and its version, or None and why it cannot run here."""
    bin_ = VENV / "bin"
    if not (bin_ / "ocrmypdf").exists() or not (bin_ / "img2pdf").exists():
        print(f"set-up: pip install ocrmypdf img2pdf into {VENV}", flush=True)
        if not (bin_ / "python").exists():
            r = _run(["python3", "-m", "venv", str(VENV)])
            if r.returncode:
                return None, f"python3 -m venv failed: {r.stderr.strip()[-500:]}"
        r = _run([str(bin_ / "pip"), "install", "-q", "ocrmypdf", "img2pdf"])
        if r.returncode:
            return None, f"pip install ocrmypdf failed: {r.stderr.strip()[-500:]}"
    if shutil.which("gs") is None:
        print("set-up: apt-get install -y ghostscript", flush=True)
        r = _run(["apt-get", "install", "-y", "ghostscript"])
        if r.returncode:
            _run(["apt-get", "update"])
            r = _run(["apt-get", "install", "-y", "ghostscript"])
        if r.returncode:
            return None, f"apt-get install ghostscript failed: {r.stderr.strip()[-500:]}"
    r = _run([str(bin_ / "ocrmypdf"), "--version"])
    if r.returncode:
        return None, f"ocrmypdf --version failed: {(r.stderr or r.stdout).strip()[-500:]}"
    return bin_, r.stdout.strip()


def ready_images(lh: Lakehouse, dest: Path, scan_ids: list[str]) -> list[Path]:
    """Every page of the scans as the image ours hands to Tesseract, saved once: a scanner's
    full-page JPEG/PNG as it is, any other page rendered (PyMuPDF) and saved as PNG."""
    import pyarrow.compute as pc

    scans = lh.read("scans", filter=pc.field("scan_id").isin(scan_ids))
    files = lh.read("files")
    counts = page_counts(lh.store, scans, files)
    tasks, _ = plan_pages(scans, files, set(), counts)
    paths = []
    for t in tasks:
        img, dpi, _ = render_page(lh.store.get_bytes(t.blob_key), t.pdf_page, t.frame)
        stem = dest / f"{t.scan_id}-{t.page_no:04d}"
        if isinstance(img, tuple):  # the scanner's encoded image itself
            p = stem.with_suffix("." + img[1])
            p.write_bytes(img[0])
        else:
            p = stem.with_suffix(".png")
            img.save(p, dpi=(dpi or 300, dpi or 300))
        paths.append(p)
    return paths


def scan_pdfs(lh: Lakehouse, dest: Path, scan_ids: list[str], img2pdf: Path) -> list[Path]:
    """Each scan as one PDF: a scanned PDF as it is, page images joined with img2pdf."""
    import pyarrow.compute as pc

    scans = lh.read("scans", filter=pc.field("scan_id").isin(scan_ids)).to_pylist()
    files = lh.read("files").to_pylist()
    pdfs = []
    for s in sorted(scans, key=lambda s: s["scan_id"]):
        pages = scan_page_files(s["source"], files)
        out = dest / f"{s['scan_id']}.pdf"
        if len(pages) == 1 and pages[0]["format"] == "pdf":
            out.write_bytes(lh.store.get_bytes(key_from_uri(pages[0]["blob_uri"])))
        else:
            folder = dest / s["scan_id"]
            folder.mkdir()
            imgs = []
            for i, f in enumerate(pages):
                p = folder / f"{i:04d}{Path(f['path']).suffix}"
                p.write_bytes(lh.store.get_bytes(key_from_uri(f["blob_uri"])))
                imgs.append(str(p))
            subprocess.run([str(img2pdf), *imgs, "-o", str(out)], check=True,
                           capture_output=True)
        pdfs.append(out)
    return pdfs


def ocrmypdf(bin_: Path, pdfs: list[Path], output_type: str, jobs: int) -> float:
    t0 = time.perf_counter()
    for pdf in pdfs:
        out = "-" if output_type == "none" else str(pdf.with_suffix(".ocr.pdf"))
        subprocess.run([str(bin_ / "ocrmypdf"), "--jobs", str(jobs), "-l", "eng",
                        "--optimize", "0", "--skip-text", "--output-type", output_type,
                        "--sidecar", str(pdf.with_suffix(".txt")), str(pdf), out],
                       check=True, capture_output=True)
    return time.perf_counter() - t0


def xargs_tesseract(images: list[Path], jobs: int) -> float:
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    names = "".join(f"{p}\0" for p in images)
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-0", "-P", str(jobs), "-I{}", "tesseract", "{}", "{}",
                    "-l", "eng"], input=names.encode(), env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def ours(share: Path, workers: int, scan_ids: list[str]) -> tuple[float, int, int]:
    root = tempfile.mkdtemp(prefix="corpus-bench-ocr-")
    try:
        lh = Lakehouse(root)
        run_ingest(lh, share, workers=workers)
        t0 = time.perf_counter()
        r = run_ocr(lh, config=OcrConfig(workers=workers), scan_ids=scan_ids)
        took = time.perf_counter() - t0
        chars = sum(len(t) for t in lh.read("ocr_pages").column("text").to_pylist() if t)
        return took, r.pages_done, chars
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="ours' workers, OCRmyPDF's --jobs, "
                    "xargs -P")
    ap.add_argument("--scans", type=int, default=15, help="how many scans (~2-6 pages each)")
    ap.add_argument("--no-ocrmypdf-pdf", action="store_true",
                    help="skip the OCRmyPDF run that writes a PDF (--output-type pdf)")
    args = ap.parse_args()
    bin_, version = setup_ocrmypdf()
    if bin_ is None:
        print(f"OCRmyPDF cannot run here: {version}\nGoing on with the xargs anchor only.")
    tmp = Path(tempfile.mkdtemp(prefix="corpus-bench-ocr-share-"))
    try:
        tarball = SHARED / "legacy_share.tar.gz"
        with tarfile.open(tarball if tarball.exists() else sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")
        share = tmp / "legacy_share"
        lh = Lakehouse(str(tmp / "lake"))
        run_ingest(lh, share, workers=args.workers)
        scan_ids = sorted(lh.read("scans").column("scan_id").to_pylist())[:args.scans]
        (tmp / "pages").mkdir()
        images = ready_images(lh, tmp / "pages", scan_ids)
        n = len(images)
        sides: dict[str, object] = {}
        if bin_ is not None:
            (tmp / "pdf").mkdir()
            pdfs = scan_pdfs(lh, tmp / "pdf", scan_ids, bin_ / "img2pdf")
            try:  # a first run, untimed: does it run here at all?
                ocrmypdf(bin_, pdfs[:1], "none", args.workers)
            except subprocess.CalledProcessError as e:
                print(f"OCRmyPDF cannot run here: {e.stderr.decode(errors='replace')[-800:]}"
                      "\nGoing on with the xargs anchor only.")
                bin_ = None
        if bin_ is not None:
            sides["ocrmypdf_none"] = lambda: ocrmypdf(bin_, pdfs, "none", args.workers)
            if not args.no_ocrmypdf_pdf:
                sides["ocrmypdf_pdf"] = lambda: ocrmypdf(bin_, pdfs, "pdf", args.workers)
        sides["xargs"] = lambda: xargs_tesseract(images, args.workers)
        sides["ours"] = None
        times: dict[str, list[float]] = {k: [] for k in sides}
        ours_chars = 0
        for run in range(args.runs):
            order = list(sides) if run % 2 == 0 else list(reversed(sides))
            for k in order:
                if k == "ours":
                    t, pages, ours_chars = ours(share, args.workers, scan_ids)
                    assert pages == n, (pages, n)
                else:
                    t = sides[k]()
                times[k].append(t)
            print(f"round {run + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in order),
                  flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        chars = {"ours": ours_chars,
                 "xargs": sum(len(p.with_suffix(p.suffix + ".txt").read_text()) for p in images)}
        if "ocrmypdf_none" in med:
            chars["ocrmypdf_none"] = sum(len(p.with_suffix(".txt").read_text()) for p in pdfs)
        w = args.workers
        label = {"ocrmypdf_none": f"OCRmyPDF {version}, --jobs {w}, --output-type none "
                                  "(sidecar text only)",
                 "ocrmypdf_pdf": f"OCRmyPDF {version}, --jobs {w}, --output-type pdf",
                 "xargs": f"xargs -P {w} tesseract, OMP_THREAD_LIMIT=1, pages ready",
                 "ours": f"corpus ocr, {w} workers, page-foot pass (default)"}
        print(f"\n{n} pages of {len(scan_ids)} scans, {args.runs} rounds; "
              f"characters recognised: " + ", ".join(f"{k} {v}" for k, v in chars.items()))
        print("\n| side | runs s | median s | pages/s | ours vs it |\n|---|---|---:|---:|---:|")
        for k in times:
            runs = ", ".join(f"{t:.2f}" for t in times[k])
            print(f"| {label[k]} | {runs} | {med[k]:.2f} | {n / med[k]:.2f} | "
                  f"{med[k] / med['ours']:.2f}x |")
        ratios = {k: med[k] / med["ours"] for k in times if k != "ours"}
        anchor = "ocrmypdf_none" if "ocrmypdf_none" in ratios else "xargs"
        print(f"\nours vs the anchor ({label[anchor]}): {ratios[anchor]:.2f}x (goal >= {GOAL}x: "
              f"{'met' if ratios[anchor] >= GOAL else 'not met'})")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"pages": n, "scans": scan_ids, "ocrmypdf": version,
                                   "times_s": times, "medians_s": med, "ratios": ratios,
                                   "chars": chars, "anchor": anchor}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
