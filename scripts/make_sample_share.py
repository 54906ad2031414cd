"""Build ingest/data/sample_share.tar.gz: a small share with the big share's habits.

Picks, by rule, from ../shared/data/legacy_share.tar.gz: a few books of every layout and
format (some with a raw scan, one scan-only), one draft and its finished book, one
correction and its book, one backup copy and its original, the junk, and the score sheets
cut down to the chosen books. A tarball, not a folder in git: git would lose the
modification times that decide which version of a book is current.

It also writes the sample's answer key, tests/fixtures/sample_share.truth.json: the entries of
legacy_share.truth.json for the books and files the tarball holds (a chosen book whose scan
was left out counts as unscanned). ``--truth-only`` writes just the key, for the tarball
already in the repository.

    .venv/bin/python scripts/make_sample_share.py [--truth-only]
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data")
OUT = ROOT / "ingest" / "data" / "sample_share.tar.gz"
TRUTH_OUT = ROOT / "tests" / "fixtures" / "sample_share.truth.json"
PER_FORMAT = {"folder": 2, "parts": 2, "txt": 2, "docx": 1, "html": 1, "epub": 1, "pdf": 1}
ISBN = re.compile(r"97[89]\d{10}")
SCANS = 4  # image-only PDFs kept (plus one folder of page images)


def main() -> None:
    truth = json.loads((SRC / "legacy_share.truth.json").read_text())
    books = truth["books"]
    chosen: set[str] = set()
    for fmt, n in PER_FORMAT.items():  # prefer books with a small scan: pairs for mining
        cands = sorted((k for k, v in books.items() if v["format"] == fmt),
                       key=lambda k: (not books[k]["has_scan"], int(books[k].get("scan_pages")
                                                                       or 99), k))
        chosen.update(cands[:n])
    chosen.add(sorted(k for k, v in books.items() if v["format"] == "scan-only")[0])
    extra_paths = {truth["superseded"][0], truth["duplicates"][0][0]}
    chosen.update(ISBN.search(p).group(0) for p in extra_paths)
    chosen.update(k for k, v in books.items() if v.get("corrected_by"))  # both corrections
    junk = set(truth["junk"])

    with tarfile.open(SRC / "legacy_share.tar.gz") as src, \
            tarfile.open(OUT, "w:gz", compresslevel=9) as dst:
        members = src.getmembers()
        scans = _scans_to_keep(members, chosen)
        for m in members:
            rel = m.name.removeprefix("legacy_share/")
            hit = ISBN.search(rel)
            book = hit.group(0) if hit else None
            if rel.startswith("Scans/") and rel not in junk:
                keep = book in scans
            else:
                keep = (rel in junk or rel.startswith(("Metadata/", "Scores/"))
                        or book in chosen)
            if not keep:
                continue
            if m.isfile() and rel.startswith("Scores/"):
                data = _cut_sheet(rel, src.extractfile(m).read(), chosen)
                m.size = len(data)
                dst.addfile(m, io.BytesIO(data))
            elif m.isfile():
                dst.addfile(m, src.extractfile(m))
    print(f"{OUT}: {OUT.stat().st_size / 1e6:.1f} MB, {len(chosen)} books")
    write_truth()


def write_truth() -> None:
    """The answer key of the sample share in OUT, cut from the development share's key."""
    truth = json.loads((SRC / "legacy_share.truth.json").read_text())
    with tarfile.open(OUT) as tar:
        paths = {m.name.removeprefix("legacy_share/") for m in tar.getmembers() if m.isfile()}
    junk = [p for p in truth["junk"] if p in paths]
    books = {}
    for isbn in sorted({ISBN.search(p).group(0) for p in paths - set(junk) if ISBN.search(p)}):
        if isbn not in truth["books"]:
            continue
        book = dict(truth["books"][isbn])
        own = [p for p in paths if isbn in p]
        assert book["has_edited"] == any(not p.startswith("Scans/") for p in own), isbn
        if book["has_scan"] and not any(p.startswith("Scans/") for p in own):
            book["has_scan"] = False  # its scan was not taken into the sample
            book.pop("scan_pages", None)
            book.pop("scan_degradation", None)
        books[isbn] = book
    key = {
        "about": "The answer key of ingest/data/sample_share.tar.gz, cut from the development "
                 "share's legacy_share.truth.json by scripts/make_sample_share.py (CLEAR "
                 "corpus, CC BY-NC-SA 4.0: see README.md here)",
        "books": books,
        "junk": junk,
        "duplicates": [d for d in truth["duplicates"] if set(d) <= paths],
        "conflicts": [c for c in truth["conflicts"] if c in books],
        "superseded": [p for p in truth["superseded"] if p in paths],
    }
    TRUTH_OUT.parent.mkdir(parents=True, exist_ok=True)
    TRUTH_OUT.write_text(json.dumps(key, indent=1, ensure_ascii=False) + "\n")
    print(f"{TRUTH_OUT}: {len(books)} books, {len(junk)} junk files")


def _scans_to_keep(members: list[tarfile.TarInfo], chosen: set[str]) -> set[str]:
    """The smallest scans of chosen books (PDFs and one page-image folder): a few MB."""
    size: dict[tuple[str, bool], int] = {}
    for m in members:
        hit = ISBN.search(m.name)
        if m.isfile() and "/Scans/" in m.name and hit and hit.group(0) in chosen:
            key = (hit.group(0), "batch_" in m.name)
            size[key] = size.get(key, 0) + m.size
    pdfs = sorted((s, b) for (b, folder), s in size.items() if not folder)
    folders = sorted((s, b) for (b, folder), s in size.items() if folder)
    return {b for _, b in pdfs[:SCANS]} | {b for _, b in folders[:1]}


def _keep_row(cells: list, chosen: set[str]) -> bool:
    digits = re.sub(r"[^\dX]", "", str(cells[0]))
    if len(digits) == 10:  # ISBN-10: compare on the 9 core digits inside the ISBN-13
        return any(c[3:12] == digits[:9] for c in chosen)
    return digits[:13] in chosen


def _cut_sheet(rel: str, data: bytes, chosen: set[str]) -> bytes:
    if rel.endswith(".xlsx"):
        wb = openpyxl.load_workbook(io.BytesIO(data))
        ws = wb.worksheets[0]
        for r in range(ws.max_row, 1, -1):
            if not _keep_row([ws.cell(r, 1).value], chosen):
                ws.delete_rows(r)
        buf = io.BytesIO()
        wb.save(buf)
        return buf.getvalue()
    text = data.decode("utf-8-sig")
    sep = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerows([rows[0], *(r for r in rows[1:] if r and _keep_row(r, chosen))])
    return buf.getvalue().encode("utf-8")


if __name__ == "__main__":
    write_truth() if "--truth-only" in sys.argv[1:] else main()
