"""Typeset PDF books, read from their text layer: title and copyright pages become metadata,
running headers, footers and page numbers are dropped, lines are re-joined into paragraphs.

A PDF without a text layer (a scan) raises :class:`~ingest.readers.base.NoTextLayerError`:
it needs OCR (:mod:`ingest.ocr`), not a reader.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from dataclasses import dataclass

import pymupdf

from ingest.readers.base import Document, NoTextLayerError, ReaderError
from ingest.readers.shape import (
    _BYLINE,
    _clean_meta,
    _compose,
    _is_heading,
    _join_lines,
    _squash,
)

# Lines of a title or copyright page that end the author block.
_IMPRINT = re.compile(
    r"^\s*(copyright|©|\(c\)|all rights reserved|isbn|printed in|published|first (published|"
    r"edition)|library of congress|cover (design|illustration))",
    re.IGNORECASE,
)
# A page-number line: "12", "- 12 -", "Page 12", "12 of 40", "xii".
# Roman numerals only in lowercase (front-matter pagination): "IV" alone is more often a
# section heading.
_PAGE_NUMBER = re.compile(
    r"^[\s\-–—.|]*((?i:page)\s+)?(\d{1,4}|[ivxlc]{1,7})(\s+(?i:of)\s+\d{1,4})?[\s\-–—.|]*$"
)
# Furniture only lives in a band at the top and bottom of the page.
_EDGE_BAND = 0.2
# Text-extraction flags: keep whitespace, and expand ligatures (fi, fl) into letters by leaving
# out TEXT_PRESERVE_LIGATURES. No clipping to the page: a title set too wide for its page runs
# past the edge but is still the title.
_PDF_FLAGS = pymupdf.TEXT_PRESERVE_WHITESPACE


@dataclass(frozen=True)
class _Line:
    page: int
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    text: str


def _pdf_lines(page, page_no: int) -> list[_Line]:
    """The non-blank text lines of a page, top to bottom.

    Blocks are ordered by their top edge, lines inside a block keep the order they were
    written in: a block that overflows onto the next one (a long author list on a title page
    running into the copyright line) then stays in one piece instead of interleaving.
    """
    out = []
    blocks = page.get_text("dict", flags=_PDF_FLAGS)["blocks"]
    blocks.sort(key=lambda b: (round(b["bbox"][1]), b["bbox"][0]))
    for block in blocks:
        for line in block.get("lines", ()):
            spans = [s for s in line["spans"] if s["text"]]
            text = "".join(s["text"] for s in spans).rstrip()
            if not text.strip():
                continue
            # The line's size is that of most of its characters (a drop cap is one letter).
            size = max(spans, key=lambda s: len(s["text"].strip()))["size"]
            x0, y0, x1, y1 = line["bbox"]
            out.append(_Line(page_no, x0, y0, x1, y1, round(size, 1), text))
    return out


def _body_start(pages: list[list[_Line]]) -> int:
    """Index of the first body page; the pages before it are title/copyright front matter.

    The body starts on the first page with a chapter heading that is followed by prose (a
    heading alone, as in a table of contents, does not count). Without chapter headings, the
    first page is front matter only if it looks like a title page: short, with a byline or an
    imprint (copyright, ISBN) line.
    """
    if len(pages) < 2:
        return 0
    for p, lines in enumerate(pages):
        for k, line in enumerate(lines):
            if _is_heading(line.text) and any(
                len(nxt.text.split()) >= 6 for nxt in lines[k + 1 : k + 3]
            ):
                return p
    first = pages[0]
    title_page = len(first) <= 15 and any(
        _BYLINE.match(ln.text) or _IMPRINT.match(ln.text) for ln in first
    )
    return 1 if title_page else 0


def _layout_text(lines: list[_Line]) -> str:
    """Lines joined by line breaks, with a blank line where the page leaves one empty."""
    out = ""
    for prev, line in zip([None, *lines], lines, strict=False):
        if prev is not None:
            # A gap of most of a line height between two lines is an empty line.
            out += "\n\n" if line.y0 - prev.y1 > 0.6 * (prev.y1 - prev.y0) else "\n"
        out += line.text
    return out


def _title_page(front: list[list[_Line]]) -> tuple[str | None, str | None]:
    """Title and author from front-matter pages: the lines above and after "by ..."."""
    for lines in front:
        for k, line in enumerate(lines):
            by = _BYLINE.match(line.text)
            if k == 0 or not by:
                continue
            title = _layout_text([ln for ln in lines[:k] if not _IMPRINT.match(ln.text)])
            author = [by.group(1)]
            for nxt in lines[k + 1 :]:
                if _IMPRINT.match(nxt.text) or abs(nxt.size - line.size) > 0.5:
                    break
                author.append(nxt.text)
            return _clean_meta(title), _clean_meta("\n".join(author))
    # No byline: the title is what is set in the largest type on the first page.
    for lines in front:
        if lines:
            top = max(ln.size for ln in lines)
            return _clean_meta(_layout_text([ln for ln in lines if ln.size == top])), None
    return None, None


def _strip_furniture(
    pages: list[list[_Line]], known: set[str], heights: list[float]
) -> list[_Line]:
    """Body lines of all pages without running headers/footers and page numbers.

    A line is furniture when it sits in the top or bottom band of its page and is a page
    number, or repeats at the edge of at least two pages (digits ignored, so "Title 12" and
    "Title 13" match), or equals the book's title or author (which identifies the running
    header of a book too short for repeats). Removal works inwards from each edge and stops
    at the first real line, so a body line is never taken even if it happens to match.
    """

    def key(line: _Line) -> str:
        return re.sub(r"\d+", "#", _squash(line.text))

    edge_counts: Counter[str] = Counter()
    for lines in pages:
        edge = {key(ln) for ln in lines[:3] + lines[-3:]}
        edge_counts.update(k for k in edge if not _PAGE_NUMBER.match(k))

    def is_furniture(line: _Line) -> bool:
        if _is_heading(line.text):
            return False
        s = _squash(line.text)
        return bool(_PAGE_NUMBER.match(line.text) or s in known or edge_counts[key(line)] >= 2)

    body: list[_Line] = []
    for lines, height in zip(pages, heights, strict=True):
        top, bottom = 0, len(lines)
        while top < bottom and lines[top].y1 <= _EDGE_BAND * height and is_furniture(lines[top]):
            top += 1
        while (
            bottom > top
            and lines[bottom - 1].y0 >= (1 - _EDGE_BAND) * height
            and (is_furniture(lines[bottom - 1]))
        ):
            bottom -= 1
        body += lines[top:bottom]
    return body


def _pdf_paragraphs(lines: list[_Line]) -> list[str]:
    """Re-join body lines into paragraphs.

    A new paragraph starts at a heading (a chapter line, or a line set in another size than
    the body text), after a vertical gap clearly larger than the usual line spacing, at an
    indented first line, or after a short line ending a sentence. A paragraph runs on across
    a page break unless the page's last line was short.
    """
    if not lines:
        return []
    sizes = Counter()
    for ln in lines:
        sizes[ln.size] += len(ln.text)
    body_size = sizes.most_common(1)[0][0]
    body = [ln for ln in lines if abs(ln.size - body_size) <= 0.5]
    left = statistics.median_low([ln.x0 for ln in body]) if body else 0.0
    right = max((ln.x1 for ln in body), default=0.0)
    width = max(right - left, 1.0)
    gaps = [b.y0 - a.y1 for a, b in itertools.pairwise(body) if a.page == b.page and b.y0 > a.y0]
    usual_gap = statistics.median(gaps) if gaps else 0.0

    def heading(ln: _Line) -> bool:
        return _is_heading(ln.text) or abs(ln.size - body_size) > 0.5

    def short(ln: _Line) -> bool:
        return ln.x1 < right - 0.15 * width

    paragraphs: list[list[str]] = []
    prev: _Line | None = None
    for ln in lines:
        new = prev is None or heading(ln) or heading(prev)
        if not new and prev is not None:
            if ln.page != prev.page:
                new = short(prev)
            else:
                new = (
                    ln.y0 - prev.y1 > usual_gap + 0.5 * body_size
                    or ln.x0 > left + 0.8 * body_size
                    or (short(prev) and prev.text.rstrip()[-1:] in ".!?:\"'”’)")
                )
        if new:
            paragraphs.append([])
        paragraphs[-1].append(ln.text)
        prev = ln
    return [_join_lines(p) for p in paragraphs]


def read_pdf(data: bytes, *, name: str) -> Document:
    """Read the text layer of a typeset PDF book, without its page furniture.

    Pages before the body (title and copyright pages) become metadata: title and author come
    from the title page ("Title" / "by Author"), else from the PDF's metadata. Running headers
    and footers, page numbers, and line breaks inside paragraphs are removed; words broken
    across lines ("hyphen-" / "ated") are joined.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Returns:
        The document, with ``n_pages`` set.

    Raises:
        ReaderError: Empty, not a PDF, truncated, encrypted, or without a text layer (a scan,
            which needs OCR instead).
    """
    if not data:
        raise ReaderError(f"{name}: the file is empty (0 bytes).")
    if b"%PDF-" not in data[:1024]:
        raise ReaderError(f"{name}: not a PDF: no %PDF- signature at the start of the file.")
    if b"%%EOF" not in data[-2048:]:
        # pymupdf would quietly repair a cut-off upload and return whatever pages survived.
        raise ReaderError(
            f"{name}: truncated PDF: no %%EOF marker at the end ({len(data)} bytes); "
            f"the upload or copy was cut off. Fetch the file again."
        )
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise ReaderError(f"{name}: not a readable PDF: {e}") from None
    with doc:
        if doc.needs_pass:
            raise ReaderError(f"{name}: the PDF is encrypted; it needs a password.")
        if doc.page_count == 0:
            raise ReaderError(f"{name}: the PDF has no pages.")
        try:
            pages = [_pdf_lines(page, i) for i, page in enumerate(doc)]
            heights = [page.rect.height for page in doc]
        except (RuntimeError, ValueError) as e:
            raise ReaderError(f"{name}: a page of the PDF cannot be read: {e}") from None
        metadata = doc.metadata or {}
        n_pages = doc.page_count
    if not any(pages):
        raise NoTextLayerError(
            f"{name}: the PDF has no text layer ({n_pages} pages of images, a scan?). "
            f"It needs OCR, not a text reader."
        )

    start = _body_start(pages)
    front = pages[:start]
    if start == 0:
        # Title and byline may head the first page, above "Chapter 1".
        first = pages[0]
        h = next((k for k, ln in enumerate(first) if _is_heading(ln.text)), 0)
        if any(_BYLINE.match(ln.text) for ln in first[1:h]):
            front, pages = [first[:h]], [first[h:], *pages[1:]]
    title, author = _title_page(front)
    title = title or _clean_meta(metadata.get("title"))
    author = author or _clean_meta(metadata.get("author"))
    known = {_squash(line) for x in (title, author) if x for line in x.split("\n")}
    known |= {_squash(x) for x in (title, author) if x}
    known.discard("")
    lines = _strip_furniture(pages[start:], known, heights[start:])
    return Document(
        text=_compose(_pdf_paragraphs(lines)),
        title=title,
        author=author,
        format="pdf",
        encoding=None,
        n_pages=n_pages,
    )
