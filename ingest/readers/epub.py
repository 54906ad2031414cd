"""EPUB (2 and 3) books: the spine's content documents in order, without navigation, cover,
table of contents, title and copyright pages; title and author from the package metadata.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePath

import ebooklib
from bs4 import Tag
from ebooklib import epub
from lxml.etree import LxmlError

from ingest.readers.base import Document, ReaderError, check_zip_package
from ingest.readers.html import _html_blocks, _parse_html, _split_front
from ingest.readers.shape import _BYLINE, _clean_meta, _compose, _squash

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
