"""Word (.docx) books: body paragraphs and table cells in order, title and author from the
"Title" paragraph, a byline or the core properties.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import PurePath

import docx
from docx.document import Document as DocxDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import OpcError
from docx.table import Table as DocxTable
from lxml.etree import LxmlError

from ingest.readers.base import Document, ReaderError, check_zip_package
from ingest.readers.shape import _BYLINE, _HEADER_MAX_LINE, _clean_meta, _compose

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
