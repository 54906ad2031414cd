"""Edit a share the way an editorial team does, and record what a correct re-ingest shows.

A test and benchmark tool, general over shares: it looks at what a share holds (books by
layout, scans, score sheets) and applies the edits editors make between two ingests:

* ``add``: a new book as a whole text file;
* ``change``: a paragraph appended to a current book file;
* ``delete``: an obsolete file removed (a draft or a backup copy, or a whole book);
* ``move``: a folder of books renamed (a year folder reorganised);
* ``new_edition``: a chapter-folder book re-filed under a later year with all chapters
  byte-identical to the old edition but one (the old edition is laid out first by
  :meth:`Evolution.prepare` when the share has no multi-chapter folder book);
* ``rescan``: a scan PDF saved over at the same path with fewer pages at another quality;
* ``tiff`` and ``image``: new scans from a new scanner, a multi-page TIFF and a page image;
* ``score_sheet``: a new export (other column order, ``;``, later dates) revising scores;
* ``hostile`` (separately, :func:`add_hostile_entries`): a FIFO, a socket, a file nobody
  may read, a half-written upload.

Each edit returns an :class:`Expect` with what the lakehouse must show after a re-ingest;
the general contract (re-ingest equals a fresh ingest, nothing lost) is checked by the
caller. Modification times are set explicitly (a later edit is newer), as on a real share.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from stdnum import ean

ISBN13 = re.compile(r"97[89]\d{10}")
_DAY = 86_400


@dataclass
class Expect:
    """What a correct re-ingest must show after one edit."""

    edit: str
    text_contains: dict[str, str] = field(default_factory=dict)   # book_id -> snippet
    text_has_all: dict[str, list[str]] = field(default_factory=dict)  # book_id -> snippets
    no_book: set[str] = field(default_factory=set)                # book ids gone
    status: dict[str, str] = field(default_factory=dict)          # path -> files.status
    scan_pages: dict[str, int] = field(default_factory=dict)      # scan source -> n_pages
    rescanned: set[str] = field(default_factory=set)              # sources changed in place
    new_scans: set[str] = field(default_factory=set)              # sources added
    scores: dict[tuple[str, str], float] = field(default_factory=dict)  # current values


def fresh_isbn(rng: random.Random) -> str:
    """A checksum-valid ISBN-13 in the 979-8 range (unlikely to clash with a share's)."""
    body = "9798" + "".join(str(rng.randrange(10)) for _ in range(8))
    return body + ean.calc_check_digit(body)


def _touch(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def _write(path: Path, data: bytes | str, when: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    _touch(path, when)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


class Evolution:
    """Edits applied to one share copy, in sequence, each later than the last."""

    def __init__(self, share: Path, *, seed: int = 0):
        self.share = Path(share)
        self.rng = random.Random(seed)
        newest = max((p.lstat().st_mtime for p in self.share.rglob("*")), default=0.0)
        self.clock = max(newest, 1.6e9) + _DAY

    def _tick(self) -> float:
        self.clock += _DAY
        return self.clock

    def _files(self, pattern: str) -> list[Path]:
        return sorted(p for p in self.share.rglob(pattern) if p.is_file()
                      and not p.is_symlink())

    def _text_files(self) -> list[Path]:
        """Whole-book text files named by their ISBN (``<ISBN>.txt``) under Editorial/."""
        return [p for p in self._files("*.txt") if ISBN13.fullmatch(p.stem)
                and "Backup" not in p.parts and "Drafts" not in p.parts]

    def _chapter_folders(self) -> list[Path]:
        return sorted({p.parent for p in self._files("ch*.txt")
                       if ISBN13.search(p.parent.name)})

    # ---- state A additions -------------------------------------------------------------
    def prepare(self) -> list[Expect]:
        """Lay out what later edits need and the share may lack: a chapter-folder book of
        seven chapters (the old edition a new edition is made from)."""
        if any(len(list(d.glob("ch*.txt"))) >= 3 for d in self._chapter_folders()):
            return []
        src = max(self._text_files(), key=lambda p: (p.stat().st_size, p.name))
        paras = _paragraphs(src.read_text(encoding="utf-8", errors="replace"))
        while len(paras) < 7:
            paras = paras + [f"Paragraph {len(paras) + 1} of a longer book, added to make "
                             "chapters of it." for _ in range(1)]
        isbn = fresh_isbn(self.rng)
        folder = self.share / "Editorial" / "Finished" / "2015" / f"Seven Chapters ({isbn})"
        when = self._tick()
        _write(folder / "00_title.txt", "Seven Chapters\nby A. Tester\n", when)
        per = max(1, len(paras) // 7)
        chapters = []
        paras = paras[2:] if len(paras) > 9 else paras  # past a title/byline header
        for i in range(7):
            chunk = paras[i * per:(i + 1) * per] if i < 6 else paras[6 * per:]
            marker = f"The last words of chapter {i + 1} of {isbn}."
            body = f"Chapter {i + 1}\n\n" + "\n\n".join([*chunk, marker]) + "\n"
            _write(folder / f"ch{i + 1:02d}.txt", body, when)
            chapters.append(marker)
        return [Expect("prepare", text_has_all={isbn: chapters})]

    # ---- the edits ---------------------------------------------------------------------
    def add(self) -> Expect:
        """A new book as a whole text file under this year's folder."""
        src = self.rng.choice(self._text_files())
        isbn = fresh_isbn(self.rng)
        text = src.read_text(encoding="utf-8", errors="replace")
        marker = f"A sentence only the new book {isbn} has."
        dest = self.share / "Editorial" / "Finished" / "2024" / f"{isbn}.txt"
        _write(dest, text.rstrip() + f"\n\n{marker}\n", self._tick())
        return Expect("add", text_contains={isbn: marker},
                      status={dest.relative_to(self.share).as_posix(): "ok"})

    def change(self) -> Expect:
        """A paragraph appended to a current whole-book text file."""
        f = self.rng.choice(self._text_files())
        isbn = ISBN13.fullmatch(f.stem).group(0)
        marker = f"An editor's late addition {self.rng.randrange(10**9)}."
        data = f.read_bytes()
        enc = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            text, enc = data.decode("cp1252", errors="replace"), "cp1252"
        nl = "\r\n" if "\r\n" in text else "\n"
        _write(f, (text.rstrip() + f"{nl}{nl}{marker}{nl}").encode(enc), self._tick())
        return Expect("change", text_contains={isbn: marker})

    def delete(self) -> Expect:
        """An obsolete copy (a draft or backup) removed, else a whole book file."""
        olds = [p for p in self._files("*") if {"Backup", "Drafts"} & set(p.parts)]
        f = self.rng.choice(olds) if olds else self.rng.choice(self._text_files())
        rel = f.relative_to(self.share).as_posix()
        f.unlink()
        exp = Expect("delete", status={rel: "removed"})
        if not olds:
            isbn = ISBN13.fullmatch(f.stem).group(0)
            if not any(isbn in p.as_posix() for p in self._files("*")
                       if "Editorial" in p.parts):
                exp.no_book.add(isbn)
        return exp

    def move(self) -> Expect:
        """A folder of books renamed (mtimes kept, as a rename keeps them)."""
        years = sorted(d for d in (self.share / "Editorial" / "Finished").iterdir()
                       if d.is_dir() and re.fullmatch(r"\d{4}", d.name))
        d = self.rng.choice(years)
        before = [p.relative_to(self.share).as_posix() for p in d.rglob("*") if p.is_file()]
        target = d.with_name(f"{d.name} (archive)")
        d.rename(target)
        self.last_move = (d.relative_to(self.share).as_posix(),
                          target.relative_to(self.share).as_posix())
        return Expect("move", status={rel: "removed" for rel in before})

    def new_edition(self) -> Expect:
        """A chapter-folder book re-filed under a later year: every chapter byte-identical
        (and as old) but one, which changed. The new edition is current and whole."""
        newest: dict[str, Path] = {}
        for d in self._chapter_folders():
            if len(list(d.glob("ch*.txt"))) < 3:
                continue
            isbn = ISBN13.search(d.name).group(0)
            mt = max(p.stat().st_mtime for p in d.iterdir())
            if isbn not in newest or mt > max(p.stat().st_mtime for p in newest[isbn].iterdir()):
                newest[isbn] = d
        isbn = self.rng.choice(sorted(newest))
        old = newest[isbn]
        finished = self.share / "Editorial" / "Finished"
        year = 2025
        while (finished / str(year) / old.name).exists():
            year += 1
        new = finished / str(year) / old.name
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(old, new, copy_function=shutil.copy2)  # byte-identical, same mtimes
        chapters = sorted(new.glob("ch*.txt"))
        changed = chapters[len(chapters) // 2]
        marker = f"Revised for the new edition {self.rng.randrange(10**9)}."
        _write(changed, changed.read_text(encoding="utf-8").rstrip() + f"\n\n{marker}\n",
               self._tick())
        # every chapter of the new edition, the unchanged ones included, is in the text
        firsts = {isbn: marker}
        exp = Expect("new_edition", text_contains=firsts)
        for ch in chapters:
            exp.status[ch.relative_to(self.share).as_posix()] = "ok"
        for ch in sorted(old.glob("*.txt")):
            exp.status[ch.relative_to(self.share).as_posix()] = "superseded"
        exp.text_has_all[isbn] = [_paragraphs(c.read_text(encoding="utf-8"))[-1]
                                  for c in chapters]
        return exp

    def rescan(self) -> Expect:
        """A scan PDF saved over at the same path: fewer pages, another resolution."""
        import pymupdf

        pdfs = []
        for p in self._files("*.pdf"):
            if "scan" not in p.as_posix().lower():
                continue
            try:
                with pymupdf.open(p) as doc:
                    if doc.page_count >= 2:
                        pdfs.append(p)
            except Exception:
                continue
        p = self.rng.choice(pdfs)
        with pymupdf.open(p) as doc:
            keep = doc.page_count - 1
            out = pymupdf.open()
            for i in range(keep):
                pix = doc[i].get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
                page = out.new_page(width=doc[i].rect.width, height=doc[i].rect.height)
                page.insert_image(page.rect, stream=pix.tobytes("png"))
            data = out.tobytes()
        _write(p, data, self._tick())
        rel = p.relative_to(self.share).as_posix()
        return Expect("rescan", scan_pages={rel: keep}, rescanned={rel}, status={rel: "ok"})

    def _page_images(self, n: int) -> list:
        """n page images rendered from the share's scans (PIL, grayscale)."""
        import pymupdf
        from PIL import Image

        images = []
        for p in self._files("*.pdf"):
            if "scan" not in p.as_posix().lower():
                continue
            try:
                with pymupdf.open(p) as doc:
                    for page in doc:
                        pix = page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
                        images.append(Image.frombytes("L", (pix.width, pix.height),
                                                      pix.samples))
                        if len(images) == n:
                            return images
            except Exception:
                continue
        return images

    def tiff(self, frames: int = 3) -> Expect:
        """A multi-page TIFF from a new scanner, dropped into the incoming scans."""
        imgs = self._page_images(frames)
        isbn = fresh_isbn(self.rng)
        dest = self.share / "Scans" / "incoming" / f"{isbn}_scan.tiff"
        buf = io.BytesIO()
        imgs[0].save(buf, format="TIFF", save_all=True, append_images=imgs[1:],
                     compression="tiff_deflate", dpi=(150, 150))
        _write(dest, buf.getvalue(), self._tick())
        rel = dest.relative_to(self.share).as_posix()
        return Expect("tiff", scan_pages={rel: len(imgs)}, new_scans={rel},
                      status={rel: "ok"})

    def image(self) -> Expect:
        """A single page image of a new book."""
        img = self._page_images(1)[0]
        isbn = fresh_isbn(self.rng)
        dest = self.share / "Scans" / "incoming" / f"{isbn}_scan.png"
        buf = io.BytesIO()
        img.save(buf, format="PNG", dpi=(150, 150))
        _write(dest, buf.getvalue(), self._tick())
        rel = dest.relative_to(self.share).as_posix()
        return Expect("image", scan_pages={rel: 1}, new_scans={rel}, status={rel: "ok"})

    def score_sheet(self, books: list[str]) -> Expect:
        """A new export: other column order, ``;`` separator, later dates, revised values
        for ``books`` (ISBN-13s known to the share)."""
        self.sheet_year = getattr(self, "sheet_year", 2029) + 1  # each export later
        year = self.sheet_year
        rows = ["BT Easiness;Date;ISBN-13"]
        exp = Expect("score_sheet")
        for i, b in enumerate(books):
            value = round(self.rng.uniform(-3.0, 1.0), 3)
            rows.append(f"{value};{year}-0{1 + i % 9}-15;{b}")
            exp.scores[(b, "bt_easiness")] = value
        dest = self.share / "Scores" / f"export_{year}_{self.rng.randrange(1000)}.csv"
        _write(dest, "\n".join(rows) + "\n", self._tick())
        exp.status[dest.relative_to(self.share).as_posix()] = "ok"
        return exp

    def round(self, books: list[str]) -> list[Expect]:
        """One round of every edit, in a random order (moves last: they rename paths
        other edits chose)."""
        edits = [self.add, self.change, self.delete, self.new_edition, self.rescan,
                 self.tiff, self.image, lambda: self.score_sheet(books)]
        self.rng.shuffle(edits)
        before = {p.relative_to(self.share).as_posix() for p in self._files("*")}
        done = [e() for e in edits]
        moved = self.move()
        # a path made in this round and moved away was never ingested: no row to expect
        moved.status = {rel: st for rel, st in moved.status.items() if rel in before}
        old, new = self.last_move
        for exp in done:  # what the edits expect of a moved path, it now shows at the new one
            for rel in [r for r, st in exp.status.items()
                        if r.startswith(old + "/") and st != "removed"]:
                exp.status[new + rel[len(old):]] = exp.status.pop(rel)
        return [*done, moved]


def add_hostile_entries(share: Path) -> dict[str, str]:
    """A named pipe, a socket, a file nobody but root may read, and a half-written upload.

    Returns ``{relative path: what the reason must mention}``. The socket stays bound until
    the process exits (a closed Unix socket still leaves its entry, which is what a sync
    tool leaves behind too).
    """
    odd = share / "Editorial" / "Sync"
    odd.mkdir(parents=True, exist_ok=True)
    out = {}
    fifo = odd / "9781234567897.txt"  # named like a book: it must still never be opened
    os.mkfifo(fifo)
    out[fifo.relative_to(share).as_posix()] = "named pipe"
    sock = odd / "sync.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))
    s.close()
    out[sock.relative_to(share).as_posix()] = "socket"
    locked = odd / "9780306406157.txt"
    locked.write_text("Chapter 1\n\nA book nobody may read.\n")
    locked.chmod(0)
    out[locked.relative_to(share).as_posix()] = "cannot be read"
    half = share / "Scans" / "incoming" / "9780131103627_scan.pdf"
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
    out[half.relative_to(share).as_posix()] = "PDF"
    bomb = share / "Editorial" / "Finished" / "2024" / "9780262033848.docx"
    _write(bomb, _zip_bomb(), 1.7e9)
    out[bomb.relative_to(share).as_posix()] = "zip bomb"
    bad_xml = share / "Editorial" / "Finished" / "2024" / "9780201633610.docx"
    _write(bad_xml, _malformed_docx(), 1.7e9)
    out[bad_xml.relative_to(share).as_posix()] = "malformed"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISSOCK(sock.lstat().st_mode)
    return out


def _zip_bomb(megabytes: int = 24) -> bytes:
    """A .docx-looking zip whose one member inflates ~1000:1 (written in chunks: the test
    never holds the inflated bytes)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w") as f:
            chunk = b"\0" * 2**20
            for _ in range(megabytes):
                f.write(chunk)
    return buf.getvalue()


def _malformed_docx() -> bytes:
    """A Word package whose document part parses as XML but is not WordprocessingML."""
    import zipfile

    import docx

    d = docx.Document()
    d.add_paragraph("A paragraph.")
    src = io.BytesIO()
    d.save(src)
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as z:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "word/document.xml":
                data = (b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.'
                        b'openxmlformats.org/wordprocessingml/2006/main"/>')
            z.writestr(info, data)
    return out.getvalue()
