"""Build the small fixtures that let the test suite run without the development data.

Cut from ../shared/data (or CORPUS_SHARED_DATA) into tests/fixtures/ (see its README.md):

- ``prose_books.json.gz``: real prose for the aligner's long-text tests, the edited text
  (``clean_text``) of the development share's books in the order of its answer key: the first
  books up to 100,000 characters (``first``) and, from the 41st book on, books up to 20,000
  characters (``second``, unrelated to the first).
- ``ocr_pairs.json.gz``: real Tesseract output of multi-page scans, what the mining stage
  reads for a book (edited text, OCR text, page and chapter offsets, title, author): the
  development share ingested and its three longest scans of edited books OCR'd (the
  ``dev_pairs`` fixture of tests/noise/conftest.py).

The sample share's answer key is written by scripts/make_sample_share.py.

    .venv/bin/python scripts/make_test_fixtures.py
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data")
OUT = ROOT / "tests" / "fixtures"
ABOUT = ("Cut from the development data by scripts/make_test_fixtures.py; CLEAR corpus, "
         "CC BY-NC-SA 4.0: see README.md here")


def _write(name: str, data: dict) -> None:
    path = OUT / name
    # mtime=0: the same data gives the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    print(f"{path}: {path.stat().st_size / 1e3:.0f} kB")


def prose() -> None:
    truth = json.loads((SRC / "legacy_share.truth.json").read_text())
    texts = [b["clean_text"] for b in truth["books"].values() if b.get("clean_text")]

    def upto(books: list[str], n: int) -> list[str]:
        out: list[str] = []
        while len("\n\n".join(out)) < n:
            out.append(books[len(out)])
        return out

    _write("prose_books.json.gz", {"about": ABOUT, "first": upto(texts, 100_000),
                                   "second": upto(texts[40:], 20_000)})


def ocr_pairs() -> None:
    from catalog import Lakehouse
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr
    from noise.mine import MineConfig, read_pairs

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(SRC / "legacy_share.tar.gz") as tar:
            tar.extractall(tmp, filter="tar")
        lh = Lakehouse(str(Path(tmp) / "lakehouse"))
        run_ingest(lh, Path(tmp) / "legacy_share", workers=2)
        texts = lh.read("texts", columns=["book_id", "variant"]).to_pylist()
        edited = {t["book_id"] for t in texts if t["variant"] == "edited"}
        scans = sorted((s for s in lh.read("scans").to_pylist() if s["book_id"] in edited),
                       key=lambda s: (-(s["n_pages"] or 0), s["scan_id"]))
        run_ocr(lh, config=OcrConfig(workers=2), scan_ids=[s["scan_id"] for s in scans[:3]])
        pins = {**lh.pin("texts"), **lh.pin("books")}
        pairs = read_pairs(lh, config=MineConfig(), versions=pins)
    assert len(pairs) == 3, len(pairs)
    _write("ocr_pairs.json.gz", {"about": ABOUT, "pairs": [
        {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()}
        for p in pairs]})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    prose()
    ocr_pairs()
