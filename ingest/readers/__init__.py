"""Format readers: turn one file of an editorial share into the text of a book.

Every reader is pure: bytes in, a :class:`Document` out; nothing is read, written or logged.
:func:`read_document` picks the reader by file extension (and reads the file if asked to).

All readers produce the same shape of text, whatever the format: ``"\\n"`` line ends, no BOM,
paragraphs separated by one blank line, headings such as ``Chapter 3`` kept as they appear in
the source, and no front matter (title, author, copyright page), which becomes
``Document.title`` / ``Document.author`` instead. A file that cannot be read as its format
(empty, corrupt, truncated, random bytes, an Office lock file) raises :class:`ReaderError`,
whose message names the file and says why, so the caller can record it as a rejected file.

The package holds one module per format, around two shared ones:

* :mod:`~ingest.readers.base`: the suffixes ingest reads, :class:`Document`, the errors, the
  zip-package limits;
* :mod:`~ingest.readers.shape`: the shape of text all readers produce (headings, bylines,
  paragraphs);
* :mod:`~ingest.readers.text` (plain text and the one text decoding, :func:`decode_text`),
  :mod:`~ingest.readers.docx`, :mod:`~ingest.readers.html`, :mod:`~ingest.readers.epub` and
  :mod:`~ingest.readers.pdf`;
* here: :func:`read_document`, which picks the reader by the file's suffix.
"""

from __future__ import annotations

from pathlib import Path

from ingest.readers.base import (
    DOCUMENT_FORMATS,
    DOCUMENT_SUFFIXES,
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    MAX_INFLATED,
    MAX_MEMBERS,
    MAX_RATIO,
    TEXT_SUFFIXES,
    Document,
    NoTextLayerError,
    ReaderError,
    check_zip_package,
)
from ingest.readers.docx import read_docx
from ingest.readers.epub import read_epub
from ingest.readers.html import read_html
from ingest.readers.pdf import read_pdf
from ingest.readers.text import decode_text, read_txt, split_header

__all__ = [
    "DOCUMENT_FORMATS",
    "DOCUMENT_SUFFIXES",
    "FORMATS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "MAX_INFLATED",
    "MAX_MEMBERS",
    "MAX_RATIO",
    "TEXT_SUFFIXES",
    "Document",
    "NoTextLayerError",
    "ReaderError",
    "check_zip_package",
    "decode_text",
    "read_document",
    "read_docx",
    "read_epub",
    "read_html",
    "read_pdf",
    "read_txt",
    "split_header",
]

# The reader of each document suffix, through its format: the suffixes are DOCUMENT_FORMATS'.
_READERS = {"txt": read_txt, "docx": read_docx, "html": read_html, "epub": read_epub,
            "pdf": read_pdf}
FORMATS = {suffix: _READERS[fmt] for suffix, fmt in DOCUMENT_FORMATS.items()}


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
