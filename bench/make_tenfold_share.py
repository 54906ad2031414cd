"""Make a share N times the development share, with fresh ISBNs in every copy.

Copy 0 is the share as it is; copy k (1..N-1) lives under ``copy_kk/`` with every ISBN-13
in its paths, and every ISBN in its score sheets (ISBN-13, hyphenated or ISBN-10), replaced
by an ISBN of its own (deterministic, checksum-valid, 979-8 range). Modification times are
kept (they decide which version of a book is current), so each copy has the same versions,
duplicates and junk as the original: N times the books, N times the files.

    .venv/bin/python bench/make_tenfold_share.py DEST [--times 10] [--share DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from stdnum import ean

from ingest.scoresheets import normalise_isbn

ROOT = Path(__file__).resolve().parent.parent
TARBALL = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data"
               ) / "legacy_share.tar.gz"
ISBN13 = re.compile(r"97[89]\d{10}")


def fresh(isbn: str, k: int) -> str:
    """Copy k's ISBN for ``isbn`` (stable, checksum-valid)."""
    digits = str(int(hashlib.sha256(f"{isbn}/{k}".encode()).hexdigest(), 16))[:8]
    body = "9798" + digits
    return body + ean.calc_check_digit(body)


def _sheet_cell(value, k: int):
    if value is None:
        return value
    isbn = normalise_isbn(str(value))
    return fresh(isbn, k) if isbn else value


def _rewrite_sheet(path: Path, k: int) -> None:
    st = path.stat()
    if path.suffix.lower() == ".xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(path)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for cell in row:
                    if isinstance(cell.value, str | int) and not isinstance(cell.value, bool):
                        new = _sheet_cell(cell.value, k)
                        if new != cell.value:
                            cell.value = new
        wb.save(path)
    else:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig", errors="surrogateescape")
        delim = ";" if text.count(";") > text.count(",") else ","
        rows = list(csv.reader(io.StringIO(text), delimiter=delim))
        out = io.StringIO()
        w = csv.writer(out, delimiter=delim, lineterminator="\r\n" if b"\r\n" in raw else "\n")
        for row in rows:
            w.writerow([_sheet_cell(c, k) if c else c for c in row])
        path.write_bytes(out.getvalue().encode("utf-8", errors="surrogateescape"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def multiply(share: Path, dest: Path, times: int) -> None:
    """Write the multiplied share to ``dest``."""
    shutil.copytree(share, dest, symlinks=True)
    for k in range(1, times):
        part = dest / f"copy_{k:02d}"
        for src in sorted(share.rglob("*")):
            if src.is_dir() and not src.is_symlink():
                continue
            rel = src.relative_to(share).as_posix()
            new_rel = ISBN13.sub(lambda m, k=k: fresh(m.group(0), k), rel)
            target = part / new_rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), target)
                continue
            shutil.copy2(src, target)
            if src.suffix.lower() in (".csv", ".xlsx", ".tsv") and "Scores" in src.parts:
                _rewrite_sheet(target, k)


def bench_share(share: Path | None, times: int, dest: Path) -> Path:
    """The share a benchmark runs on, under ``dest``: ``share`` (default: the development
    share, unpacked with its modification times) multiplied ``times`` times."""
    if share is None:
        with tarfile.open(TARBALL) as tar:
            tar.extractall(dest / "src", filter="tar")
        share = dest / "src" / "legacy_share"
    if times <= 1:
        return share
    multiply(share, dest / "share", times)
    return dest / "share"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="folder to create (must not exist)")
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--share", type=Path, help="an unpacked share (default: the dev share)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corpus-tenfold-"))
    try:
        built = bench_share(args.share, args.times, tmp)
        shutil.move(built, args.dest)
        n = sum(1 for p in args.dest.rglob("*") if not p.is_dir() or p.is_symlink())
        print(f"{args.dest}: {n} files ({args.times} x the share)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
