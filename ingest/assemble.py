"""Assemble books from the inventory: chapter folders, part files, whole files, versions.

Pure: :func:`assemble` takes the :class:`~ingest.share.FileRecord` list of one share and
returns the rows of ``files``, ``books``, ``texts``, ``scans`` and ``scores``. Rules:

* identical bytes are stored once; a further copy filed for the same book is a
  ``duplicate`` of the first;
* a book's *versions* are its whole files, its chapter folder (``00_title.txt``,
  ``ch1.txt`` ... in natural order) and its part set (``_part1``, ``-2``, `` (3)``);
  the most recently modified version is current, the others ``superseded``;
* a file that cannot be used is ``quarantined`` with its reason, never dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa

from catalog import TABLES
from ingest.share import EDITED, JUNK, METADATA, SCAN, SCORES, FileRecord

OK, DUPLICATE, SUPERSEDED, QUARANTINED = "ok", "duplicate", "superseded", "quarantined"
_PART = re.compile(r"^(?P<stem>.*?)(?:[ _-]?part[ _-]?|-| ?\()(?P<n>\d{1,3})\)?$", re.I)
_CHAPTER_LINE = re.compile(r"^(?:chapter|chap\.|part|book)\s+[\w.-]+\s*$", re.I | re.M)
_COPY_HINT = re.compile(r"copy|backup|bak|old", re.I)


@dataclass(frozen=True)
class Version:
    """One version of a book: the files that make it, in reading order."""

    book_id: str
    key: str            # the whole file's path, or the folder / part-set it came from
    layout: str         # file | folder | parts
    records: tuple[FileRecord, ...]

    @property
    def mtime(self) -> datetime:
        return max(r.mtime for r in self.records)


def natural_key(text: str) -> list:
    """Sort key that puts ch2 before ch10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _version_key(rec: FileRecord) -> tuple[str, str]:
    """(layout, key) of the version a readable edited file belongs to."""
    p = PurePosixPath(rec.path)
    in_name = rec.book_id and rec.book_id in _digits(p.name)
    if not in_name:
        return "folder", p.parent.as_posix()
    m = _PART.match(p.stem)
    if m and rec.book_id in _digits(m.group("stem")) and len(_digits(m.group("stem"))) <= 13:
        return "parts", f"{p.parent.as_posix()}/{m.group('stem').strip()}"
    return "file", rec.path


def _reading_order(rec: FileRecord) -> list:
    """Part number for part files (``-3`` after `` (2)``), natural name order otherwise."""
    stem = PurePosixPath(rec.path).stem
    m = _PART.match(stem)
    if m and rec.book_id in _digits(m.group("stem")):
        return [int(m.group("n"))]
    return natural_key(PurePosixPath(rec.path).name)


def _digits(s: str) -> str:
    digits = re.sub(r"[^\dXx]", "", s)
    if len(digits) == 10:  # an ISBN-10 in a name: compare as ISBN-13
        from ingest.scoresheets import normalise_isbn

        return normalise_isbn(digits) or digits
    return digits


def _canonical_first(paths: list[FileRecord]) -> list[FileRecord]:
    """Order copies of the same bytes: the original first (not in a copy/backup-looking
    place, then oldest, then shortest path)."""
    return sorted(paths, key=lambda r: (bool(_COPY_HINT.search(r.path)), r.mtime,
                                        len(r.path), r.path))


def chapter_offsets(text: str) -> list[int]:
    """Character offsets of chapter heading lines; [0] for a text without headings."""
    offsets = [m.start() for m in _CHAPTER_LINE.finditer(text)]
    return offsets or ([0] if text else [])


@dataclass(frozen=True)
class Assembled:
    """The rows one share gives each table, plus the rejected score rows."""

    files: pa.Table
    books: pa.Table
    texts: pa.Table
    scans: pa.Table
    scores: pa.Table
    score_rejects: list


def assemble(records: list[FileRecord], *, ingested_at: datetime,
             blob_uri=lambda key: key) -> Assembled:
    """Turn a share's file records into table rows (see the module docstring for the rules).

    Args:
        records: One record per file of the share.
        ingested_at: Timestamp recorded on every ``files`` row of this run.
        blob_uri: Maps a blob key to the URI stored in ``files.blob_uri``.
    """
    status: dict[str, tuple[str, str | None]] = {}
    # Copies are the same bytes filed for the same book; the same chapter filed in two
    # different books (an excerpt in two volumes) is needed by both and is no duplicate.
    by_sha: dict[tuple[str, str | None], list[FileRecord]] = defaultdict(list)
    for r in records:
        if r.symlink_to is None:
            by_sha[(r.sha256, r.book_id)].append(r)
    for copies in by_sha.values():
        first, *rest = _canonical_first(copies)
        for r in rest:
            status[r.path] = (DUPLICATE, f"same bytes as {first.path}")

    versions: dict[tuple[str, str], list[FileRecord]] = defaultdict(list)
    for r in records:
        if r.path in status:
            continue
        if r.kind == JUNK or (r.reason and r.kind in (EDITED, SCORES, SCAN)):
            status[r.path] = (QUARANTINED, r.reason)
        elif r.kind == METADATA:
            status[r.path] = (OK, r.reason)
        elif r.kind == EDITED:
            layout, key = _version_key(r)
            versions[(r.book_id, f"{layout}:{key}")].append(r)

    books, texts = [], []
    by_book: dict[str, list[Version]] = defaultdict(list)
    for (book_id, lk), recs in versions.items():
        layout, key = lk.split(":", 1)
        ordered = sorted(recs, key=_reading_order)
        by_book[book_id].append(Version(book_id, key, layout, tuple(ordered)))
    for book_id, vs in sorted(by_book.items()):
        vs.sort(key=lambda v: (v.mtime, v.key), reverse=True)
        current, older = vs[0], vs[1:]
        for v in older:
            for r in v.records:
                status[r.path] = (SUPERSEDED, f"older version of {book_id}; current is "
                                  f"{current.key} (modified {current.mtime:%Y-%m-%d %H:%M})")
        for r in current.records:
            status[r.path] = (OK, None)
        text = "\n\n".join(r.text.strip() for r in current.records if r.text and r.text.strip())
        title = next((r.title for v in vs for r in v.records if r.title), None)
        author = next((r.author for v in vs for r in v.records if r.author), None)
        offsets = chapter_offsets(text)
        sources = [r.path for r in current.records]
        books.append({
            "book_id": book_id, "title": title, "author": author,
            "n_chapters": len(offsets), "n_chars": len(text), "n_words": len(text.split()),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "sources": sources,
            "updated_at": ingested_at,
        })
        texts.append({
            "book_id": book_id, "variant": "edited", "text": text, "n_chars": len(text),
            "chapter_offsets": offsets, "derived_from": current.key, "created_at": ingested_at,
        })

    scans = _scans(records, status, ingested_at)
    score_tables, rejects = [], []
    for r in records:
        if r.kind == SCORES and "scores" in r.extra and r.path not in status:
            score_tables.append(r.extra["scores"])
            rejects.extend(r.extra["rejected"])
            status[r.path] = (OK, None)
    files = []
    for r in records:
        st, reason = status.get(r.path, (OK, None))
        files.append({
            "path": r.path, "size": r.size, "mtime": r.mtime, "sha256": r.sha256,
            "kind": r.kind, "format": r.format, "encoding": r.encoding, "book_id": r.book_id,
            "status": st, "reason": reason, "ingested_at": ingested_at,
            "blob_uri": blob_uri(r.blob_key) if r.blob_key else None,
        })

    def table(name: str, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=TABLES[name].schema)

    scores_schema = TABLES["scores"].schema
    scores = (pa.concat_tables([t.cast(scores_schema) for t in score_tables])
              if score_tables else scores_schema.empty_table())
    return Assembled(table("files", files), table("books", books), table("texts", texts),
                     scans, scores, rejects)


def _scans(records: list[FileRecord], status: dict, ingested_at: datetime) -> pa.Table:
    """One scan per image-only PDF, one per folder of page images."""
    groups: dict[str, list[FileRecord]] = defaultdict(list)
    for r in records:
        if r.kind != SCAN or r.path in status:
            continue
        key = r.path if r.format == "pdf" else PurePosixPath(r.path).parent.as_posix()
        groups[key].append(r)
    rows = []
    for key, recs in sorted(groups.items()):
        for r in recs:
            status[r.path] = (OK, None)
        book_id = next((r.book_id for r in recs if r.book_id), None)
        rows.append({
            "scan_id": "scan-" + hashlib.sha256(key.encode()).hexdigest()[:12],
            "book_id": book_id, "source": key,
            "n_pages": sum(r.n_pages or 1 for r in recs), "pages_done": 0, "status": "new",
            "updated_at": ingested_at,
        })
    return pa.Table.from_pylist(rows, schema=TABLES["scans"].schema)
