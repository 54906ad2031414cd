"""Web (.html/.htm) books, and the HTML block walk that EPUB content documents share.

An HTML tree becomes its block-level texts in reading order (scripts, navigation and site
chrome left out); the title heading and the author line are taken off the head of a page.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from lxml.etree import LxmlError

from ingest.readers.base import Document, ReaderError
from ingest.readers.shape import (
    _BYLINE,
    _HEADER_MAX_LINE,
    _clean_meta,
    _compose,
    _is_heading,
    _squash,
)

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
