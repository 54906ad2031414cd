"""Format readers: turn one file of an editorial share into the text of a book.

Every reader is pure: bytes in, a :class:`Document` out; nothing is read, written or logged.
:func:`read_document` picks the reader by file extension (and reads the file if asked to).

All readers produce the same shape of text, whatever the format: ``"\\n"`` line ends, no BOM,
paragraphs separated by one blank line, headings such as ``Chapter 3`` kept as they appear in
the source, and no front matter (title, author, copyright page), which becomes
``Document.title`` / ``Document.author`` instead. A file that cannot be read as its format
(empty, corrupt, truncated, random bytes, an Office lock file) raises :class:`ReaderError`,
whose message names the file and says why, so the caller can record it as a rejected file.
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
import statistics
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import charset_normalizer
import docx
import ebooklib
import pymupdf
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from docx.document import Document as DocxDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import OpcError
from docx.table import Table as DocxTable
from ebooklib import epub
from lxml.etree import LxmlError

from catalog.errors import CorpusError

__all__ = [
    "FORMATS",
    "Document",
    "NoTextLayerError",
    "ReaderError",
    "decode_text",
    "read_document",
    "read_docx",
    "read_epub",
    "read_html",
    "read_pdf",
    "read_txt",
    "split_header",
]


class ReaderError(CorpusError):
    """A file that cannot be read as its format (corrupt, truncated, random bytes, empty)."""


# Zip packages (DOCX, EPUB) are checked before any parser inflates them. A book's package,
# images included, inflates to tens of MiB; its XML compresses about 5-20:1. A zip bomb
# claims gigabytes at ratios of 1000:1 and more.
MAX_INFLATED = 512 * 2**20   # bytes all members may inflate to
MAX_RATIO = 100              # inflated : stored, over the whole package
MAX_MEMBERS = 20_000         # entries in one package


def check_zip_package(data: bytes, *, name: str, kind: str) -> None:
    """Refuse a DOCX/EPUB zip package before parsing it when it would inflate too much.

    Sizes come from the zip's central directory, which a parser's inflater trusts as well;
    a member that inflates beyond its declared size is cut off by :mod:`zipfile` itself.

    Raises:
        ReaderError: not a zip, or over :data:`MAX_INFLATED`, :data:`MAX_RATIO` or
            :data:`MAX_MEMBERS` (the reason names the limit).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ReaderError(f"{name}: not a readable {kind} (a zip package): {e}") from None
    total = sum(i.file_size for i in infos)
    if len(infos) > MAX_MEMBERS:
        raise ReaderError(f"{name}: refused before parsing: {len(infos)} entries in its zip "
                          f"package, over the limit of {MAX_MEMBERS}.")
    if total > MAX_INFLATED:
        raise ReaderError(
            f"{name}: refused before parsing: its zip package would inflate to "
            f"{total / 2**20:,.0f} MiB, over the limit of {MAX_INFLATED // 2**20} MiB "
            "(ingest.readers.MAX_INFLATED).")
    ratio = total / max(1, len(data))
    if ratio > MAX_RATIO:
        raise ReaderError(
            f"{name}: refused before parsing: its zip package inflates {ratio:,.0f}:1, over "
            f"the limit of {MAX_RATIO}:1 (ingest.readers.MAX_RATIO), as a zip bomb does.")


class NoTextLayerError(ReaderError):
    """A PDF that is a valid file but holds only page images (a scan): it needs OCR."""


@dataclass(frozen=True)
class Document:
    """The text of one file, with the metadata the file itself carries.

    Attributes:
        text: The book body: ``"\\n"`` line ends, no BOM, paragraphs separated by one blank
            line, stripped; ``Chapter N`` heading lines kept as they appear in the source.
        title: From a header block at the head of the file, a title page or the document
            metadata; None when the file names no title.
        author: Likewise; several authors stay on separate lines, as the source has them.
        format: ``"txt"``, ``"docx"``, ``"html"``, ``"epub"`` or ``"pdf"``.
        encoding: Text files only: the detected encoding, e.g. ``"utf-8"``, ``"utf-8-sig"``,
            ``"ascii"``, ``"cp1252"``, ``"mac_roman"``.
        n_pages: PDFs only: the number of pages.
    """

    text: str
    title: str | None
    author: str | None
    format: str
    encoding: str | None
    n_pages: int | None = None


# ---------------------------------------------------------------------------------------------
# shared text helpers

# A chapter-like heading line: "Chapter 3", "CHAPTER IV", "Chap. 2", "Part One", "Book 2:
# The Storm". The number is digits, a well-formed Roman numeral or a number word, so that
# prose ("Part civil war...") does not qualify.
_HEADING = re.compile(
    r"\s*(chapter|chap\.|part|book)\s+"
    r"(\d+|(?=[mdclxvi])m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})"
    r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
    r"(\s*$|\s*[.:\-\u2013\u2014]|\s+\S)",
    re.IGNORECASE,
)
_HEADING_MAX = 100
# "by Jane Doe" opening an author block of a header or title page.
_BYLINE = re.compile(r"^\s*by\s+(\S.*)$", re.IGNORECASE)
# A hyphen that only exists because a word was broken at a line end: letter + "-".
_BROKEN_WORD = re.compile(r"[^\W\d_]-$")
# A hyphen or dash that ends a line right after a word belongs to that word ("Jean-" /
# "Paul", "cogs—" / "slowly"): the lines join without a space.
_TRAILING_DASH = re.compile(r"\S[-\u2010\u2011\u2013\u2014]$")


def _is_heading(line: str) -> bool:
    """A short line that starts with a capitalised "Chapter 3"-like heading."""
    line = line.strip()
    return len(line) <= _HEADING_MAX and line[:1].isupper() and bool(_HEADING.match(line))


def _join_lines(lines: Iterable[str]) -> str:
    """Re-join the lines of one paragraph, mending words hyphenated across a line end.

    A line ending in letter + "-" followed by a line starting lowercase is one word split in
    two ("hyphen-" / "ated"). Other hyphens at a line end ("Jean-" / "Paul", "1914-" /
    "1918") are kept, with no space, because there a real compound is the likelier reading.
    Soft hyphens only ever mark a possible break and are dropped.
    """
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith("\u00ad") or (_BROKEN_WORD.search(out) and line[0].islower()):
            out = out[:-1] + line
        elif _TRAILING_DASH.search(out):
            out += line
        else:
            out = f"{out} {line}"
    return out.replace("\u00ad", "")


def _compose(paragraphs: Iterable[str]) -> str:
    """The book body: non-empty paragraphs separated by one blank line."""
    kept = []
    for p in paragraphs:
        # Lines inside a paragraph (a <br>, a soft line break in Word) stay, but never as
        # blank lines: a blank line is the paragraph separator.
        lines = [ln.strip() for ln in p.split("\n")]
        p = "\n".join(ln for ln in lines if ln)
        if p:
            kept.append(p)
    return "\n\n".join(kept)


def _squash(text: str) -> str:
    """Whitespace-insensitive, case-insensitive form of a line, to compare headers/titles."""
    return " ".join(text.split()).casefold()


def _clean_meta(value: str | None) -> str | None:
    """A title/author as the source writes it (line breaks kept), or None when empty."""
    if value is None:
        return None
    lines = [ln.rstrip() for ln in value.strip().split("\n")]
    value = "\n".join(lines).strip()
    return value or None


# ---------------------------------------------------------------------------------------------
# plain text: encodings and header blocks

# Byte-order marks, longest first (a UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# The legacy encodings editorial text files come in, in order of preference on a tie.
_WESTERN = ("cp1252", "mac_roman")
# Characters that are common in edited Western text and that a wrong legacy decoding rarely
# produces: typographic quotes and dashes, the ellipsis, guillemets, bullets.
_TYPOGRAPHIC = set("‘’“”—–…«»•·\u00a0")
# Above this share (and number) of non-ASCII bytes a file is not "English with a few
# specials", and the statistical detector has enough evidence to be trusted on its own.
_MOSTLY_ASCII = 0.10
_FEW_SPECIALS = 64
# Control characters (other than tab and line ends) above this share mean binary data.
_MAX_CONTROL = 0.01


def _encoding_name(codec: str) -> str:
    """A readable, stable encoding name: ``utf-8``, ``utf-8-sig``, ``cp1252``, ``mac_roman``."""
    name = codecs.lookup(codec).name
    return {"mac-roman": "mac_roman"}.get(name, name)


def _plausibility(text: str) -> int:
    """How much the non-ASCII characters of a decoding look like real Western text.

    charset-normalizer decides well on long or non-Latin texts but has almost no evidence in
    English files with a handful of special characters, where cp1252 and Mac Roman both
    decode every byte. The wrong one betrays itself by its characters: an em dash read in the
    other code page becomes "Ñ" or "ó", a closing quote "Ó" or "î", "é" becomes "Ž" or "È".
    Typographic punctuation scores up, capitals glued to lowercase letters, lone letters and
    symbols score down.
    """
    score = 0
    n = len(text)
    for i, ch in enumerate(text):
        if ch < "\x80":
            continue
        prev = text[i - 1] if i else " "
        nxt = text[i + 1] if i + 1 < n else " "
        cat = unicodedata.category(ch)
        if ch in _TYPOGRAPHIC:
            score += 1
        elif cat == "Ll":
            # A lowercase accented letter belongs inside a word.
            if not (prev.isalpha() or nxt.isalpha()):
                score -= 1
        elif cat == "Lu":
            # A capital after a lowercase letter ("cafÈ", "wordÑword") or standing alone.
            if prev.islower() or not (prev.isalpha() or nxt.isalpha()):
                score -= 2
        elif cat.startswith("L"):
            score -= 1
        elif cat == "Cc":
            score -= 3
        else:
            score -= 1
    return score


def _single_byte(codec: str, data: bytes) -> str | None:
    """``data`` decoded with a one-byte-per-character codec, or None if it does not fit."""
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
    return text if len(text) == len(data) else None


def _reject_binary(text: str, name: str) -> str:
    """``text`` without stray control characters; ReaderError if there are many (binary)."""
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\n\r\f\v")
    if controls > _MAX_CONTROL * len(text):
        raise ReaderError(
            f"{name}: not text: {controls} control characters in {len(text)} (binary data, or "
            f"UTF-16 without a byte-order mark). Expected a text file."
        )
    # Form feeds and vertical tabs separate pages or lines in old text files.
    text = text.replace("\f", "\n").replace("\v", "\n")
    if controls:
        # A few stray controls (a DOS end-of-file ^Z, an escape pasted from a terminal)
        # carry no text.
        text = "".join(ch for ch in text if ch >= " " or ch in "\t\n")
    return text


def decode_text(data: bytes, *, name: str = "<bytes>") -> tuple[str, str]:
    """Decode the bytes of a text file, whatever its encoding.

    A byte-order mark decides first; then strict UTF-8 (which random legacy bytes almost never
    pass); then charset-normalizer. For mostly-ASCII files the statistical guess is weak, so
    cp1252, Mac Roman and the detector's guess are ranked by how plausible their non-ASCII
    characters are (see :func:`_plausibility`).

    Args:
        data: The file's bytes.
        name: Names the file in error messages.

    Returns:
        ``(text, encoding)``: the text with ``"\\n"`` line ends (CRLF and old Mac CR
        converted) and no BOM, and a readable encoding name such as ``"utf-8"``,
        ``"utf-8-sig"``, ``"ascii"``, ``"cp1252"`` or ``"mac_roman"``.

    Raises:
        ReaderError: ``data`` is empty or is not text (binary garbage).
    """
    if not data:
        raise ReaderError(f"{name}: the file is empty (0 bytes).")
    text: str | None = None
    encoding = ""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text, encoding = data.decode(codec), codec
            except UnicodeDecodeError as e:
                raise ReaderError(
                    f"{name}: starts with a {codec} byte-order mark but is not valid {codec}: "
                    f"{e.reason} at byte {e.start}."
                ) from None
            break
    if text is None and b"\x00" in data:
        # NUL bytes do not occur in any 8-bit text encoding.
        raise ReaderError(
            f"{name}: not text: it contains NUL bytes (binary data, or UTF-16 without a "
            f"byte-order mark). Expected a text file."
        )
    if text is None:
        try:
            text = data.decode("utf-8")
            encoding = "ascii" if data.isascii() else "utf-8"
        except UnicodeDecodeError:
            pass
    if text is None:
        text, encoding = _decode_legacy(data, name)
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return _reject_binary(text, name), _encoding_name(encoding)


def _decode_legacy(data: bytes, name: str) -> tuple[str, str]:
    """Decode bytes that are not UTF-8 (see :func:`decode_text`)."""
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise ReaderError(
            f"{name}: not text: no character encoding fits its {len(data)} bytes "
            f"(binary data?). Expected a text file."
        )
    guess = best.encoding
    non_ascii = sum(1 for b in data if b >= 0x80)
    if non_ascii > _MOSTLY_ASCII * len(data) and non_ascii > _FEW_SPECIALS:
        return str(best), guess
    candidates = [c for c in (*_WESTERN, guess) if _encoding_name(c) != "utf-8"]
    decoded = {}
    for codec in dict.fromkeys(candidates):
        text = _single_byte(codec, data)
        if text is not None:
            decoded[codec] = text
    if not decoded:
        return str(best), guess
    # max() keeps the first of equals, i.e. the preferred order of _WESTERN.
    codec = max(decoded, key=lambda c: _plausibility(decoded[c]))
    return decoded[codec], codec


# A header block never has more lines than this, and its lines are never prose-long.
_HEADER_MAX_LINES = 8
_HEADER_MAX_LINE = 200


def split_header(text: str) -> tuple[str | None, str | None, str]:
    """Split a header block ("Title\\nby Author\\n\\n") off the head of a text.

    The header is one or more title lines, then a line starting with "by " whose rest and
    following lines (up to a blank line or a chapter heading) are the author. A title alone,
    followed by a blank line and a chapter heading, is a header too. Text that starts with a
    chapter heading or with prose has no header.

    Args:
        text: Decoded text with ``"\\n"`` line ends.

    Returns:
        ``(title, author, body)``; ``(None, None, text)`` when ``text`` has no header block.
        Title and author keep their line breaks; the body starts at its first non-blank line.
    """
    lines = text.removeprefix("\ufeff").split("\n")
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    start = i
    if i == len(lines) or _is_heading(lines[i]):
        return None, None, text

    title: list[str] = [lines[i]]
    i += 1
    by_at = None
    # Title lines (a blank line between title and byline is allowed) up to the byline.
    while i < len(lines) and i - start < _HEADER_MAX_LINES:
        line = lines[i]
        if _BYLINE.match(line):
            by_at = i
            break
        if _is_heading(line):
            break
        title.append(line)
        i += 1
    if any(len(t) > _HEADER_MAX_LINE for t in title):
        return None, None, text

    author: list[str] = []
    if by_at is not None:
        author.append(_BYLINE.match(lines[by_at]).group(1))  # type: ignore[union-attr]
        i = by_at + 1
        while i < len(lines) and lines[i].strip() and not _is_heading(lines[i]):
            author.append(lines[i])
            i += 1
            if len(author) > _HEADER_MAX_LINES:
                return None, None, text
        if any(len(a) > _HEADER_MAX_LINE for a in author):
            return None, None, text
    else:
        # No byline: only a short title block right before a chapter heading is a header.
        while title and not title[-1].strip():
            title.pop()
        if not (i < len(lines) and _is_heading(lines[i]) and len(title) <= 3):
            return None, None, text
        if lines[i - 1].strip():
            return None, None, text

    body = "\n".join(lines[i:]).lstrip("\n")
    return _clean_meta("\n".join(title)), _clean_meta("\n".join(author)), body


def _is_hard_wrapped(blocks: list[list[str]]) -> bool:
    """True when lines are wrapped at a fixed width (Gutenberg style), not one per paragraph.

    In a wrapped text nearly every line that is followed by another line in its block fills
    the wrap width (~60-80 characters); one-paragraph-per-line files have long or ragged lines.
    """
    inner = [len(ln) for b in blocks for ln in b[:-1]]
    every = sorted(len(ln) for b in blocks for ln in b)
    if len(inner) < 3:
        return False
    width = every[int(0.9 * (len(every) - 1))]
    full = sum(1 for n in inner if n >= 0.75 * width)
    return width <= 100 and full >= 0.8 * len(inner)


def _plain_paragraphs(body: str) -> list[str]:
    """Paragraphs of a plain-text body: one per line, or re-joined if hard-wrapped."""
    blocks: list[list[str]] = [[]]
    for line in body.split("\n"):
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    if not _is_hard_wrapped(blocks):
        return [ln.strip() for b in blocks for ln in b]
    paragraphs = []
    for block in blocks:
        run: list[str] = []
        for line in block:
            if _is_heading(line):
                paragraphs += [_join_lines(run), line.strip()]
                run = []
            else:
                run.append(line)
        paragraphs.append(_join_lines(run))
    return paragraphs


def read_txt(data: bytes, *, name: str) -> Document:
    """Read a plain-text book or part of one, in any common encoding.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Returns:
        The document; title and author from a header block if the text starts with one.

    Raises:
        ReaderError: Empty, binary, or only whitespace.
    """
    text, encoding = decode_text(data, name=name)
    if not text.strip():
        raise ReaderError(f"{name}: holds no text, only whitespace ({len(data)} bytes).")
    title, author, body = split_header(text)
    return Document(
        text=_compose(_plain_paragraphs(body)),
        title=title,
        author=author,
        format="txt",
        encoding=encoding,
    )


# ---------------------------------------------------------------------------------------------
# docx

# Authors that word processors and libraries write into core properties by themselves: they
# name a tool or a default account, never the book's author.
_TOOL_AUTHORS = {"python-docx", "microsoft office user", "author", "unknown", "administrator"}


def _docx_blocks(document: DocxDocument) -> Iterator[tuple[str, str]]:
    """``(style name, text)`` of every body paragraph in order, table cells included."""
    # Paragraph.style looks its style up in the styles part on every call (an XPath search,
    # ~60% of reading a book); one id -> name map per document does the same once.
    names = {s.style_id: s.name for s in document.styles}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default_name = default.name if default is not None else ""
    for item in document.iter_inner_content():
        if isinstance(item, DocxTable):
            for row in item.rows:
                for cell in row.cells:
                    for p in cell.paragraphs:
                        yield "Table", p.text
        else:
            style_id = item._p.style  # the paragraph's w:pStyle id, None for the default
            yield names.get(style_id, default_name) if style_id else default_name, item.text


def read_docx(data: bytes, *, name: str) -> Document:
    """Read a Word (.docx) book.

    The title is the core-properties title or the first paragraph in the "Title" style; the
    author is a "by ..." paragraph before the body, else the core-properties author (unless it
    is a tool's default such as "python-docx"). Headings ("Chapter 1") stay in the text; running
    headers and footers of the page layout do not.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Raises:
        ReaderError: Not a Word package (e.g. an Office lock file ``~$x.docx``), or corrupt.
    """
    if not data:
        raise ReaderError(f"{name}: the file is empty (0 bytes).")
    if PurePath(name).name.startswith("~$"):
        raise ReaderError(
            f"{name}: an Office lock file (~$...), written while someone had the document "
            f"open; it holds no document."
        )
    check_zip_package(data, name=name, kind=".docx")
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(document))
        props = document.core_properties
        meta_title, meta_author = props.title, props.author
    except (OpcError, zipfile.BadZipFile, KeyError, ValueError, LxmlError, OSError) as e:
        raise ReaderError(
            f"{name}: not a readable .docx (a Word zip package): {type(e).__name__}: {e}"
        ) from None
    except (AttributeError, TypeError, IndexError):
        # python-docx walks the package XML by element names: XML that parses but is not
        # the WordprocessingML it expects surfaces as a missing attribute
        raise ReaderError(
            f"{name}: not a readable .docx: its package XML is malformed (the document, "
            "content types or relationships part is not what Word writes). Open and save "
            "it again in Word or LibreOffice, then ingest again."
        ) from None

    title = _clean_meta(meta_title)
    author = None
    body: list[str] = []
    after_title = False  # the previous paragraph was the Title paragraph: a byline may follow
    for style, text in blocks:
        if not text.strip():
            continue
        if not body and style == "Title":
            title, after_title = title or _clean_meta(text), True
            continue
        by = _BYLINE.match(text) if len(text) <= _HEADER_MAX_LINE else None
        if after_title and by:
            author, after_title = _clean_meta(by.group(1)), False
            continue
        after_title = False
        body.append(text)
    if author is None and meta_author and meta_author.strip().casefold() not in _TOOL_AUTHORS:
        author = _clean_meta(meta_author)
    return Document(text=_compose(body), title=title, author=author, format="docx", encoding=None)


# ---------------------------------------------------------------------------------------------
# html and epub

# fmt: off
_BLOCK_TAGS = {
    "address", "article", "blockquote", "body", "caption", "dd", "div", "dl", "dt",
    "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
    "main", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
}
# Not book text: code, navigation, site chrome (footers, sidebars), forms, embedded graphics.
_SKIP_TAGS = {
    "head", "script", "style", "noscript", "template", "nav", "footer", "aside", "form",
    "button", "select", "svg", "math", "iframe", "object",
}
# fmt: on
_AUTHOR_CLASSES = {"author", "byline", "creator"}
_BR = "\x00"  # stands for <br> while whitespace is collapsed; cannot occur in parsed HTML


@dataclass
class _Block:
    tag: str
    classes: frozenset[str]
    text: str  # whitespace collapsed, <br> as a line break: what the reader sees
    raw: str  # as written in the source (line breaks kept): for titles and authors


def _html_blocks(root: Tag) -> list[_Block]:
    """The block-level texts of an HTML tree in reading order, whitespace collapsed."""
    blocks: list[_Block] = []

    def flush(buf: list[str], tag: str, classes: frozenset[str]) -> None:
        raw = "".join(buf)
        buf.clear()
        text = re.sub(r"[ \t\r\n\f\v]+", " ", raw).replace(_BR, "\n").strip()
        if text:
            blocks.append(_Block(tag, classes, text, raw.replace(_BR, "\n").strip()))

    def walk(node: Tag, buf: list[str], tag: str, classes: frozenset[str]) -> None:
        for child in node.children:
            if isinstance(child, Comment | Doctype | Declaration | ProcessingInstruction):
                continue
            if isinstance(child, NavigableString):
                buf.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP_TAGS:
                continue
            if child.name == "br":
                buf.append(_BR)
            elif child.name == "pre":
                flush(buf, tag, classes)
                text = child.get_text().strip("\n")
                if text.strip():
                    blocks.append(_Block("pre", frozenset(), text, text))
            elif child.name in _BLOCK_TAGS:
                flush(buf, tag, classes)
                inner: list[str] = []
                own = _classes(child)
                walk(child, inner, child.name, own)
                flush(inner, child.name, own)
            else:
                walk(child, buf, tag, classes)

    top: list[str] = []
    walk(root, top, root.name or "body", frozenset())
    flush(top, root.name or "body", frozenset())
    return blocks


def _classes(tag: Tag) -> frozenset[str]:
    value = tag.get("class") or ()
    # The HTML parser splits class lists, the XML parser leaves them one string.
    names = value.split() if isinstance(value, str) else value
    return frozenset(c.casefold() for c in names)


def _parse_html(data: bytes, name: str, *, xhtml: bool = False) -> BeautifulSoup:
    """Parse HTML (or, for EPUB content documents, XHTML) bytes.

    bs4 finds the encoding itself (BOM, XML declaration, <meta charset>, then detection).
    XHTML is parsed as XML, as the EPUB standard requires; a document that is not well-formed
    enough to have a body is parsed again, forgivingly, as HTML.
    """
    try:
        if xhtml:
            soup = BeautifulSoup(data, "lxml-xml")
            if soup.find("body") is not None:
                return soup
            data = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", data)
        return BeautifulSoup(data, "lxml")
    except (LxmlError, ValueError, TypeError) as e:
        raise ReaderError(f"{name}: not readable as HTML: {type(e).__name__}: {e}") from None


def _meta_content(soup: BeautifulSoup, *names: str) -> str | None:
    for meta in soup.find_all("meta"):
        key = (meta.get("name") or meta.get("property") or "").casefold()
        if key in names and (meta.get("content") or "").strip():
            return meta["content"]
    return None


def _split_front(
    blocks: list[_Block], title: str | None, author: str | None, *, guess_title: bool
) -> tuple[str | None, str | None, list[_Block]]:
    """Take the title heading and the author line off the head of a page's blocks.

    A heading is the title heading when it repeats the known title, or (``guess_title``) is
    the page's leading ``<h1>`` and part of, or all of, the ``<title>``: "The Book" under
    ``<title>The Book | Publisher</title>``. Returns the title and author (the given ones,
    else found in the blocks) and the remaining body blocks. Front matter is only looked for
    before the first body block.
    """
    body: list[_Block] = []
    seen_title = seen_byline = False
    for k, block in enumerate(blocks):
        is_title_heading = block.tag in {"h1", "h2", "h3"} and (
            (title is not None and _squash(block.text) == _squash(title))
            or (
                guess_title
                and k == 0
                and block.tag == "h1"
                and not _is_heading(block.text)
                and (title is None or _squash(block.text) in _squash(title))
            )
        )
        if is_title_heading:
            title, seen_title = title or block.raw, True
            continue
        if block.classes & _AUTHOR_CLASSES:
            author = author or block.raw
            continue
        by = _BYLINE.match(block.raw)
        if by and seen_title and not seen_byline and len(block.text) <= _HEADER_MAX_LINE:
            # One byline, right after the title heading: "by Jane Doe".
            author, seen_byline = author or by.group(1), True
            continue
        body = blocks[k:]
        break
    return title, author, body


def read_html(data: bytes, *, name: str) -> Document:
    """Read a web (.html/.htm) edition of a book.

    The title comes from ``<title>`` (else the first ``<h1>``), the author from an element
    with class "author"/"byline", a ``<meta name="author">`` or a "by ..." line after the
    title. The title heading and author line are not part of the text; chapter headings are.
    Scripts, styles and navigation are dropped.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Raises:
        ReaderError: Empty, binary, or no text at all.
    """
    if not data.strip():
        raise ReaderError(f"{name}: the file is empty ({len(data)} bytes).")
    if b"\x00" in data[:4096] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ReaderError(f"{name}: not HTML: it contains NUL bytes (binary data).")
    soup = _parse_html(data, name)
    head_title = soup.title.get_text() if soup.title else None
    meta_author = _meta_content(soup, "author", "dc.creator", "dcterms.creator")
    root = soup.body or soup
    title, author, body = _split_front(
        _html_blocks(root), _clean_meta(head_title), _clean_meta(meta_author), guess_title=True
    )
    if not body and title is None:
        raise ReaderError(f"{name}: no text in this HTML file ({len(data)} bytes).")
    return Document(
        text=_compose(b.text for b in body),
        title=_clean_meta(title),
        author=_clean_meta(author),
        format="html",
        encoding=None,
    )


# Spine documents that are navigation or front matter, by EPUB 3 structural semantics
# (epub:type) or, for EPUB 2 files that have none, by their conventional file names.
# fmt: off
_NON_BODY_TYPES = {
    "cover", "toc", "landmarks", "loi", "lot", "page-list", "titlepage", "halftitlepage",
    "copyright-page", "frontispiece",
}
# fmt: on
_NON_BODY_NAME = re.compile(
    r"(cover|toc|nav|contents|titlepage|title[_-]page|copyright(page)?)([_-]?\d{0,3})",
    re.IGNORECASE,
)


def _epub_types(body: Tag | None) -> set[str]:
    """The epub:type semantics of a content document's body and its first sections."""
    if body is None:
        return set()
    types: set[str] = set()
    for el in [body, *body.find_all(["section", "div"], limit=3)]:
        # The XML parser keeps the prefix in the attribute name, as does the HTML parser.
        value = el.get("epub:type") or el.get("type") or ""
        types |= set(value.split() if isinstance(value, str) else value)
    return types


def _epub_meta(book: epub.EpubBook, field: str) -> str | None:
    values = [v for v, _attrs in book.get_metadata("DC", field) if v and v.strip()]
    return "\n".join(v.strip() for v in values) if values else None


def read_epub(data: bytes, *, name: str) -> Document:
    """Read an EPUB (2 or 3) book: its spine documents in order, minus navigation.

    Title and author come from the package metadata (``dc:title``, ``dc:creator``). Spine
    items that are not body text are skipped: the navigation document, ``linear="no"`` items,
    and cover, table-of-contents, title and copyright pages (by ``epub:type`` or file name),
    as well as a page that holds nothing but the title and author.

    Args:
        data: The file's bytes.
        name: The file's name or path, for error messages.

    Raises:
        ReaderError: Not an EPUB (not a zip, no container or package document), or no text.
    """
    if not data:
        raise ReaderError(f"{name}: the file is empty (0 bytes).")
    check_zip_package(data, name=name, kind="EPUB")
    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
    except (
        epub.EpubException,
        zipfile.BadZipFile,
        KeyError,
        LxmlError,
        ValueError,
        AttributeError,
        IndexError,
    ) as e:
        # ebooklib reports a missing container or OPF as KeyError/AttributeError/IndexError.
        raise ReaderError(
            f"{name}: not a readable EPUB (a zip package with an OPF): {type(e).__name__}: {e}"
        ) from None

    title = _clean_meta(_epub_meta(book, "title"))
    author = _clean_meta(_epub_meta(book, "creator"))
    front = {_squash(x) for x in (title, author) if x}
    front |= {_squash(line) for x in (title, author) if x for line in x.split("\n")}
    paragraphs: list[str] = []
    for idref, linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or linear == "no" or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            continue
        stem = PurePath(item.get_name()).stem
        if _NON_BODY_NAME.fullmatch(stem) or _NON_BODY_NAME.fullmatch(idref):
            continue
        soup = _parse_html(item.get_content(), f"{name}:{item.get_name()}", xhtml=True)
        root = soup.find("body")
        if _epub_types(root) & _NON_BODY_TYPES or (root and root.find("nav")):
            continue
        blocks = _html_blocks(root or soup)
        texts = [b.text for b in blocks]
        if all(_squash(t) in front or _squash(_BYLINE.sub(r"\1", t)) in front for t in texts):
            continue  # an unmarked title page
        # Only the metadata title counts here: a chapter's own <h1> is not the book's title.
        _t, _a, body = _split_front(blocks, title, author, guess_title=False)
        paragraphs += [b.text for b in body]
    if not paragraphs and title is None:
        raise ReaderError(f"{name}: this EPUB has no text in its spine.")
    return Document(
        text=_compose(paragraphs), title=title, author=author, format="epub", encoding=None
    )


# ---------------------------------------------------------------------------------------------
# pdf (text layer)

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


# ---------------------------------------------------------------------------------------------
# dispatch

FORMATS = {
    ".txt": read_txt,
    ".docx": read_docx,
    ".html": read_html,
    ".htm": read_html,
    ".epub": read_epub,
    ".pdf": read_pdf,
}


def read_document(path: Path | str, data: bytes | None = None) -> Document:
    """Read one file of a share as a document, choosing the reader by extension.

    Args:
        path: The file's path (its extension picks the reader, case-insensitively; it also
            names the file in error messages).
        data: The file's bytes if the caller has already read them (e.g. to hash them);
            otherwise the file is read here.

    Returns:
        The document.

    Raises:
        ReaderError: The extension is not one of .txt .docx .html .htm .epub .pdf, the file
            cannot be opened, or its content is not readable as its format.
    """
    path = Path(path)
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise ReaderError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            f"readable are {', '.join(sorted(FORMATS))}."
        )
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ReaderError(f"{path}: cannot be read: {e.strerror or e}") from None
    return reader(data, name=str(path))
