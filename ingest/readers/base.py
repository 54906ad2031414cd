"""The readers' shared vocabulary: the file suffixes ingest reads (documents, and the page
images of scans) with their formats, the :class:`Document` every reader returns, the errors a
file that cannot be read raises (:class:`ReaderError`, :class:`NoTextLayerError` for a scan
that needs OCR), and the limits a zip package (DOCX, EPUB) is checked against before any
parser inflates it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from catalog.errors import CorpusError

# The suffixes ingest reads, each listed once (lowercase, with the dot), with the format each
# one is: ``Document.format`` and the ``files.format`` column.
DOCUMENT_FORMATS = {".txt": "txt", ".docx": "docx", ".html": "html", ".htm": "html",
                    ".epub": "epub", ".pdf": "pdf"}
# Page images of scans: OCR reads them (ingest.ocr), no reader does.
IMAGE_FORMATS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".tif": "tiff", ".tiff": "tiff"}
DOCUMENT_SUFFIXES = frozenset(DOCUMENT_FORMATS)
IMAGE_SUFFIXES = frozenset(IMAGE_FORMATS)
# The documents whose bytes are their text (no markup, package or page layout to read).
TEXT_SUFFIXES = frozenset({".txt"})


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
            "(ingest.readers.base.MAX_INFLATED).")
    ratio = total / max(1, len(data))
    if ratio > MAX_RATIO:
        raise ReaderError(
            f"{name}: refused before parsing: its zip package inflates {ratio:,.0f}:1, over "
            f"the limit of {MAX_RATIO}:1 (ingest.readers.base.MAX_RATIO), as a zip bomb does.")


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
