"""Walk an editorial share: every file hashed, classified, its bytes kept, its text read.

One :class:`FileRecord` per file, symlinks included (never followed out of the share). The
per-file work (hash, store the original bytes content-addressed, classify, parse) is a pure
function of the file, so it fans out over a process pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from catalog import CorpusError, ObjectStore, content_key

# Kinds of file (the `files.kind` column).
EDITED, SCAN, SCORES, METADATA, JUNK = "edited", "scan", "scores", "metadata", "junk"

SHEET_FORMATS = {".csv": "csv", ".xlsx": "xlsx", ".tsv": "csv"}
OS_METADATA = {".ds_store", "thumbs.db", "desktop.ini", ".localized", "icon\r"}

# ISBN-13 or ISBN-10 written with optional hyphens/spaces between digit groups.
_ISBN_CANDIDATE = re.compile(
    r"(?<![\dX])(97[89](?:[- ]?\d){10}|\d(?:[- ]?\d){8}[- ]?[\dX])(?!\d)", re.IGNORECASE
)


log = logging.getLogger(__name__)


class ShareError(CorpusError):
    """The share itself is unusable (missing, not a folder)."""


@dataclass(frozen=True)
class FileRecord:
    """What the inventory learned about one file of the share.

    ``text``/``title``/``author`` are set for edited files that could be read; ``reason``
    explains any file that cannot be used (junk, unreadable, unsupported).
    """

    path: str                   # relative to the share, '/'-separated
    size: int
    mtime: datetime
    sha256: str
    kind: str
    format: str | None = None
    encoding: str | None = None
    book_id: str | None = None
    reason: str | None = None
    blob_key: str | None = None
    title: str | None = None
    author: str | None = None
    text: str | None = None
    n_pages: int | None = None
    symlink_to: str | None = None
    extra: dict = field(default_factory=dict, compare=False)


def isbn_from_path(rel: str) -> str | None:
    """The book's ISBN-13 from a file name, else from the nearest folder name that has one.

    Every candidate is checksum-validated and normalised (ISBN-10 and hyphenated forms).
    """
    from ingest.scoresheets import normalise_isbn

    for part in reversed(PurePosixPath(rel).parts):
        for m in _ISBN_CANDIDATE.finditer(part):
            isbn = normalise_isbn(m.group(1))
            if isbn:
                return isbn
    return None


def walk_share(root: Path) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` as ``(relative posix path, absolute path)``, sorted.

    Symlinks are yielded as files (the caller records where they point) and never
    descended into, so a link cannot lead the walk out of the share.
    """
    return ((rel, root.resolve() / rel) for rel in walk_paths(root))


def walk_paths(root: Path) -> list[str]:
    """The relative posix paths of :func:`walk_share`, as plain strings (no ``Path``
    object per file: a re-run of a 250k-file share walks in a fraction of the time)."""
    root = root.resolve()
    if not root.is_dir():
        raise ShareError(f"{root}: not a folder. Pass the path of the share to ingest.")
    out = []
    base = len(str(root)) + 1
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        # a symlinked folder is a file-like entry: recorded, not walked
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links]
        prefix = dirpath[base:].replace(os.sep, "/")
        for name in sorted([*filenames, *links]):
            out.append(f"{prefix}/{name}" if prefix else name)
    return out


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def not_regular(st: os.stat_result) -> str | None:
    """What a non-regular, non-symlink entry is (``"a named pipe (FIFO)"``...), else None.

    Such entries are never opened: reading a FIFO blocks until a writer comes, a device may
    never end.
    """
    for test, what in _NOT_REGULAR:
        if test(st.st_mode):
            return what
    return None


def check_readable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (one sentence), or None when it can.

    Checks the entry type without opening it, then opens it (non-blocking, so even a FIFO
    created between the two checks cannot hang the caller).
    """
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    what = not_regular(st)
    if what:
        return f"{what}, not a regular file: never opened"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    os.close(fd)
    return None


def _unusable_record(rel: str, st: os.stat_result, reason: str) -> FileRecord:
    """A quarantined record for an entry whose bytes cannot (or must not) be read."""
    return FileRecord(
        path=rel, size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        mtime=datetime.fromtimestamp(st.st_mtime, UTC),
        # no content: the sha256 names the situation, so the row is stable across runs
        sha256=hashlib.sha256(f"unreadable:{reason}".encode()).hexdigest(),
        kind=JUNK, reason=reason,
    )


def read_regular_file(p: Path) -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO swapped in after the
    type check fails instead of waiting for a writer)."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        return f.read()


def _symlink_record(root: Path, rel: str, p: Path) -> FileRecord:
    target = os.readlink(p)
    resolved = (p.parent / target).resolve()
    inside = resolved.is_relative_to(root.resolve())
    st = p.lstat()
    where = resolved.relative_to(root.resolve()).as_posix() if inside else str(resolved)
    reason = (f"symbolic link to {where}: not followed (the target is ingested itself)"
              if inside else f"symbolic link to {where}, outside the share: not followed")
    return FileRecord(
        path=rel, size=st.st_size, mtime=datetime.fromtimestamp(st.st_mtime, UTC),
        sha256=hashlib.sha256(target.encode()).hexdigest(), kind=JUNK, reason=reason,
        symlink_to=where,
    )


def classify(rel: str, size: int) -> tuple[str, str | None, str | None]:
    """``(kind, format, reason)`` from the name and size alone (content checks come later)."""
    # the suffixes are the readers' (importing them here keeps `import ingest.share` light)
    from ingest.readers import DOCUMENT_FORMATS, IMAGE_FORMATS

    name = PurePosixPath(rel).name
    lower = name.lower()
    suffix = PurePosixPath(lower).suffix
    parts = [p.lower() for p in PurePosixPath(rel).parts[:-1]]
    if lower in OS_METADATA or lower.startswith("._"):
        return JUNK, None, "operating-system metadata file"
    if lower.startswith("~$") or lower.startswith(".~lock"):
        return JUNK, None, "office lock file left by an open document"
    if size == 0:
        return JUNK, None, "empty file"
    if suffix in IMAGE_FORMATS:
        if any("scan" in p for p in parts) or "scan" in lower:
            return SCAN, IMAGE_FORMATS[suffix], None
        return METADATA, IMAGE_FORMATS[suffix], (
            "an image outside the scans folders (a cover or figure?): kept as share metadata; "
            "put it in a folder named Scans (or name it *_scan.*) to OCR it")
    if suffix in SHEET_FORMATS:
        return SCORES, SHEET_FORMATS[suffix], None
    if suffix == ".pdf" and any("scan" in p for p in parts):
        return SCAN, "pdf", None
    if suffix in DOCUMENT_FORMATS:
        return EDITED, DOCUMENT_FORMATS[suffix], None
    return JUNK, suffix.lstrip(".") or None, f"unsupported file type {suffix or '(none)'}"


def inspect_file(root: str, rel: str, store: ObjectStore | None) -> FileRecord:
    """Hash, store, classify and (for edited files) read one file. Pure but for the store.

    Never raises for a bad file: the problem becomes the record's ``reason``.
    """
    from ingest.readers import NoTextLayerError, ReaderError, read_document

    share = Path(root)
    p = share / rel
    try:
        st = p.lstat()
    except OSError as e:  # vanished or unreachable since the walk
        return _unusable_record(rel, os.stat_result((0,) * 10), f"cannot be read: "
                                f"{e.strerror or e}")
    if stat.S_ISLNK(st.st_mode):
        return _symlink_record(share, rel, p)
    what = not_regular(st)
    if what:
        return _unusable_record(rel, st, f"{what}, not a regular file: never opened")
    try:
        data = read_regular_file(p)
    except OSError as e:
        log.warning("%s: cannot be read (%s): quarantined", rel, e.strerror or e)
        return _unusable_record(rel, st, f"cannot be read: {e.strerror or e} (check the "
                                "file's permissions, then ingest again)")
    digest = hashlib.sha256(data).hexdigest()
    key = content_key(digest)
    if store is not None and not store.exists(key):
        store.put_bytes(key, data)
    kind, fmt, reason = classify(rel, len(data))
    base = dict(path=rel, size=len(data), mtime=datetime.fromtimestamp(st.st_mtime, UTC),
                sha256=digest, blob_key=key, format=fmt, book_id=isbn_from_path(rel))
    if kind == JUNK:
        return FileRecord(kind=kind, reason=reason, **base)
    if kind == SCAN:
        return _inspect_scan(data, base)
    if kind == SCORES:
        from ingest.scoresheets import ScoreSheetError, read_score_sheet

        try:
            sheet = read_score_sheet(p, data=data, source_file=rel)
        except ScoreSheetError as e:
            return FileRecord(kind=kind, reason=str(e), **base)
        except Exception as e:  # a reader bug must quarantine one file, not stop the ingest
            _log_reader_bug(rel, e)
            return FileRecord(kind=kind, reason=f"could not be read ({type(e).__name__}: {e})"
                              "; please report it", **base)
        return FileRecord(kind=kind, extra={"scores": sheet.scores, "rejected": sheet.rejected,
                                            "columns": sheet.columns}, **base)
    # edited formats; a PDF without a text layer outside a scans folder is a scan after all
    try:
        doc = read_document(rel, data)  # messages name the file as the share knows it
    except ReaderError as e:
        if isinstance(e, NoTextLayerError):
            return _inspect_scan(data, base)
        return FileRecord(kind=EDITED, reason=str(e), **base)
    except Exception as e:  # a reader bug must quarantine one file, not stop the ingest
        _log_reader_bug(rel, e)
        return FileRecord(kind=EDITED, reason=f"could not be read ({type(e).__name__}: {e}); "
                          "please report it", **base)
    if base["book_id"] is None:
        return FileRecord(kind=METADATA, encoding=doc.encoding, title=doc.title,
                          reason="no ISBN in its name or folder: kept as share metadata",
                          **base)
    return FileRecord(kind=EDITED, encoding=doc.encoding, title=doc.title, author=doc.author,
                      text=doc.text, n_pages=doc.n_pages, **base)


def _log_reader_bug(rel: str, e: Exception) -> None:
    # one line at default verbosity; the traceback only at -vv (debug)
    log.warning("%s: quarantined, the reader failed (%s: %s)", rel, type(e).__name__, e)
    log.debug("reader traceback for %s", rel, exc_info=True)


def image_frames(data: bytes) -> int:
    """Frames (pages) of an image file: 1 for JPEG/PNG, every page of a multi-page TIFF.

    Raises:
        OSError: not a readable image.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return max(1, int(getattr(img, "n_frames", 1) or 1))
    except (UnidentifiedImageError, ValueError, SyntaxError, EOFError) as e:
        raise OSError(str(e)) from None


def scan_key(path: str, fmt: str | None) -> str:
    """The scan a scan file belongs to (``scans.source``).

    A PDF is a scan of its own, and so is an image named for its book (an ISBN or "scan" in
    its name, ``Scans/incoming/9781234567897_scan.tiff``) in a folder that is not named for
    a book. Other images (``Scans/batch/9781234567897/page_0001.jpg``) are pages of their
    folder's scan, in natural name order.
    """
    p = PurePosixPath(path)
    if fmt == "pdf":
        return path
    named = "scan" in p.stem.lower() or _ISBN_CANDIDATE.search(p.stem)
    if named and not _ISBN_CANDIDATE.search(p.parent.name):
        return path
    return p.parent.as_posix()


def _inspect_scan(data: bytes, base: dict) -> FileRecord:
    if base["format"] != "pdf":
        try:
            frames = image_frames(data)
        except OSError as e:
            return FileRecord(kind=JUNK, reason=f"not a readable image ({e}); a truncated or "
                              "corrupt upload: re-scan or re-upload it", **base)
        return FileRecord(kind=SCAN, n_pages=frames, **base)
    import pymupdf

    try:
        with pymupdf.open(stream=data, filetype="pdf") as pdf:
            n = pdf.page_count
    except Exception as e:  # PyMuPDF raises its own and RuntimeError types for bad PDFs
        return FileRecord(kind=JUNK, reason=f"not a readable PDF ({e}); a truncated or "
                          "corrupt upload: re-scan or re-upload it", **base)
    if n == 0:
        return FileRecord(kind=JUNK, reason="PDF with no pages", **base)
    return FileRecord(kind=SCAN, n_pages=n, **{**base, "format": "pdf"})
