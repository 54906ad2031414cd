"""OCR of raw scans: PyMuPDF renders, Tesseract recognises, every page committed as it ends.

Pages come from the object store (the bytes ingest kept), not from the share, so scans can
be OCR'd after the share is retired. A page of an image-only PDF is rendered at the
resolution of its embedded image (no blind upsampling); a page with a real text layer is
read, not OCR'd; a page image is recognised as it is. Pages fan out over a process pool
with ``OMP_THREAD_LIMIT=1`` (Tesseract's own threads fight a pool). Each finished page is
one ``ocr_pages`` commit, so a killed run loses only the pages in flight and a rerun does
only what is missing. A scan that cannot be read is marked ``failed`` with the reason.

Scans are versioned by content (``scans.sha256``, set by ingest): every page row records
the content it was read from (``ocr_pages.scan_sha256``). A rescan saved over the old one
goes back to ``new``; its old pages stay as history but only pages of the current content
count as done and make its text. Every frame of a multi-page TIFF is a page.

A finished run updates only the ``scans`` columns OCR owns; its ``status`` follows the rule
of :mod:`ingest.scan_status`, so an editor's flag set meanwhile is never reverted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from catalog import (
    TABLES,
    ConfigError,
    CorpusError,
    Lakehouse,
    LakehouseConfig,
    Lineage,
    TableNotFoundError,
    key_from_uri,
)
from catalog.log import progress
from catalog.rules import OCR, PAGE_SEPARATOR
from catalog.storage import ObjectStore, cached_store
from catalog.workers import process_pool
from ingest.scan_status import ocr_state, status_sql

log = logging.getLogger(__name__)

TEXT_LAYER_MIN_CHARS = 40   # fewer characters than this on a page is not a real text layer
MAX_DPI = 600               # never render above this, whatever a PDF claims
DEFAULT_DPI = 300           # for a page without an embedded image to take the resolution from
FOOT_FRACTION = 0.1         # the bottom strip of a page read again for a dropped page number
FOOT_MAX_CHARS = 12         # a foot line longer than this is body text, not a page number
FOOT_MIN_CONFIDENCE = 40    # words Tesseract is less sure of are specks, not page numbers


class OcrError(CorpusError):
    """A page or scan could not be OCR'd (unreadable image, Tesseract failure)."""


@dataclass(frozen=True)
class OcrConfig:
    """Options of ``corpus ocr``.

    Attributes:
        lang: Tesseract language(s), e.g. ``eng`` or ``eng+deu``.
        page_foot: Read each page's bottom strip again for a page number that layout
            analysis dropped (~20% more Tesseract time per page).
        workers: Processes recognising pages in parallel.
        executor: ``local`` (a process pool) or ``ray``.
        ray_address: A Ray cluster address; local Ray when None.
    """

    lang: str = "eng"
    page_foot: bool = True
    workers: int = 2
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}.")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"--executor must be local or ray, got {self.executor!r}.")
        if not self.lang or not all(p.isalnum() or p == "_" for p in self.lang.split("+")):
            raise ConfigError(f"--lang must look like eng or eng+deu, got {self.lang!r}.")


@dataclass(frozen=True)
class PageTask:
    """One page to recognise: where its bytes are and how to get the image out."""

    scan_id: str
    page_no: int          # 1-based, in reading order
    blob_key: str         # the PDF or the page image in the object store
    pdf_page: int | None  # 0-based page of the PDF, None for an image file
    frame: int = 0        # 0-based frame of an image file (pages of a multi-page TIFF)
    scan_sha256: str | None = None  # the scan content the page belongs to


# ---- the per-page work (runs in worker processes) --------------------------------------

@functools.lru_cache(maxsize=4)
def _blob(config: LakehouseConfig, key: str) -> bytes:
    # A worker renders many pages of the same PDF: fetch it once.
    return cached_store(config).get_bytes(key)


@functools.cache
def tesseract_version() -> str:
    """``tesseract 5.3.0`` or similar, recorded with every page (asked once per process:
    it runs ``tesseract --version``)."""
    import pytesseract

    return f"tesseract {pytesseract.get_tesseract_version()}"


def render_page(data: bytes, pdf_page: int | None, frame: int = 0):
    """The page image for Tesseract and its dpi, or the page's text when it has a text layer.

    ``pdf_page`` is the 0-based page of a PDF; for an image file (None) ``frame`` is the
    0-based frame (page of a multi-page TIFF).

    Returns ``(image, dpi, text)``: ``image`` is a grayscale PIL image, or the encoded bytes
    and file extension ``(bytes, ext)`` of a scanner's image that *is* the page (one JPEG or
    PNG drawn over the whole page, unrotated): those pixels go to Tesseract as they are,
    without rasterising, resampling or re-encoding them.
    """
    import io

    import pymupdf
    from PIL import Image

    if pdf_page is None:
        img = Image.open(io.BytesIO(data))
        if frame:
            img.seek(frame)
        img.load()
        dpi = img.info.get("dpi", (0, 0))[0] or 0
        return img.convert("L"), round(dpi) or None, None
    with pymupdf.open(stream=data, filetype="pdf") as pdf:
        page = pdf[pdf_page]
        text = page.get_text()
        if len(text.strip()) >= TEXT_LAYER_MIN_CHARS:
            return None, None, text
        dpi = DEFAULT_DPI
        images = page.get_images(full=True)
        if images:
            # The resolution the scanner delivered: pixels of the largest image over the
            # width it is drawn at. Rendering higher only invents pixels.
            xref, width = max(((im[0], im[2]) for im in images), key=lambda t: t[1])
            rects = page.get_image_rects(xref)
            drawn = rects[0].width if rects else page.rect.width
            dpi = min(MAX_DPI, max(72, round(width / (drawn / 72))))
            whole = (len(images) == 1 and len(rects) == 1 and page.rotation == 0
                     and abs(rects[0].width - page.rect.width) < 1
                     and abs(rects[0].height - page.rect.height) < 1)
            if whole:
                raw = pdf.extract_image(xref)
                if raw.get("ext") in ("jpeg", "jpg", "png"):
                    return (raw["image"], raw["ext"]), dpi, None
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
        return img, dpi, None


def words_to_text(data: dict) -> tuple[str, list[list]]:
    """Tesseract's word boxes as text (lines; a blank line between blocks) and a word list
    ``[word, confidence, left, top, width, height]``."""
    lines: dict[tuple[int, int, int], list[str]] = {}
    words = []
    for i, word in enumerate(data["text"]):
        if not word or not word.strip():
            continue
        conf = float(data["conf"][i])
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(word)
        words.append([word, round(conf, 1), data["left"][i], data["top"][i],
                      data["width"][i], data["height"][i]])
    out, last_block = [], None
    for (block, par, _), ws in lines.items():
        if last_block is not None and (block, par) != last_block:
            out.append("")
        out.append(" ".join(ws))
        last_block = (block, par)
    return "\n".join(out), words


def ocr_page(config: LakehouseConfig, task: PageTask, lang: str, page_foot: bool = True) -> dict:
    """Recognise one page; returns its ``ocr_pages`` row (or an ``error`` key)."""
    base = {"scan_id": task.scan_id, "page_no": task.page_no,
            "scan_sha256": task.scan_sha256}
    return {**base, **recognise_page(_blob(config, task.blob_key), task.pdf_page, lang=lang,
                                     page_no=task.page_no, page_foot=page_foot,
                                     frame=task.frame)}


def recognise_page(data: bytes, pdf_page: int | None, *, lang: str, page_no: int,
                   page_foot: bool = True, frame: int = 0) -> dict:
    """Text of one page of a PDF (``pdf_page``, 0-based) or of an image file (None; its
    ``frame``, 0-based, for a multi-page TIFF).

    Returns the page's ``text, words, mean_confidence, dpi, engine, seconds``, or an
    ``error`` key with the reason (never raises for a bad page).
    """
    import pytesseract

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    t0 = time.perf_counter()
    try:
        img, dpi, text = render_page(data, pdf_page, frame)
    except Exception as e:  # PIL/PyMuPDF raise many types for broken images
        return {"error": f"page {page_no}: cannot read the image ({e})"}
    if text is not None:
        return {"text": text.strip(), "mean_confidence": 100.0, "words": "[]",
                "dpi": None, "engine": "text-layer", "seconds": time.perf_counter() - t0}
    config = "--psm 3" + (f" --dpi {dpi}" if dpi else "")
    try:
        if isinstance(img, tuple):  # the scanner's own encoded image: hand over the file
            encoded, ext = img
            with tempfile.NamedTemporaryFile(suffix=f".{ext}") as f:
                f.write(encoded)
                f.flush()
                data = pytesseract.image_to_data(
                    f.name, lang=lang, config=config, output_type=pytesseract.Output.DICT)
        else:
            # Handed over as PPM/PGM (uncompressed; PNG encoding cost ~15% of a page) with
            # the resolution passed explicitly, which the PGM header cannot carry.
            img.format = "PPM"
            data = pytesseract.image_to_data(
                img, lang=lang, config=config, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractError as e:
        return {"error": f"page {page_no}: tesseract failed: {e}"}
    page_text, words = words_to_text(data)
    try:
        if page_foot:
            page_text, words = _with_page_foot(img, dpi, lang, page_text, words)
    except (pytesseract.TesseractError, OSError) as e:  # the foot is a bonus, never fatal
        log.debug("page %d: foot line not read: %s", page_no, e)
    confs = [w[1] for w in words if w[1] >= 0]
    return {"text": page_text, "words": json.dumps(words),
            "mean_confidence": statistics.fmean(confs) if confs else 0.0, "dpi": dpi,
            "engine": tesseract_version(), "seconds": time.perf_counter() - t0}


def _with_page_foot(img, dpi: int | None, lang: str, page_text: str,
                    words: list[list]) -> tuple[str, list[list]]:
    """The page's text with its foot line (a page number) when full-page layout analysis
    dropped it.

    Tesseract's page segmentation (``--psm 3``) discards a lone small line far below the
    text block as noise, so printed page numbers vanish from the OCR text although they are
    on the page (and in every real OCR output an alignment must explain). The bottom strip
    of the page is read again as one uniform block (``--psm 6``); a short line found there
    that the page text does not already end with is appended, words and boxes included.
    """
    import io

    import pytesseract
    from PIL import Image

    if isinstance(img, tuple):
        img = Image.open(io.BytesIO(img[0]))
        img.load()
        img = img.convert("L")
    width, height = img.size
    top = int(height * (1 - FOOT_FRACTION))
    strip = img.crop((0, top, width, height))
    strip.format = "PPM"
    data = pytesseract.image_to_data(
        strip, lang=lang, config="--psm 6" + (f" --dpi {dpi}" if dpi else ""),
        output_type=pytesseract.Output.DICT)
    lines: dict[tuple[int, int, int], list[list]] = {}
    for i, w in enumerate(data["text"]):
        if w and w.strip() and float(data["conf"][i]) >= FOOT_MIN_CONFIDENCE:
            key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
            lines.setdefault(key, []).append(
                [w, round(float(data["conf"][i]), 1), data["left"][i], data["top"][i] + top,
                 data["width"][i], data["height"][i]])
    if not lines:
        return page_text, words
    # the lowest line of the strip: the strip also catches the body's last line above it
    foot = max(lines.values(), key=lambda ws: min(w[3] for w in ws))
    line = " ".join(w[0] for w in foot)
    compact = "".join(line.split())
    if not compact or len(compact) > FOOT_MAX_CHARS:
        return page_text, words  # not a page-number line (or nothing there)
    if any("".join(ln.split()) == compact for ln in page_text.splitlines()):
        return page_text, words  # layout analysis kept it
    return (f"{page_text}\n\n{line}" if page_text else line), words + foot


def ocr_document(data: bytes, *, name: str, lang: str = "eng") -> tuple[str, list[int]]:
    """OCR a whole scanned PDF, or one page image, held in memory (no lakehouse needed):
    what ``corpus score`` does with a scan it is handed.

    Returns:
        The text (pages joined by a blank line, as ``corpus ocr`` joins them) and the page
        start offsets.

    Raises:
        OcrError: naming the file and the page that could not be read.
    """
    import pymupdf

    if data[:5] == b"%PDF-":
        try:
            with pymupdf.open(stream=data, filetype="pdf") as pdf:
                n = pdf.page_count
        except Exception as e:
            raise OcrError(f"{name}: not a readable PDF ({e}).") from None
        pages = [(i + 1, i, 0) for i in range(n)]
    else:
        from ingest.share import image_frames

        try:
            n = image_frames(data)
        except OSError as e:
            raise OcrError(f"{name}: not a readable image ({e}).") from None
        pages = [(i + 1, None, i) for i in range(n)]
    rows = []
    for page_no, idx, frame in pages:
        row = recognise_page(data, idx, lang=lang, page_no=page_no, frame=frame)
        if "error" in row:
            raise OcrError(f"{name}: {row['error']}")
        rows.append({"page_no": page_no, "text": row["text"]})
    return assemble_ocr_text(rows)


# ---- planning (pure) ---------------------------------------------------------------------

def scan_page_files(source: str, files: list[dict]) -> list[dict]:
    """The ``files`` rows that hold the pages of the scan ``source``, in reading order.

    One rule for OCR and the review page: a PDF or a book-named image is its own scan;
    page images belong to their folder's scan (see :func:`ingest.share.scan_key`), in
    natural name order; only files ingest kept (kind ``scan``, status ``ok``) count.
    """
    from ingest.assemble import scan_page_order
    from ingest.share import scan_key

    rows = [f for f in files if f["kind"] == "scan" and f["status"] == "ok"
            and scan_key(f["path"], f["format"]) == source]
    return sorted(rows, key=lambda f: scan_page_order(f["path"]))


def scan_pages(page_files: list[dict], counts: dict[str, int]
               ) -> list[tuple[str, int | None, int]]:
    """Every page of a scan as ``(blob key, pdf page or None, frame)``, in reading order:
    each page of a PDF, each frame of a (multi-page) image. ``counts`` gives the pages or
    frames of each blob (:func:`blob_page_counts`); a blob not in it has one."""
    pages: list[tuple[str, int | None, int]] = []
    for f in page_files:
        blob = key_from_uri(f["blob_uri"])
        for i in range(counts.get(blob, 1)):
            pages.append((blob, i, 0) if f["format"] == "pdf" else (blob, None, i))
    return pages


def plan_pages(scans: pa.Table, files: pa.Table, done: set[tuple[str, int]],
               page_counts: dict[str, int]) -> tuple[list[PageTask], dict[str, str]]:
    """Pages still to recognise, and scans that cannot be planned (``{scan_id: reason}``).

    Args:
        scans: ``scans`` rows to OCR.
        files: ``files`` rows (for each scan's blobs).
        done: ``(scan_id, page_no)`` already in ``ocr_pages`` for the scan's current content.
        page_counts: pages (PDF) or frames (TIFF) of each blob, by blob key; a blob not
            in it has one page.
    """
    rows = files.to_pylist()
    tasks, failed = [], {}
    for s in scans.to_pylist():
        sid, source = s["scan_id"], s["source"]
        pages = scan_pages(scan_page_files(source, rows), page_counts)
        if not pages:
            failed[sid] = f"no pages found for {source} in the files table"
            continue
        tasks.extend(PageTask(sid, no, blob, idx, frame, s.get("sha256"))
                     for no, (blob, idx, frame) in enumerate(pages, start=1)
                     if (sid, no) not in done)
    return tasks, failed


def assemble_ocr_text(pages: Sequence[dict]) -> tuple[str, list[int]]:
    """The book's OCR text, pages in order joined by :data:`~catalog.rules.PAGE_SEPARATOR`
    (a blank line), and page start offsets."""
    text, offsets = "", []
    for p in sorted(pages, key=lambda p: p["page_no"]):
        if text:
            text += PAGE_SEPARATOR
        offsets.append(len(text))
        text += (p["text"] or "").strip()
    return text, offsets


# ---- the driver ----------------------------------------------------------------------------

@dataclass
class OcrReport:
    """What one ``corpus ocr`` run did."""

    scans_done: int = 0
    scans_failed: dict[str, str] | None = None
    pages_done: int = 0
    pages_skipped: int = 0
    seconds: float = 0.0


def run_ocr(lakehouse: Lakehouse, *, config: OcrConfig,
            scan_ids: Iterable[str] | None = None) -> OcrReport:
    """OCR every scan not yet done (or the given ones); see the module docstring."""
    t0 = time.perf_counter()
    try:
        scans = lakehouse.read("scans")
    except TableNotFoundError:
        raise CorpusError("No scans registered yet: run `corpus ingest SHARE` first.") from None
    wanted = set(scan_ids or [])
    unknown = wanted - set(scans.column("scan_id").to_pylist())
    if unknown:
        raise CorpusError(f"Unknown scan id(s): {sorted(unknown)}. List them with "
                          "`corpus scans`.")
    # By default every scan whose OCR is not done (whatever editors flagged: a scan flagged
    # for a rescan that came in is read again); a failed scan is retried only when named.
    rows = [s for s in scans.to_pylist()
            if (s["scan_id"] in wanted if wanted else ocr_state(s) == "new")]
    if not rows:
        return OcrReport(scans_failed={}, seconds=time.perf_counter() - t0)
    todo_scans = pa.Table.from_pylist(rows, schema=TABLES["scans"].schema)
    pins = lakehouse.pin("scans", "files")
    files = lakehouse.read("files", version=pins["files"])
    done_rows = _done_pages(lakehouse, rows)
    counts = page_counts(lakehouse.store, todo_scans, files)
    tasks, failed = plan_pages(todo_scans, files, set(done_rows), counts)
    # Heaviest pages first (stored bytes per page): the last pages to finish are then the
    # light ones, and neither worker idles long at the end.
    size = {key_from_uri(f["blob_uri"]): f["size"] for f in files.to_pylist() if f["blob_uri"]}
    pages_of = Counter(t.blob_key for t in tasks)
    tasks.sort(key=lambda t: -size.get(t.blob_key, 0) / pages_of[t.blob_key])
    report = OcrReport(scans_failed=dict(failed), pages_skipped=len(done_rows))
    lineage = Lineage(operation="ocr", inputs=pins,
                      config={"lang": config.lang, "workers": config.workers,
                              "page_foot": config.page_foot,
                              "executor": config.executor})
    errors: dict[str, str] = {}
    for row in _recognise(lakehouse.config, tasks, config):
        if "error" in row:
            errors.setdefault(row["scan_id"], row["error"])
            continue
        lakehouse.append("ocr_pages", [row], lineage=lineage)  # one commit a page: resumable
        report.pages_done += 1
    failed.update(errors)
    report.scans_failed = failed
    report.scans_done = _finish_scans(lakehouse, rows, failed, lineage)
    report.seconds = time.perf_counter() - t0
    return report


def _done_pages(lakehouse: Lakehouse, scans: list[dict]) -> dict[tuple[str, int], dict]:
    """Pages already read from each scan's *current* content (pages of an earlier content
    of a rescanned scan are history: never counted, never mixed in)."""
    try:
        pages = lakehouse.read("ocr_pages")
    except TableNotFoundError:
        return {}
    current = {s["scan_id"]: s.get("sha256") for s in scans}
    return {(p["scan_id"], p["page_no"]): p for p in pages.to_pylist()
            if p["scan_id"] in current and p["scan_sha256"] == current[p["scan_id"]]}


def blob_page_counts(store: ObjectStore, page_files: Iterable[dict]) -> dict[str, int]:
    """Pages of every PDF and frames of every TIFF among ``page_files``, by blob key, read
    from the stored bytes (what OCR will read); 1 for a file that cannot be read (its page
    task then reports why)."""
    import pymupdf

    from ingest.share import image_frames

    out = {}
    for f in page_files:
        if f["format"] not in ("pdf", "tiff") or not f["blob_uri"]:
            continue
        key = key_from_uri(f["blob_uri"])
        try:
            data = store.get_bytes(key)
            if f["format"] == "pdf":
                with pymupdf.open(stream=data, filetype="pdf") as pdf:
                    out[key] = pdf.page_count
            else:
                out[key] = image_frames(data)
        except Exception:  # the page tasks report the error per page
            out[key] = 1
    return out


def page_counts(store: ObjectStore, scans: pa.Table, files: pa.Table) -> dict[str, int]:
    """:func:`blob_page_counts` of every file of the given scans."""
    rows = files.to_pylist()
    return blob_page_counts(store, [f for s in scans.to_pylist()
                                    for f in scan_page_files(s["source"], rows)])


def _recognise(config: LakehouseConfig, tasks: list[PageTask], ocr: OcrConfig):
    """Yield page rows as they finish (any order)."""
    if not tasks:
        return
    if ocr.executor == "ray":
        yield from _recognise_ray(config, tasks, ocr)
        return
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # inherited by the forked workers
    if ocr.workers == 1:
        for t in progress(tasks, desc="pages", unit="page"):
            yield ocr_page(config, t, ocr.lang, ocr.page_foot)
        return
    with process_pool(ocr.workers, initializer=_fresh_worker) as pool:
        pending: set[Future] = set()
        queue = list(reversed(tasks))
        bar = progress(range(len(tasks)), desc="pages", unit="page")
        while queue or pending:
            # a short queue per worker: a kill loses only what is in flight
            while queue and len(pending) < ocr.workers * 2:
                pending.add(pool.submit(ocr_page, config, queue.pop(), ocr.lang,
                                         ocr.page_foot))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                next(bar, None)
                yield f.result()


def _fresh_worker() -> None:
    # forked from the parent: no inherited S3 connections or cached blobs
    cached_store.cache_clear()
    _blob.cache_clear()


def _recognise_ray(config: LakehouseConfig, tasks: list[PageTask], ocr: OcrConfig):
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ray[default]'.") from None
    if not ray.is_initialized():
        # Without --ray-address, a new local instance: ray.init() would otherwise attach to
        # whatever cluster another process registered in /tmp/ray on this machine.
        ray.init(address=ocr.ray_address or "local", include_dashboard=False,
                 log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_THREAD_LIMIT": "1"}})
    remote = ray.remote(ocr_page)
    pending = [remote.remote(config, t, ocr.lang, ocr.page_foot) for t in tasks]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def _finish_scans(lakehouse: Lakehouse, rows: list[dict], failed: dict[str, str],
                  lineage: Lineage) -> int:
    """Write the ``ocr`` texts of completed scans and update every scan's OCR columns.

    Only the columns OCR owns are written (``pages_done, reason, ocr_engine,
    mean_confidence``), plus ``status`` by the rule of :mod:`ingest.scan_status`, decided
    at commit time: an editor's flag set while the pages were recognised is kept.
    """
    pages = _done_pages(lakehouse, rows)
    by_scan: dict[str, list[dict]] = {}
    for (sid, _), p in pages.items():
        by_scan.setdefault(sid, []).append(p)
    now = datetime.now(UTC)
    scan_updates, texts, done = [], [], 0
    for r in rows:
        sid = r["scan_id"]
        got = by_scan.get(sid, [])
        update = {"scan_id": sid, "status": r["status"], "pages_done": len(got),
                  "reason": None, "ocr_engine": r["ocr_engine"],
                  "mean_confidence": r["mean_confidence"], "updated_at": now}
        if sid in failed:
            update.update(reason=failed[sid])
        elif len(got) >= (r["n_pages"] or 0) and got:
            text, offsets = assemble_ocr_text(got)
            confs = [p["mean_confidence"] for p in got if p["mean_confidence"] is not None]
            engines = sorted({p["engine"] for p in got})
            update.update(ocr_engine=", ".join(engines),
                          mean_confidence=statistics.fmean(confs) if confs else None)
            texts.append({"book_id": r["book_id"] or sid, "variant": OCR, "text": text,
                          "n_chars": len(text), "page_offsets": offsets,
                          "derived_from": f"scan:{sid}", "created_at": now})
            done += 1
        scan_updates.append(update)
    if texts:
        lakehouse.merge("texts", texts, lineage=lineage)
    if scan_updates:
        owned = ("pages_done", "reason", "ocr_engine", "mean_confidence", "updated_at")
        lakehouse.merge("scans", scan_updates, lineage=lineage, insert=False, columns={
            **{c: f"s.{c}" for c in owned},
            "status": status_sql(flag_from="t", ocr_from="s")})
    return done
