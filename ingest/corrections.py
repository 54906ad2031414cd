"""Editors' corrections of OCR text, page by page, and promotion of a corrected book.

Nothing here overwrites OCR output: ``ocr_pages`` and the ``texts`` row variant ``ocr``
stay as OCR wrote them. A correction is a row appended to ``corrections`` (the editor's
text of one whole page, who, when, and the scan content it was made for); the history is
kept and the newest correction of a page (``scan_id, scan_sha256, page_no``) wins.

Every save then (re)writes the book's ``texts`` row variant ``corrected``: the scan's pages
in order, each the newest correction where there is one, else its OCR text, joined exactly
as OCR joins pages (:func:`ingest.ocr.assemble_ocr_text`: one rule). Only pages and
corrections of the scan's current content (``scan_sha256 == scans.sha256``) count: after a
rescan the old corrections are history, and the ``corrected`` row is of the old content
until an editor saves a page of the new one. The row is written only when every page has a
text (OCR or a correction). Its commit records lineage ``correct`` with the pinned versions
of ``scans``, ``ocr_pages``, ``corrections`` and ``texts`` and the editor.

Concurrency: corrections are appends, so editors saving at once never lose one, and an OCR
run (which appends ``ocr_pages`` and writes only the ``ocr`` variant) never touches them.
The ``corrected`` text is recomputed from all corrections at save time; after writing it,
the writer recomputes from the newest table versions and writes again if they give another
text (another editor's correction landed meanwhile), so the last writer's row holds every
correction.

Promotion: when every page of a scan's current content is corrected, :func:`promote` (the
scan view's button, ``POST /api/promote``, ``corpus promote SCAN --by NAME``) writes the
book's ``texts`` row variant ``edited`` with the corrected text (lineage ``promote`` with
the editor) and records the action as a row of ``promotions`` (who, when, the scan content,
the corrections it is made of, the text's sha256). While pages are uncorrected it refuses.
The ``books`` row is not touched (it describes the share's edited text; ingest owns it).

Ingest and promoted books: ingest owns the ``edited`` rows of the books its share holds. A
promoted book that also has an edited text in the share gets the share's text back when
ingest next rebuilds that book (its files changed, or ``corpus ingest --full``); a promoted
book whose files are in the share but which has no edited text there may lose its
``edited`` row on such a rebuild. The promotion stays in ``promotions`` and the corrections
in ``corrections``: ``corpus promote`` again restores it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.compute as pc

from catalog import ConfigError, CorpusError, Lakehouse, Lineage, TableNotFoundError
from catalog.rules import CORRECTED, EDITED
from ingest.ocr import assemble_ocr_text

MAX_PAGE_CHARS = 200_000  # one page; far above any real page, well below a whole book
_RECOMPUTE_ATTEMPTS = 8


class CorrectionError(CorpusError):
    """A correction or promotion that cannot be made (unknown scan or page, pages left)."""


# ---- pure -----------------------------------------------------------------------------------

def current_ocr_pages(pages: Iterable[dict], scan: dict) -> dict[int, dict]:
    """The OCR pages of ``scan``'s current content, by page number."""
    return {p["page_no"]: p for p in pages
            if p["scan_id"] == scan["scan_id"] and p["scan_sha256"] == scan["sha256"]}


def latest_corrections(corrections: Iterable[dict], scan: dict) -> dict[int, dict]:
    """The newest correction of every page of ``scan``'s current content, by page number
    (ties in ``created_at`` broken by ``correction_id``, so every reader picks the same)."""
    out: dict[int, dict] = {}
    for c in corrections:
        if c["scan_id"] != scan["scan_id"] or c["scan_sha256"] != scan["sha256"]:
            continue
        old = out.get(c["page_no"])
        if old is None or (c["created_at"], c["correction_id"]) > (old["created_at"],
                                                                   old["correction_id"]):
            out[c["page_no"]] = c
    return out


@dataclass(frozen=True)
class CorrectedText:
    """A scan's text with its corrections applied.

    Attributes:
        text: Pages in order, each the newest correction or else the OCR text, joined as
            OCR joins pages; ``""`` when ``missing`` is not empty.
        page_offsets: Start of every page in ``text``.
        corrected: Page numbers with a correction.
        uncorrected: Page numbers with OCR text only.
        missing: Page numbers with neither (not OCR'd yet, not corrected).
        correction_ids: The corrections used, in page order.
    """

    text: str
    page_offsets: tuple[int, ...]
    corrected: tuple[int, ...]
    uncorrected: tuple[int, ...]
    missing: tuple[int, ...]
    correction_ids: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every page has a text."""
        return not self.missing

    @property
    def fully_corrected(self) -> bool:
        """Every page is corrected (the scan can be promoted)."""
        return not self.missing and not self.uncorrected


def assemble_corrected(scan: dict, ocr_pages: Iterable[dict],
                       corrections: Iterable[dict]) -> CorrectedText:
    """The corrected text of ``scan`` (pure).

    Args:
        scan: The ``scans`` row (``scan_id``, ``sha256``, ``n_pages``).
        ocr_pages: ``ocr_pages`` rows (any scans, any content: filtered here).
        corrections: ``corrections`` rows (likewise).
    """
    ocr = current_ocr_pages(ocr_pages, scan)
    fixes = latest_corrections(corrections, scan)
    n_pages = max([scan.get("n_pages") or 0, *ocr, *fixes])
    pages, corrected, uncorrected, missing, ids = [], [], [], [], []
    for n in range(1, n_pages + 1):
        if n in fixes:
            pages.append({"page_no": n, "text": fixes[n]["text"]})
            corrected.append(n)
            ids.append(fixes[n]["correction_id"])
        elif n in ocr:
            pages.append({"page_no": n, "text": ocr[n]["text"]})
            uncorrected.append(n)
        else:
            missing.append(n)
    text, offsets = assemble_ocr_text(pages) if not missing else ("", [])
    return CorrectedText(text=text, page_offsets=tuple(offsets), corrected=tuple(corrected),
                         uncorrected=tuple(uncorrected), missing=tuple(missing),
                         correction_ids=tuple(ids))


def derived_from(scan_id: str, correction_ids: Sequence[str]) -> str:
    """The ``derived_from`` of a corrected (or promoted) text: the scan and its corrections."""
    return f"scan:{scan_id} corrections:{','.join(correction_ids)}"


def _pages_list(pages: Sequence[int]) -> str:
    return ", ".join(map(str, pages[:20])) + (" ..." if len(pages) > 20 else "")


# ---- reading and writing ----------------------------------------------------------------------

def _read_or_empty(lakehouse: Lakehouse, name: str, scan_id: str, version: int | None
                   ) -> list[dict]:
    if version is None:
        return []
    return lakehouse.read(name, version=version,
                          filter=pc.field("scan_id") == scan_id).to_pylist()


def _pin(lakehouse: Lakehouse, *names: str) -> dict[str, int]:
    return {n: lakehouse.version(n) for n in names if lakehouse.exists(n)}


def _scan(lakehouse: Lakehouse, scan_id: str, version: int | None = None) -> dict:
    try:
        rows = lakehouse.read("scans", version=version,
                              filter=pc.field("scan_id") == scan_id).to_pylist()
    except TableNotFoundError:
        rows = []
    if not rows:
        raise CorrectionError(f"No scan {scan_id!r}. List scans with `corpus scans`.")
    return rows[0]


def read_corrected(lakehouse: Lakehouse, scan_id: str) -> tuple[dict, CorrectedText,
                                                                 dict[str, int]]:
    """The scan row, its corrected text and the table versions they were read at."""
    pins = _pin(lakehouse, "scans", "ocr_pages", "corrections")
    scan = _scan(lakehouse, scan_id, pins.get("scans"))
    result = assemble_corrected(
        scan, _read_or_empty(lakehouse, "ocr_pages", scan_id, pins.get("ocr_pages")),
        _read_or_empty(lakehouse, "corrections", scan_id, pins.get("corrections")))
    return scan, result, pins


def page_corrections(lakehouse: Lakehouse, scan: dict) -> dict[int, dict]:
    """The newest correction of every page of ``scan``'s current content (the scan view)."""
    try:
        rows = lakehouse.read("corrections",
                              filter=pc.field("scan_id") == scan["scan_id"]).to_pylist()
    except TableNotFoundError:
        return {}
    return latest_corrections(rows, scan)


@dataclass(frozen=True)
class SavedCorrection:
    """What :func:`save_correction` did."""

    correction_id: str
    page_no: int
    editor: str
    created_at: datetime
    written: bool  # the texts row variant corrected was (re)written
    note: str = ""  # why it was not, when it was not


def _texts_row(scan: dict, result: CorrectedText, variant: str, now: datetime) -> dict:
    return {"book_id": scan["book_id"] or scan["scan_id"], "variant": variant,
            "text": result.text, "n_chars": len(result.text),
            "page_offsets": list(result.page_offsets),
            "derived_from": derived_from(scan["scan_id"], result.correction_ids),
            "created_at": now}


def write_corrected(lakehouse: Lakehouse, scan_id: str, *, editor: str) -> CorrectedText:
    """(Re)write the book's ``texts`` row variant ``corrected`` from every correction.

    Recomputed and written again while the newest table versions give another text than
    the one written (a concurrent save), so the last writer's row holds every correction.
    Nothing is written while a page has neither OCR text nor a correction.
    """
    written: tuple | None = None
    for _ in range(_RECOMPUTE_ATTEMPTS):
        scan, result, pins = read_corrected(lakehouse, scan_id)
        if not result.complete or (result.text, result.correction_ids) == written:
            return result
        pins.update(_pin(lakehouse, "texts"))
        lakehouse.merge("texts", [_texts_row(scan, result, CORRECTED, datetime.now(UTC))],
                        lineage=Lineage(operation="correct", inputs=pins,
                                        config={"editor": editor, "scan_id": scan_id,
                                                "variant": CORRECTED}))
        written = (result.text, result.correction_ids)
    raise CorrectionError(f"The corrected text of scan {scan_id} changed {_RECOMPUTE_ATTEMPTS}"
                          " times while it was written (busy editors); the corrections are "
                          "saved: save a page again to rewrite it.")


def save_correction(lakehouse: Lakehouse, scan_id: str, page_no: int, text: str, *,
                    editor: str) -> SavedCorrection:
    """Record an editor's text of one page and rewrite the book's ``corrected`` text.

    Args:
        lakehouse: The catalog.
        scan_id: The scan.
        page_no: The page (1-based).
        text: The whole page as the editor corrected it.
        editor: Who corrected it.

    Raises:
        ConfigError: No editor name, or a text that is not a string or too long.
        CorrectionError: Unknown scan, or no such page.
    """
    editor = (editor or "").strip()
    if not editor:
        raise ConfigError("A correction needs the editor's name.")
    if not isinstance(text, str):
        raise ConfigError(f"The page text must be a string, got {type(text).__name__}.")
    if len(text) > MAX_PAGE_CHARS:
        raise ConfigError(f"A page of {len(text)} characters is more than a page "
                          f"(at most {MAX_PAGE_CHARS}); correct one page at a time.")
    if isinstance(page_no, bool) or not isinstance(page_no, int):
        raise ConfigError(f"page_no must be a page number, got {page_no!r}.")
    pins = _pin(lakehouse, "scans", "ocr_pages")
    scan = _scan(lakehouse, scan_id, pins.get("scans"))
    if not 1 <= page_no <= (scan["n_pages"] or 0):
        raise CorrectionError(f"Scan {scan_id} has no page {page_no} (it has "
                              f"{scan['n_pages'] or 0}).")
    ocr = current_ocr_pages(_read_or_empty(lakehouse, "ocr_pages", scan_id,
                                           pins.get("ocr_pages")), scan).get(page_no)
    now = datetime.now(UTC)
    cid = uuid.uuid4().hex[:16]
    lakehouse.append("corrections", [{
        "correction_id": cid, "scan_id": scan_id, "scan_sha256": scan["sha256"],
        "page_no": page_no, "book_id": scan["book_id"], "text": text, "editor": editor,
        "created_at": now,
        "ocr_sha256": hashlib.sha256((ocr["text"] or "").encode()).hexdigest() if ocr else None,
    }], lineage=Lineage(operation="correct", inputs=pins,
                        config={"editor": editor, "scan_id": scan_id, "page_no": page_no}))
    result = write_corrected(lakehouse, scan_id, editor=editor)
    note = "" if result.complete else (
        f"the corrected text is written once every page has a text; page(s) "
        f"{_pages_list(result.missing)} are not OCR'd or corrected yet")
    return SavedCorrection(correction_id=cid, page_no=page_no, editor=editor, created_at=now,
                           written=result.complete, note=note)


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did."""

    promotion_id: str
    scan_id: str
    book_id: str
    editor: str
    n_pages: int
    n_chars: int


def promote(lakehouse: Lakehouse, scan_id: str, *, editor: str) -> Promotion:
    """Make a fully corrected scan's text the book's ``edited`` text, and record who did it.

    Raises:
        ConfigError: No editor name.
        CorrectionError: Unknown scan, a scan not filed under a book, or pages not
            corrected yet (named in the message).
    """
    editor = (editor or "").strip()
    if not editor:
        raise ConfigError("A promotion needs the editor's name (--by NAME).")
    scan, result, pins = read_corrected(lakehouse, scan_id)
    if not scan["book_id"]:
        raise CorrectionError(f"Scan {scan_id} is not filed under a book (no ISBN): an "
                              "edited text needs one. Flag it wrong_book instead.")
    if not result.fully_corrected:
        left = result.uncorrected + result.missing
        raise CorrectionError(
            f"Cannot promote scan {scan_id}: {len(left)} of {len(left) + len(result.corrected)}"
            f" page(s) are not corrected yet ({_pages_list(sorted(left))}). Correct and save "
            "every page in the scan view first.")
    pins.update(_pin(lakehouse, "texts"))
    now = datetime.now(UTC)
    lineage = Lineage(operation="promote", inputs=pins,
                      config={"editor": editor, "scan_id": scan_id, "variant": EDITED,
                              "from": CORRECTED})
    lakehouse.merge("texts", [_texts_row(scan, result, EDITED, now)], lineage=lineage)
    pid = uuid.uuid4().hex[:16]
    lakehouse.append("promotions", [{
        "promotion_id": pid, "scan_id": scan_id, "scan_sha256": scan["sha256"],
        "book_id": scan["book_id"], "editor": editor, "created_at": now,
        "n_pages": len(result.corrected),
        "text_sha256": hashlib.sha256(result.text.encode()).hexdigest(),
        "correction_ids": list(result.correction_ids),
    }], lineage=lineage)
    return Promotion(promotion_id=pid, scan_id=scan_id, book_id=scan["book_id"], editor=editor,
                     n_pages=len(result.corrected), n_chars=len(result.text))
