"""Assemble books from the inventory: chapter folders, part files, whole files, versions.

Pure: :func:`assemble` takes the :class:`~ingest.share.FileRecord` list of one share and
returns the rows of ``files``, ``books``, ``texts``, ``scans`` and ``scores``. Rules:

* a book's *versions* are its whole files, its chapter folders (``00_title.txt``,
  ``ch1.txt`` ... in natural order) and its part sets (``_part1``, ``-2``, `` (3)``);
* versions are compared as wholes: a version with the same bytes, file for file, as
  another version of the same book (``Backup/Copy of ...``) is a ``duplicate`` of it, and
  so is a second path with the same bytes inside one version; a chapter that two
  *different* versions share (the unchanged chapters of a new edition) is no duplicate;
* of the distinct versions, the most recently modified is current and keeps all its
  files; the others are ``superseded``;
* a scan (a PDF, an image named for its book, or a folder of page images) with the same
  bytes as another scan of the same book is a ``duplicate``, and so is a copy-named page
  (``Copy of page_0001.jpg``) with the bytes of another page of its scan; identical pages
  with page names (two blank pages) are both kept; a score sheet with the same bytes as another is a
  ``duplicate``;
* a file that cannot be used is ``quarantined`` with its reason, never dropped.

Only the books named in ``dirty`` (all when None) get ``books``/``texts`` rows: a re-run
assembles just the books whose files changed, and needs the text of only those files.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa

from catalog import TABLES, rules
from ingest.share import EDITED, JUNK, METADATA, SCAN, SCORES, FileRecord, scan_key

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


def scan_page_order(path: str) -> list:
    """Where a file stands among the pages of its scan: natural order of the file names
    (``page_2`` before ``page_10``). The one rule for ingest (a scan's content digest) and
    OCR and the review page (which file is page n)."""
    return natural_key(posixpath.basename(path))


def _split(path: str) -> tuple[str, str, str]:
    """``(folder, name, stem)`` of a share path: posixpath string work, as PurePosixPath
    would give (this runs for every file of a 250k-file share on every re-run)."""
    folder, name = posixpath.split(path)
    stem, _ = posixpath.splitext(name)
    return folder or ".", name, stem


def _version_key(rec: FileRecord) -> tuple[str, str]:
    """(layout, key) of the version a readable edited file belongs to."""
    folder, name, stem = _split(rec.path)
    in_name = rec.book_id and rec.book_id in _digits(name)
    if not in_name:
        return "folder", folder
    m = _PART.match(stem)
    if m and rec.book_id in _digits(m.group("stem")) and len(_digits(m.group("stem"))) <= 13:
        return "parts", f"{folder}/{m.group('stem').strip()}"
    return "file", rec.path


def _reading_order(rec: FileRecord) -> list:
    """Part number for part files (``-3`` after `` (2)``), natural name order otherwise."""
    _, name, stem = _split(rec.path)
    m = _PART.match(stem)
    if m and rec.book_id in _digits(m.group("stem")):
        return [int(m.group("n"))]
    return natural_key(name)


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
    """The rows one share gives each table, plus the rejected score rows.

    ``books``/``texts`` hold the assembled books only (the ``dirty`` ones).
    """

    files: pa.Table
    books: pa.Table
    texts: pa.Table
    scans: pa.Table
    scores: pa.Table
    score_rejects: list


def _signature(v: Version) -> tuple[str, ...]:
    return tuple(r.sha256 for r in v.records)


def book_versions(records: list[FileRecord], status: dict[str, tuple[str, str | None]]
                  ) -> dict[str, list[Version]]:
    """Each book's distinct versions, newest first; copies are marked in ``status``.

    A readable edited file belongs to one version (see :func:`_version_key`). A second path
    with the same bytes inside a version, and a whole version with the same bytes as another
    version of the book, are ``duplicate``s of the original (not in a copy-looking place,
    then oldest, then shortest path).
    """
    groups: dict[tuple[str, str], list[FileRecord]] = defaultdict(list)
    for r in records:
        if r.kind == EDITED and r.reason is None and r.path not in status and r.book_id:
            layout, key = _version_key(r)
            groups[(r.book_id, f"{layout}:{key}")].append(r)
    by_book: dict[str, list[Version]] = defaultdict(list)
    for (book_id, lk), recs in groups.items():
        layout, key = lk.split(":", 1)
        kept: dict[str, FileRecord] = {}
        for r in _canonical_first(recs):
            if r.sha256 in kept:
                status[r.path] = (DUPLICATE, f"same bytes as {kept[r.sha256].path}")
            else:
                kept[r.sha256] = r
        ordered = sorted(kept.values(), key=_reading_order)
        by_book[book_id].append(Version(book_id, key, layout, tuple(ordered)))
    out: dict[str, list[Version]] = {}
    for book_id, vs in by_book.items():
        distinct: dict[tuple[str, ...], Version] = {}
        for v in sorted(vs, key=lambda v: (bool(_COPY_HINT.search(v.key)), v.mtime,
                                           len(v.key), v.key)):
            first = distinct.get(_signature(v))
            if first is None:
                distinct[_signature(v)] = v
                continue
            for r, orig in zip(v.records, first.records, strict=True):
                status[r.path] = (DUPLICATE, f"same bytes as {orig.path}")
        out[book_id] = sorted(distinct.values(), key=lambda v: (v.mtime, v.key), reverse=True)
    return out


def current_version_paths(records: list[FileRecord]) -> set[str]:
    """Paths of the files that make the current version of each book among ``records``
    (the records of some books, e.g. the dirty ones): the only files whose text assembly
    needs. Decided from metadata alone (paths, bytes' sha256, modification times)."""
    status: dict[str, tuple[str, str | None]] = {}
    return {r.path for vs in book_versions(records, status).values() for r in vs[0].records}


def assemble(records: list[FileRecord], *, ingested_at: datetime,
             blob_uri=lambda key: key, dirty: set[str] | None = None,
             known: dict[str, tuple[str, str | None]] | None = None) -> Assembled:
    """Turn a share's file records into table rows (see the module docstring for the rules).

    Args:
        records: One record per file of the share. Edited files of the ``dirty`` books
            need their ``text``; the others need only their metadata.
        ingested_at: Timestamp recorded on every ``files`` row of this run.
        blob_uri: Maps a blob key to the URI stored in ``files.blob_uri``.
        dirty: The books to assemble (``books``/``texts`` rows); all when None.
        known: ``path -> (status, reason)`` of the last run, used for the edited files of
            books not in ``dirty`` (none of their files changed, so neither did their
            statuses: a re-run of a big share skips working out their versions).
    """
    status: dict[str, tuple[str, str | None]] = {}
    for r in records:
        if r.kind == JUNK or (r.reason and r.kind in (EDITED, SCORES, SCAN)):
            status[r.path] = (QUARANTINED, r.reason)
        elif r.kind == METADATA:
            status[r.path] = (OK, r.reason)

    if dirty is not None and known:
        for r in records:
            if r.kind == EDITED and r.book_id not in dirty and r.path not in status:
                was = known.get(r.path)
                if was is not None:
                    status[r.path] = was
    books, texts = [], []
    versions = book_versions(records, status)
    for book_id, vs in sorted(versions.items()):
        current, older = vs[0], vs[1:]
        for v in older:
            for r in v.records:
                status[r.path] = (SUPERSEDED, f"older version of {book_id}; current is "
                                  f"{current.key} (modified {current.mtime:%Y-%m-%d %H:%M})")
        for r in current.records:
            status[r.path] = (OK, None)
        if dirty is not None and book_id not in dirty:
            continue
        missing = [r.path for r in current.records if r.text is None]
        if missing:
            raise ValueError(f"assemble: no text for {missing[:3]} of dirty book {book_id}")
        text = "\n\n".join(r.text.strip() for r in current.records if r.text.strip())
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
            "book_id": book_id, "variant": rules.EDITED, "text": text, "n_chars": len(text),
            "chapter_offsets": offsets, "derived_from": current.key, "created_at": ingested_at,
        })

    scans = _scans(records, status, ingested_at)
    score_tables, rejects = [], []
    sheets: dict[str, FileRecord] = {}
    for r in _canonical_first([r for r in records if r.kind == SCORES
                               and r.path not in status]):
        if r.sha256 in sheets:
            status[r.path] = (DUPLICATE, f"same bytes as {sheets[r.sha256].path}")
            continue
        sheets[r.sha256] = r
        status[r.path] = (OK, None)
        if "scores" in r.extra:  # not when the sheet was not read (unchanged on a re-run)
            score_tables.append(r.extra["scores"])
            rejects.extend(r.extra["rejected"])
    # built column by column: one dict per file costs more than the rest of a re-run
    fields = ("path", "size", "mtime", "sha256", "kind", "format", "encoding", "book_id")
    cols = {f: [getattr(r, f) for r in records] for f in fields}
    states = [status.get(r.path, (OK, None)) for r in records]
    cols["status"] = [st for st, _ in states]
    cols["reason"] = [why for _, why in states]
    cols["blob_uri"] = [blob_uri(r.blob_key) if r.blob_key else None for r in records]
    files_schema = TABLES["files"].schema
    cols["ingested_at"] = [ingested_at] * len(records)
    files_table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in files_schema},
                           schema=files_schema)

    def table(name: str, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=TABLES[name].schema)

    scores_schema = TABLES["scores"].schema
    scores = (pa.concat_tables([t.cast(scores_schema) for t in score_tables])
              if score_tables else scores_schema.empty_table())
    return Assembled(files_table, table("books", books), table("texts", texts),
                     scans, scores, rejects)


def scan_sha256(records: list[FileRecord]) -> str:
    """The content digest of a scan (``scans.sha256``): its file's sha256, or for a folder
    of page images the digest of their names and sha256s in reading order."""
    if len(records) == 1 and scan_key(records[0].path, records[0].format) == records[0].path:
        return records[0].sha256
    h = hashlib.sha256()
    for r in records:
        h.update(f"{PurePosixPath(r.path).name}\t{r.sha256}\n".encode())
    return h.hexdigest()


def _scans(records: list[FileRecord], status: dict, ingested_at: datetime) -> pa.Table:
    """One scan per PDF or book-named image, one per folder of page images; a scan with the
    same content as another scan of the same book is a duplicate of it."""
    groups: dict[str, list[FileRecord]] = defaultdict(list)
    for r in records:
        if r.kind != SCAN or r.path in status:
            continue
        groups[scan_key(r.path, r.format)].append(r)
    found = []
    for key, recs in groups.items():
        # a copy-named page with the bytes of another page ("Copy of page_0001.jpg") is a
        # duplicate; identical pages with page names (two blank pages) are both pages
        first: dict[str, FileRecord] = {}
        for r in _canonical_first(recs):
            if r.sha256 in first and _COPY_HINT.search(PurePosixPath(r.path).name):
                status[r.path] = (DUPLICATE, f"same bytes as {first[r.sha256].path}")
            else:
                first.setdefault(r.sha256, r)
        recs = [r for r in recs if r.path not in status]
        recs.sort(key=lambda r: scan_page_order(r.path))
        book_id = next((r.book_id for r in recs if r.book_id), None)
        found.append((key, recs, book_id, scan_sha256(recs)))
    rows, seen = [], {}
    order = sorted(found, key=lambda f: (bool(_COPY_HINT.search(f[0])),
                                         min(r.mtime for r in f[1]), len(f[0]), f[0]))
    for key, recs, book_id, digest in order:
        first = seen.get((digest, book_id))
        if first is not None:
            for r in recs:
                status[r.path] = (DUPLICATE, f"same scan as {first}")
            continue
        seen[(digest, book_id)] = key
        for r in recs:
            status[r.path] = (OK, None)
        rows.append({
            "scan_id": "scan-" + hashlib.sha256(key.encode()).hexdigest()[:12],
            "book_id": book_id, "source": key,
            "n_pages": sum(r.n_pages or 1 for r in recs), "pages_done": 0, "status": "new",
            "updated_at": ingested_at, "sha256": digest,
        })
    rows.sort(key=lambda r: r["source"])
    return pa.Table.from_pylist(rows, schema=TABLES["scans"].schema)
