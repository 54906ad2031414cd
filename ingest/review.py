"""`corpus review`: the editors' review page for new scans.

A small web application on the standard library's threading HTTP server: a queue of scans
(title, author, pages, OCR confidence, status, open flags, predicted reading level),
filtered, sorted and paginated in SQL by :mod:`ingest.review_queue` from the page's URL
parameters, and, for one scan, its page images beside the OCR text. In that scan view each
page image zooms and pans (buttons, Ctrl+wheel, drag), Tesseract's word boxes are drawn over
it and linked to the words of the text (pointing at or clicking a word on one side marks it
on the other), the text keeps the scan's lines (no soft wrap), words below a confidence
threshold the editor moves are marked, and keys move between pages and scans (in the queue's
default order) and flag, ignored while the editor types. Editors flag and resolve flags from
both pages; the page updates in place and a scan keeps its place in the queue (the default
order is the share's, not the status). It binds to 127.0.0.1 by default. Page images are
looked up by scan id and page number in the catalog and rendered from the stored bytes:
nothing in a request names a file. The pages of a folder scan are the images OCR reads
(:func:`ingest.ocr.scan_page_files`), so an image and the text beside it come from the same
file. Below each page's OCR text the editor can correct the page and save it
(``POST /api/correct``): the correction is a row of ``corrections``, the OCR text is never
overwritten, and the book's ``corrected`` text is rewritten; once every page is corrected,
``POST /api/promote`` makes it the book's ``edited`` text (see :mod:`ingest.corrections`).
Flags are appended to the ``flags`` table, so editors flagging at once never lose a flag;
resolving records who resolved it and recomputes the status
(:func:`ingest.flags.resolve_flag`).

Every request must name this server in its ``Host`` header (``localhost``, ``127.0.0.1``,
``[::1]`` or the configured host, with the port), else it is refused with 403: a page on
another site whose name an attacker re-points at 127.0.0.1 (DNS rebinding) can neither read
the queue nor flag. A flag posted from a browser must also come from this very origin.
"""

from __future__ import annotations

import functools
import html
import io
import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow.compute as pc

from catalog import CorpusError, Lakehouse, TableNotFoundError
from ingest.corrections import page_corrections, promote, save_correction
from ingest.flags import FLAGS, add_flag, resolve_flag
from ingest.ocr import DEFAULT_DPI, blob_page_counts, scan_page_files, scan_pages
from ingest.review_queue import (
    FLAG_FILTERS,
    READY_NOTE,
    SORTS,
    STATUSES,
    QueueQuery,
    QueueResult,
    metric_label,
    query_queue,
    scan_neighbours,
)
from ingest.scan_status import current_status

log = logging.getLogger(__name__)

LOW_CONFIDENCE = 60.0  # words Tesseract is less sure of than this are marked for the editor
PREVIEW_DPI = 110      # page images for the screen, not for OCR
_ROUTE_PAGE = re.compile(r"^/scans/([A-Za-z0-9_-]{1,64})/pages/(\d{1,5})\.png$")
_ROUTE_SCAN = re.compile(r"^/scan/([A-Za-z0-9_-]{1,64})$")

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#234;color:#fff;padding:.6em 1.2em}header a{color:#fff}
main{padding:1em 1.2em}table{border-collapse:collapse;background:#fff}
td,th{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:left}
.pages{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1em;margin-bottom:1em}
.page img{width:100%;display:block;background:#fff;user-select:none}
.viewer{position:relative;overflow:hidden;border:1px solid #ccc;background:#fff;cursor:grab;
touch-action:none}.viewer.drag{cursor:grabbing}.pages.current .viewer{border-color:#36c;
box-shadow:0 0 0 2px #9bd}.stage{position:relative;transform-origin:0 0}
.boxes{position:absolute;inset:0}.box{position:absolute;box-sizing:border-box;
border:1px solid rgba(40,90,200,.4)}.box.low{border-color:#e08a00;background:rgba(255,170,0,.2)}
.box.hot,.box.sel{background:rgba(255,220,0,.5);outline:2px solid #c00}
.zoombar button{padding:.1em .55em;margin-right:.2em}.zoomval{color:#555;font-size:.85em}
.side{min-width:0}.ocr{white-space:pre;overflow-x:auto;background:#fff;border:1px solid #ccc;
padding:.6em;font-family:serif}.w{cursor:pointer}.w.low{background:#ffd27f}
.w.hot,.w.sel{background:#ffe866;outline:2px solid #c00}
#scan-nav{margin-top:.4em}#scan-nav>*{margin-right:.4em}.th input{vertical-align:middle}
.legend{font-size:.85em;color:#444;margin:.3em 0 0}kbd{border:1px solid #aaa;border-radius:3px;
padding:0 .3em;background:#fff;font:12px monospace}
mark.low{background:#ffd27f}textarea.fix{width:100%;box-sizing:border-box;min-height:12em;
font-family:serif;font-size:14px;margin-top:.4em}.corr{margin-left:.5em;color:#264}
.corr.none{color:#777}.flagbar{position:sticky;top:0;z-index:5;background:#eef;padding:.6em;
border:1px solid #ccd;margin-bottom:1em}button{margin-right:.4em;padding:.35em .8em}
.status{font-weight:600}#result{margin-left:1em}
#counts a{margin-right:.8em}#counts a.on{font-weight:700}#filters{margin:.6em 0}
#filters label{margin-right:.6em}.chip{display:inline-block;background:#fde2b8;
border-radius:.8em;padding:0 .5em;margin:.1em .2em .1em 0;font-size:.9em}
.chip button{margin:0 0 0 .3em;padding:0 .35em;font-size:.85em}.from{color:#666;font-size:.85em}
.muted{color:#777;font-style:italic}.author{color:#555}th a{color:inherit}
.ready{color:#1a7f37;font-size:.85em}
#pager a,#pager span{margin-right:.8em}td.act select{margin-right:.3em}
td.act,td.conf,#queue td:first-child{white-space:nowrap}
"""


class ReviewData:
    """What the pages show, read from the catalog (fresh on every request)."""

    def __init__(self, lakehouse: Lakehouse):
        self.lakehouse = lakehouse

    def queue(self, query: QueueQuery | None = None) -> QueueResult:
        """One page of the queue (filtered, sorted and paginated in SQL)."""
        return query_queue(self.lakehouse, query)

    def _flags(self) -> list[dict]:
        try:
            return self.lakehouse.read("flags").to_pylist()
        except TableNotFoundError:
            return []

    def scan(self, scan_id: str) -> dict | None:
        rows = self.lakehouse.read("scans", filter=pc.field("scan_id") == scan_id).to_pylist()
        if not rows:
            return None
        scan = rows[0]
        try:
            pages = self.lakehouse.read(
                "ocr_pages", filter=pc.field("scan_id") == scan_id).to_pylist()
        except TableNotFoundError:
            pages = []
        # only pages of the scan's current content (a rescan's old pages are history)
        pages = [p for p in pages if p["scan_sha256"] == scan["sha256"]]
        scan["pages"] = sorted(pages, key=lambda p: p["page_no"])
        scan["corrections"] = page_corrections(self.lakehouse, scan)
        scan["flags"] = sorted((f for f in self._flags() if f["scan_id"] == scan_id),
                               key=lambda f: f["created_at"], reverse=True)
        book = []
        if scan["book_id"] and self.lakehouse.exists("books"):
            book = self.lakehouse.read("books", columns=["book_id", "title", "author"],
                                       filter=pc.field("book_id") == scan["book_id"]
                                       ).to_pylist()
        scan["title"] = book[0]["title"] if book else None
        scan["author"] = book[0]["author"] if book else None
        scan["prev_scan"], scan["next_scan"] = scan_neighbours(self.lakehouse, scan_id)
        scan["ocr_sizes"] = self._ocr_sizes(scan)
        return scan

    def _page_sources(self, scan: dict) -> list[tuple[str, int | None, int]]:
        """``(blob key, pdf page, frame)`` of each page, in page order."""
        page_files = scan_page_files(scan["source"], self.lakehouse.read("files").to_pylist())
        return scan_pages(page_files, blob_page_counts(self.lakehouse.store, page_files))

    def _ocr_sizes(self, scan: dict) -> dict[int, tuple[int, int]]:
        """The size in pixels of the image OCR read, for each page with word boxes: the
        boxes are in its coordinates, and the page draws them over it as fractions of it."""
        with_words = [p for p in scan["pages"] if p.get("words") not in (None, "", "[]")]
        if not with_words:
            return {}
        sizes = {}
        try:
            sources = self._page_sources(scan)
            for p in with_words:
                if p["page_no"] > len(sources):
                    continue
                key, pdf_page, frame = sources[p["page_no"] - 1]
                size = _cached_ocr_size(self.lakehouse, key, pdf_page, frame, p.get("dpi"))
                if size:
                    sizes[p["page_no"]] = size
        except (CorpusError, OSError, RuntimeError, ValueError):
            # the view still shows the text without boxes; the page image says what failed
            log.warning("page sizes of scan %s unavailable", scan["scan_id"], exc_info=True)
        return sizes

    def page_png(self, scan_id: str, page_no: int) -> bytes | None:
        """The page as PNG, or None when the scan or page is not registered."""
        scan = self.scan(scan_id)
        if scan is None or not 1 <= page_no <= (scan["n_pages"] or 0):
            return None
        pages = self._page_sources(scan)
        if page_no > len(pages):
            return None
        key, pdf_page, frame = pages[page_no - 1]
        return _cached_preview(self.lakehouse, key, pdf_page, frame)


@functools.lru_cache(maxsize=256)
def _cached_ocr_size(lakehouse: Lakehouse, key: str, pdf_page: int | None, frame: int,
                     dpi: int | None) -> tuple[int, int] | None:
    return ocr_image_size(lakehouse.store.get_bytes(key), pdf_page, frame, dpi)


def ocr_image_size(data: bytes, pdf_page: int | None, frame: int = 0,
                   dpi: int | None = None) -> tuple[int, int] | None:
    """``(width, height)`` in pixels of the image OCR read for a page: an image file's own
    size, or a PDF page at the OCR ``dpi`` (an embedded scan OCR reads as it is covers
    the whole page at that resolution); None when there is no such page.

    Word boxes are in these pixels; the preview shows the same page at another size, so the
    page places the boxes as fractions of this size.
    """
    import pymupdf
    from PIL import Image

    if pdf_page is not None:
        with pymupdf.open(stream=data, filetype="pdf") as pdf:
            if pdf_page >= pdf.page_count:
                return None
            rect = pdf[pdf_page].rect
        scale = (dpi or DEFAULT_DPI) / 72
        return round(rect.width * scale), round(rect.height * scale)
    img = Image.open(io.BytesIO(data))
    if frame >= getattr(img, "n_frames", 1):
        return None
    img.seek(frame)
    return img.size


@functools.lru_cache(maxsize=64)
def _cached_preview(lakehouse: Lakehouse, key: str, pdf_page: int | None,
                    frame: int = 0) -> bytes | None:
    # blobs are content-addressed: a key always holds the same bytes
    return preview_png(lakehouse.store.get_bytes(key), pdf_page, frame)


def preview_png(data: bytes, pdf_page: int | None, frame: int = 0) -> bytes | None:
    """A page for the screen as PNG: page ``pdf_page`` (0-based) of a PDF, or frame
    ``frame`` of an image file (None); None when there is no such page."""
    import pymupdf
    from PIL import Image

    if pdf_page is not None:
        with pymupdf.open(stream=data, filetype="pdf") as pdf:
            if pdf_page >= pdf.page_count:
                return None
            return pdf[pdf_page].get_pixmap(dpi=PREVIEW_DPI).tobytes("png")
    img = Image.open(io.BytesIO(data))
    if frame >= getattr(img, "n_frames", 1):
        return None
    img.seek(frame)
    img.thumbnail((1000, 1400))
    out = io.BytesIO()
    img.convert("L").save(out, format="PNG")
    return out.getvalue()


def linked_text(text: str, words_json: str | None,
                threshold: float = LOW_CONFIDENCE) -> str:
    """The page text as HTML for the scan view: each OCR word a ``<span class=w>`` with its
    index in the word list (``data-i``, the same as its box's) and confidence (``data-c``),
    ``low`` when below ``threshold`` (the page re-marks them when the editor moves it).

    Line breaks are kept as they are: a line of text is a line of the scan. A token that is
    not the next OCR word (text not built from the word list) stays plain text.
    """
    words = json.loads(words_json or "[]")
    out, i = [], 0
    for token in re.split(r"(\s+)", text or ""):
        if not token or token.isspace():
            out.append(html.escape(token))
            continue
        esc = html.escape(token)
        if i < len(words) and words[i][0] == token:
            conf = float(words[i][1])
            low = " low" if 0 <= conf < threshold else ""
            out.append(f'<span class="w{low}" data-i={i} data-c="{conf:g}" '
                       f'title="confidence {conf:.0f}">{esc}</span>')
        else:
            out.append(esc)
        i += 1
    return "".join(out)


def word_boxes(words_json: str | None, size: tuple[int, int] | None,
               threshold: float = LOW_CONFIDENCE) -> str:
    """Tesseract's word boxes as absolutely placed ``<div class=box>`` over the page image,
    in percent of the OCR image ``size`` so they follow the image at any zoom."""
    if not size or not size[0] or not size[1]:
        return ""
    width, height = size
    out = []
    for i, w in enumerate(json.loads(words_json or "[]")):
        word, conf, left, top, w_, h_ = w[:6]
        low = " low" if 0 <= float(conf) < threshold else ""
        out.append(f"<div class='box{low}' data-i={i} data-c='{float(conf):g}' "
                   f"title='{html.escape(str(word))} ({float(conf):.0f})' style='"
                   f"left:{100 * left / width:.3f}%;top:{100 * top / height:.3f}%;"
                   f"width:{100 * w_ / width:.3f}%;height:{100 * h_ / height:.3f}%'></div>")
    return "".join(out)


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style><header><a href='/'>Corpus scans</a></header>"
            f"<main>{body}</main></html>").encode()


def _conf(value: float | None, reason: str | None = None) -> str:
    if value is None:
        return "OCR failed" if reason else "not OCR'd yet"
    return f"{value:.1f}"


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _level(row: dict) -> str:
    """The reading-level cell: the OCR text's prediction, and the edited text's with the
    difference where the run scored it; else why there is none."""
    if row["pred_ocr"] is None:
        return f"<span class=muted>{_esc(row['level_note'])}</span>"
    out = f"<span class=pred-ocr>{row['pred_ocr']:.2f}</span>"
    if row["pred_edited"] is not None:
        out += (f"<br><span class=from>edited {row['pred_edited']:.2f} "
                f"(diff {row['pred_diff']:+.2f})</span>")
    if row.get("ready"):
        out += (f"<br><span class=ready title='{_esc(READY_NOTE)}; {row['n_windows']} windows, "
                f"standard error {row['pred_se']:.3f}'>can be scored without editing</span>")
    return out


def _flag_chips(flags: list[dict]) -> str:
    return "".join(
        f"<span class=chip data-flag-id='{_esc(f['flag_id'])}' title='"
        f"{_esc(f['editor'])}, {f['created_at']:%Y-%m-%d %H:%M}"
        f"{': ' + _esc(f['note']) if f['note'] else ''}'>{_esc(f['flag'])} "
        f"<button type=button data-resolve='{_esc(f['flag_id'])}' aria-label='resolve "
        f"{_esc(f['flag'])}'>resolve</button></span>" for f in flags)


def _queue_row(r: dict) -> str:
    sid = _esc(r["scan_id"])
    if r["title"] is None:
        title = "<span class=muted>no title yet</span>"
    else:
        title = _esc(r["title"])
        if r["title_from_page"]:
            title += " <span class=from>(from the title page)</span>"
    if r["author"]:
        title += f"<br><span class=author>{_esc(r['author'])}</span>"
    kinds = "".join(f"<option>{f}</option>" for f in FLAGS)
    return (f"<tr id='row-{sid}' data-scan='{sid}'><td><a href='/scan/{sid}'>{sid}</a></td>"
            f"<td>{title}</td><td>{_esc(r['book_id'])}</td>"
            f"<td class=status>{_esc(r['status'])}</td><td>{r['n_pages'] or 0}</td>"
            f"<td class=conf>{_conf(r['mean_confidence'], r['reason'])}</td>"
            f"<td class=level>{_level(r)}</td>"
            f"<td class=flags>{_flag_chips(r['open_flag_list'])}</td>"
            f"<td class=act><select aria-label='flag kind'>{kinds}</select>"
            f"<button type=button data-flag-row>flag</button></td></tr>")


FLAG_FILTER_LABELS = {"any": "any open flag", "none": "no open flag"}


def _options(values: tuple[str, ...], chosen: str | None, blank: str,
             labels: dict[str, str] | None = None) -> str:
    opts = [f"<option value=''>{blank}</option>"] + [
        f"<option value='{v}'{' selected' if v == chosen else ''}>"
        f"{(labels or {}).get(v, v)}</option>" for v in values]
    return "".join(opts)


def render_queue(result: QueueResult) -> bytes:
    """The queue page: counts per status, filters, one page of scans, the pager."""
    q = result.query
    total_all = sum(result.counts.values())
    counts = [f"<a href='{_esc(q.url(status=None, page=1))}'"
              f"{' class=on' if q.status is None else ''}>all {total_all}</a>"]
    counts += [f"<a href='{_esc(q.url(status=st, page=1))}' data-status='{st}'"
               f"{' class=on' if q.status == st else ''}>{st} {result.counts.get(st, 0)}</a>"
               for st in STATUSES]
    num = lambda v: "" if v is None else f"{v:g}"  # noqa: E731
    filters = (
        "<form id=filters method=get action='/'>"
        f"<label>Status <select name=status>{_options(STATUSES, q.status, 'any')}</select>"
        f"</label><label>Flags <select name=flag>"
        f"{_options(FLAG_FILTERS, q.flag, 'all', FLAG_FILTER_LABELS)}"
        "</select></label><label>Confidence <input name=min_conf size=4 inputmode=decimal "
        f"value='{num(q.min_conf)}' placeholder=min>–<input name=max_conf size=4 "
        f"inputmode=decimal value='{num(q.max_conf)}' placeholder=max></label>"
        "<label><input type=checkbox name=ready value=1"
        f"{' checked' if q.ready else ''}> can be scored without editing</label>"
        f"<label>Search <input name=q size=24 value='{_esc(q.q)}' "
        "placeholder='title, author, ISBN, scan'></label>"
        f"<label>Sort <select name=sort>{_options(tuple(SORTS), q.sort, 'default')}</select>"
        f"</label><select name=dir aria-label='direction'>"
        f"{_options(('asc', 'desc'), q.dir, 'asc')}</select> "
        "<button type=submit>Show</button> <a href='/'>clear</a></form>")
    if result.run_id and result.target:
        level_head = (f"reading level<br><span class=from>{_esc(metric_label(result.target))}"
                      "</span>")
        level_info = (f"Predicted reading level of the raw OCR text: "
                      f"{_esc(metric_label(result.target))}, run {_esc(result.run_id)}.")
    else:
        level_head = "reading level"
        level_info = f"Predicted reading level: {_esc(result.level_note)}."

    def head(label: str, key: str | None) -> str:
        if key is None:
            return f"<th>{label}</th>"
        desc = q.sort == key and q.dir == "asc"
        mark = (" ▲" if q.dir == "asc" else " ▼") if q.sort == key else ""
        return (f"<th><a href='{_esc(q.url(sort=key, dir='desc' if desc else 'asc', page=1))}'"
                f">{label}</a>{mark}</th>")

    heads = "".join([head("scan", "scan"), head("title / author", "title"), head("book", "book"),
                     head("status", "status"), head("pages", "pages"),
                     head("confidence", "confidence"), head(level_head, "level"),
                     head("open flags", "flags"), head("flag", None)])
    rows = "".join(_queue_row(r) for r in result.rows)
    if not rows:
        where = " on this page" if q.page > 1 else ""
        rows = f"<tr><td colspan=9 class=muted>no scans match{where}</td></tr>"
    first = (q.page - 1) * q.per_page + 1
    last = min(q.page * q.per_page, result.total)
    pager = [f"<span>{first}–{last} of {result.total}</span>" if result.total else
             "<span>0 scans</span>"]
    if q.page > 1:
        pager.append(f"<a rel=prev href='{_esc(q.url(page=q.page - 1))}'>« previous</a>")
    pager.append(f"<span>page {q.page} of {result.pages}</span>")
    if q.page < result.pages:
        pager.append(f"<a rel=next href='{_esc(q.url(page=q.page + 1))}'>next »</a>")
    body = (f"<h1>Scans to review</h1><p id=counts>{''.join(counts)}</p>{filters}"
            f"<p id=level-info>{level_info}</p><p class=flagbar>"
            "<label>Your name <input id=editor size=14></label>"
            "<span id=result role=status></span></p>"
            f"<table id=queue><thead><tr>{heads}</tr></thead><tbody id=queue-body>{rows}"
            f"</tbody></table><nav id=pager>{''.join(pager)}</nav>"
            f"<script>{COMMON_SCRIPT}{QUEUE_SCRIPT}</script>")
    return _page("Scans", body)


# The editor's name lives in the browser (localStorage); every action posts JSON and then
# re-reads this very page and swaps the parts that changed: no reload, and the server stays
# the one place that renders.
COMMON_SCRIPT = """
const who = document.getElementById('editor');
const result = document.getElementById('result');
who.value = localStorage.getItem('corpus-editor') || '';
who.addEventListener('change', () => localStorage.setItem('corpus-editor', who.value.trim()));
function editorName() {
  const name = who.value.trim();
  if (!name) { result.textContent = 'Enter your name first.'; who.focus(); return null; }
  localStorage.setItem('corpus-editor', name);
  return name;
}
async function postJSON(url, payload) {
  const res = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                body: JSON.stringify(payload)});
  let body = {};
  try { body = await res.json(); } catch (e) { body = {error: 'server error'}; }
  return [res.ok, body];
}
async function refresh(ids) {
  const res = await fetch(location.href, {cache: 'no-store'});
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  for (const id of ids) {
    const fresh = doc.getElementById(id), old = document.getElementById(id);
    if (fresh && old) old.replaceWith(fresh);
  }
}
"""

QUEUE_SCRIPT = """
document.getElementById('queue').addEventListener('click', async (ev) => {
  const b = ev.target.closest('button');
  if (!b) return;
  const name = editorName();
  if (!name) return;
  const row = b.closest('tr');
  let ok, body;
  if (b.dataset.resolve) {
    [ok, body] = await postJSON('/api/resolve', {flag_id: b.dataset.resolve, editor: name});
    result.textContent = ok ? `Resolved; ${row.dataset.scan} is now ${body.status}.` : body.error;
  } else if ('flagRow' in b.dataset) {
    const flag = row.querySelector('select').value;
    [ok, body] = await postJSON('/api/flags', {scan_id: row.dataset.scan, flag: flag,
                                               editor: name});
    result.textContent = ok ? `Flagged ${row.dataset.scan} as ${flag}.` : body.error;
  } else return;
  await refresh(['counts', 'queue-body', 'pager']);
});
"""

SCAN_SCRIPT = """
const form = document.getElementById('flagbar');
form.addEventListener('click', async (ev) => {
  const flag = ev.target.dataset.flag;
  if (!flag) return;
  ev.preventDefault();
  const name = editorName();
  if (!name) return;
  const [ok, body] = await postJSON('/api/flags', {scan_id: form.dataset.scan, flag: flag,
      note: document.getElementById('note').value, editor: name});
  // the page first, then the message: when it says "Flagged", the list shows the flag
  if (ok) { document.getElementById('note').value = ''; await refresh(['scan-status', 'flags']); }
  result.textContent = ok ? `Flagged as ${flag} (flag ${body.flag_id}).` : body.error;
});
document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button[data-save], button#promote');
  if (!b) return;
  const name = editorName();
  if (!name) return;
  if (b.id === 'promote') {
    const [ok, body] = await postJSON('/api/promote', {scan_id: form.dataset.scan,
                                                       editor: name});
    result.textContent = ok ? `Promoted: book ${body.book_id} has the corrected text as its `
        + `edited text (${body.n_pages} pages).` : body.error;
    if (ok) await refresh(['promote-box']);
    return;
  }
  const n = Number(b.dataset.save);
  const [ok, body] = await postJSON('/api/correct', {scan_id: form.dataset.scan, page_no: n,
      text: document.getElementById('fix-' + n).value, editor: name});
  result.textContent = ok ? `Saved page ${n}.` + (body.note ? ` Note: ${body.note}.` : '')
                          : body.error;
  if (ok) await refresh(['corr-' + n, 'promote-box']);
});
document.getElementById('flags-box').addEventListener('click', async (ev) => {
  const id = ev.target.dataset.resolve;
  if (!id) return;
  const name = editorName();
  if (!name) return;
  const [ok, body] = await postJSON('/api/resolve', {flag_id: id, editor: name});
  if (ok) await refresh(['scan-status', 'flags']);
  result.textContent = ok ? `Resolved; the scan is now ${body.status}.` : body.error;
});
"""

# The scan view's own behaviour, all in the page (no library, nothing fetched): zoom and pan
# of each page image (a CSS transform on the image and its word boxes together), words
# linked between the boxes and the text by their index, low-confidence marking recomputed
# from each word's confidence when the editor moves the threshold (kept in localStorage),
# and keyboard shortcuts, ignored while the editor types in a text box.
VIEW_SCRIPT = """
const sections = [...document.querySelectorAll('section.pages')];
const pagePos = document.getElementById('page-pos');
let cur = 1;
function goPage(n, scroll = true) {
  if (!sections.length) return;
  cur = Math.max(1, Math.min(sections.length, n));
  sections.forEach((s, i) => s.classList.toggle('current', i + 1 === cur));
  pagePos.textContent = `page ${cur} of ${sections.length}`;
  const s = sections[cur - 1];
  s.style.scrollMarginTop = (form.offsetHeight + 8) + 'px';
  if (scroll) s.scrollIntoView({block: 'start'});
  if (scroll) history.replaceState(null, '', '#page-' + cur);  // a reload opens this page
}
document.getElementById('next-page').addEventListener('click', () => goPage(cur + 1));
document.getElementById('prev-page').addEventListener('click', () => goPage(cur - 1));
const m = /^#page-(\\d+)$/.exec(location.hash);
goPage(m ? Number(m[1]) : 1, !!m);
for (const s of sections)
  s.addEventListener('pointerdown', () => { if (Number(s.dataset.page) !== cur)
                                               goPage(Number(s.dataset.page), false); });

// zoom and pan: translate then scale from the top left corner, kept inside the frame
const views = new Map();
function view(sec) {
  if (!views.has(sec)) views.set(sec, {s: 1, x: 0, y: 0});
  return views.get(sec);
}
function applyView(sec) {
  const v = view(sec), frame = sec.querySelector('.viewer');
  const w = frame.clientWidth, h = frame.clientHeight;
  v.x = Math.min(0, Math.max(w - w * v.s, v.x));
  v.y = Math.min(0, Math.max(h - h * v.s, v.y));
  sec.querySelector('.stage').style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.s})`;
  sec.querySelector('.zoomval').textContent = Math.round(v.s * 100) + '%';
}
function zoom(sec, factor, cx, cy) {
  const v = view(sec), frame = sec.querySelector('.viewer');
  if (cx === undefined) { cx = frame.clientWidth / 2; cy = frame.clientHeight / 2; }
  const s = factor === 0 ? 1 : Math.max(1, Math.min(8, v.s * factor));
  v.x = cx - (cx - v.x) * s / v.s; v.y = cy - (cy - v.y) * s / v.s; v.s = s;
  applyView(sec);
}
document.addEventListener('click', (ev) => {
  const b = ev.target.closest('button[data-zoom]');
  if (!b) return;
  const sec = b.closest('section.pages');
  zoom(sec, {in: 1.5, out: 1 / 1.5, fit: 0}[b.dataset.zoom]);
});
let drag = null, dragged = false;
window.addEventListener('pointerdown', () => { dragged = false; }, true);
for (const sec of sections) {
  const frame = sec.querySelector('.viewer');
  frame.addEventListener('wheel', (ev) => {
    if (!ev.ctrlKey) return;
    ev.preventDefault();
    const r = frame.getBoundingClientRect();
    zoom(sec, ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - r.left, ev.clientY - r.top);
  }, {passive: false});
  frame.addEventListener('pointerdown', (ev) => {
    const v = view(sec);
    drag = {sec, x0: ev.clientX, y0: ev.clientY, vx: v.x, vy: v.y};
    dragged = false;
  });
}
window.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  const dx = ev.clientX - drag.x0, dy = ev.clientY - drag.y0;
  if (Math.abs(dx) + Math.abs(dy) > 4) dragged = true;
  if (!dragged) return;
  const v = view(drag.sec);
  v.x = drag.vx + dx; v.y = drag.vy + dy;
  drag.sec.querySelector('.viewer').classList.add('drag');
  applyView(drag.sec);
});
window.addEventListener('pointerup', () => {
  if (drag) drag.sec.querySelector('.viewer').classList.remove('drag');
  drag = null;
});

// a word and its box share data-i within a page: mark both, on hover and on click
function both(sec, i) {
  return sec.querySelectorAll(`.w[data-i="${i}"], .box[data-i="${i}"]`);
}
document.addEventListener('mouseover', (ev) => {
  const el = ev.target.closest && ev.target.closest('.w, .box');
  document.querySelectorAll('.hot').forEach(e => e.classList.remove('hot'));
  if (el) both(el.closest('section.pages'), el.dataset.i).forEach(e => e.classList.add('hot'));
});
document.addEventListener('click', (ev) => {
  const el = ev.target.closest('.w, .box');
  if (!el) return;
  if (dragged) { dragged = false; return; }  // the end of a pan, not a choice
  const sec = el.closest('section.pages');
  const was = el.classList.contains('sel');
  document.querySelectorAll('.sel').forEach(e => e.classList.remove('sel'));
  if (was) return;
  both(sec, el.dataset.i).forEach(e => e.classList.add('sel'));
  const word = sec.querySelector(`.w[data-i="${el.dataset.i}"]`);
  if (word && el !== word) word.scrollIntoView({block: 'nearest', inline: 'nearest'});
  const box = sec.querySelector(`.box[data-i="${el.dataset.i}"]`);
  if (box && el !== box && view(sec).s > 1) {  // bring the box into the zoomed frame
    const v = view(sec), frame = sec.querySelector('.viewer');
    v.x = frame.clientWidth / 2 - (box.offsetLeft + box.offsetWidth / 2) * v.s;
    v.y = frame.clientHeight / 2 - (box.offsetTop + box.offsetHeight / 2) * v.s;
    applyView(sec);
  }
});

// low confidence: below the editor's threshold, recomputed from each word's confidence
const th = document.getElementById('threshold');
const thVal = document.getElementById('threshold-val');
function mark() {
  const t = Number(th.value);
  thVal.textContent = t;
  document.querySelectorAll('.w, .box').forEach(e => {
    const c = Number(e.dataset.c);
    e.classList.toggle('low', c >= 0 && c < t);
  });
  const n = document.querySelectorAll('.ocr .w.low').length;
  document.getElementById('low-count').textContent = `${n} word${n === 1 ? '' : 's'} marked`;
}
const saved = localStorage.getItem('corpus-threshold');
if (saved !== null && saved !== '' && !isNaN(Number(saved))) th.value = saved;
th.addEventListener('input', () => { localStorage.setItem('corpus-threshold', th.value); mark(); });
mark();

// keys: not while typing (text boxes, the name and note fields); Esc leaves the field
function typing(el) {
  if (!el) return false;
  if (el.isContentEditable || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT') return true;
  return el.tagName === 'INPUT' && !['range', 'button', 'checkbox', 'radio'].includes(el.type);
}
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && typing(document.activeElement)) {
    document.activeElement.blur(); return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing || typing(ev.target)) return;
  if (ev.target.type === 'range' && ev.key.startsWith('Arrow')) return;
  const sec = sections[cur - 1];
  const k = ev.key;
  if (k === 'j' || k === 'ArrowRight') goPage(cur + 1);
  else if (k === 'k' || k === 'ArrowLeft') goPage(cur - 1);
  else if (k === 'n' || k === 'p') {
    const a = document.querySelector(k === 'n' ? 'a#next-scan' : 'a#prev-scan');
    if (a) location.href = a.href;
    else result.textContent = k === 'n' ? 'This is the last scan in the queue.'
                                        : 'This is the first scan in the queue.';
  } else if ((k === '+' || k === '=') && sec) zoom(sec, 1.5);
  else if (k === '-' && sec) zoom(sec, 1 / 1.5);
  else if (k === '0' && sec) zoom(sec, 0);
  else if (FLAG_KEYS[k]) document.querySelector(`button[data-flag="${FLAG_KEYS[k]}"]`).click();
  else if (k === 'r') {
    const b = document.querySelector('#flags button[data-resolve]');
    if (b) b.click(); else result.textContent = 'No open flag to resolve.';
  } else return;
  ev.preventDefault();
});
"""


def render_scan(scan: dict) -> bytes:
    """One scan: page images beside their OCR text, flag buttons, its flags (open ones with
    a resolve button)."""
    sid = html.escape(scan["scan_id"])
    texts = {p["page_no"]: p for p in scan["pages"]}
    fixes = scan.get("corrections") or {}
    n_pages = scan["n_pages"] or 0
    pages = []
    sizes = scan.get("ocr_sizes") or {}
    for n in range(1, n_pages + 1):
        p = texts.get(n)
        text = (linked_text(p["text"], p["words"]) if p else
                "<em>not OCR'd yet: run corpus ocr</em>")
        boxes = word_boxes(p["words"], sizes.get(n)) if p else ""
        conf = f" · confidence {_conf(p['mean_confidence'])}" if p else ""
        fix = fixes.get(n)
        start = fix["text"] if fix else (p["text"] or "") if p else ""
        pages.append(f"<section class=pages id=page-{n} data-page={n}><div class=page>"
                     f"<div class=zoombar><button type=button data-zoom=in title='zoom in (+)'"
                     f">+</button><button type=button data-zoom=out title='zoom out (-)'>−"
                     f"</button><button type=button data-zoom=fit title='fit (0)'>fit</button>"
                     f"<span class=zoomval>100%</span></div><div class=viewer><div class=stage>"
                     f"<img alt='page {n}' src='/scans/{sid}/pages/{n}.png' loading=lazy "
                     f"draggable=false><div class=boxes>{boxes}</div></div></div></div>"
                     f"<div class=side><h3>Page {n}{conf}</h3><div class=ocr>{text}</div>"
                     f"<textarea class=fix id=fix-{n} aria-label='corrected text of page {n}'"
                     f" spellcheck=true>\n{html.escape(start)}</textarea>"
                     f"<button type=button data-save={n}>Save page {n}</button>"
                     f"{_corrected_note(n, fix)}</div></section>")

    def flag_item(f: dict) -> str:
        when = f"{f['created_at']:%Y-%m-%d %H:%M}"
        note = ': ' + html.escape(f['note']) if f['note'] else ''
        if f["resolved_at"]:
            by = f" by {html.escape(f['resolved_by'])}" if f.get("resolved_by") else ""
            state = f" (resolved{by}, {f['resolved_at']:%Y-%m-%d %H:%M})"
        else:
            state = (f" <button type=button data-resolve='{html.escape(f['flag_id'])}'>"
                     "resolve</button>")
        return (f"<li data-flag-id='{html.escape(f['flag_id'])}'>{html.escape(f['flag'])} by "
                f"{html.escape(f['editor'])}, {when}{note}{state}</li>")

    flags = "".join(flag_item(f) for f in scan["flags"])
    n_fixed = sum(1 for n in range(1, n_pages + 1) if n in fixes)
    if n_pages and n_fixed == n_pages:
        promote_box = ("<p id=promote-box>Every page is corrected. <button type=button "
                       "id=promote>Promote to edited</button></p>")
    else:
        promote_box = (f"<p id=promote-box>{n_fixed} of {n_pages} pages corrected; the book "
                       "can be promoted to edited once every page is. <button type=button "
                       "id=promote disabled>Promote to edited</button></p>")
    buttons = "".join(f"<button type=button data-flag='{f}'>{f.replace('_', ' ')}</button>"
                      for f in FLAGS)
    conf = _conf(scan["mean_confidence"], scan["reason"])
    if scan["mean_confidence"] is not None:
        conf = f"mean confidence {conf}"
    title = ""
    if scan.get("title"):
        title = f"<p class=book-title>{html.escape(scan['title'])}" + (
            f" · {html.escape(scan['author'])}" if scan.get("author") else "") + "</p>"
    def scan_link(target: str | None, rel: str, label: str) -> str:
        if not target:
            return f"<span id={rel}-scan class=muted>{label}</span>"
        return (f"<a id={rel}-scan rel={rel} href='/scan/{html.escape(target)}'>{label}</a>")

    nav = (f"<nav id=scan-nav>{scan_link(scan.get('prev_scan'), 'prev', '« previous scan')} "
           "<button type=button id=prev-page>‹ page</button><span id=page-pos>page 1 of "
           f"{n_pages}</span> <button type=button id=next-page>page ›</button> "
           f"{scan_link(scan.get('next_scan'), 'next', 'next scan »')} "
           "<label class=th>Mark words below confidence <input type=range id=threshold min=0 "
           f"max=100 step=1 value={LOW_CONFIDENCE:g}><output id=threshold-val>"
           f"{LOW_CONFIDENCE:g}</output></label> <span id=low-count></span></nav>")
    flag_keys = " · ".join(f"<kbd>{i}</kbd> {f.replace('_', ' ')}"
                           for i, f in enumerate(FLAGS, 1))
    legend = ("<p id=keys class=legend>Keys: <kbd>j</kbd>/<kbd>→</kbd> next page · "
              "<kbd>k</kbd>/<kbd>←</kbd> previous page · <kbd>n</kbd>/<kbd>p</kbd> next/"
              "previous scan · <kbd>+</kbd>/<kbd>-</kbd>/<kbd>0</kbd> zoom in/out/fit · "
              f"flag: {flag_keys} · <kbd>r</kbd> resolve the newest open flag · "
              "<kbd>Esc</kbd> leave a text box (keys do nothing while you type). "
              "Drag the image to pan, Ctrl+wheel to zoom; point at or click a word on "
              "either side to find it on the other.</p>")
    keys_js = "const FLAG_KEYS = " + json.dumps(
        {str(i): f for i, f in enumerate(FLAGS, 1)}) + ";\n"
    body = (f"<p><a href='/'>« queue</a></p><h1>Scan {sid}</h1>{title}"
            f"<p>Book {html.escape(scan['book_id'] or '?')} · "
            f"status <span id=scan-status class=status>{html.escape(scan['status'])}</span>"
            f" · {scan['n_pages'] or 0} pages · <span id=scan-conf>{conf}</span></p>"
            f"<form id=flagbar class=flagbar data-scan='{sid}'><label>Your name "
            f"<input id=editor name=editor size=12></label> <label>Note <input id=note "
            f"name=note size=40></label><br>{buttons}<span id=result role=status></span>"
            f"{nav}{legend}</form><div id=flags-box><ul id=flags>{flags}</ul></div>"
            f"{promote_box}{''.join(pages)}"
            f"<script>{COMMON_SCRIPT}{SCAN_SCRIPT}{keys_js}{VIEW_SCRIPT}</script>")
    return _page(f"Scan {scan['scan_id']}", body)


def _corrected_note(n: int, fix: dict | None) -> str:
    if fix is None:
        return f"<span class='corr none' id=corr-{n}>not corrected</span>"
    return (f"<span class=corr id=corr-{n} data-corrected>corrected by "
            f"{html.escape(fix['editor'])}, {fix['created_at']:%Y-%m-%d %H:%M:%S}</span>")


class ReviewHandler(BaseHTTPRequestHandler):
    """Routes: ``/`` (the queue; parameters in :class:`ingest.review_queue.QueueQuery`),
    ``/api/scans`` (the same as JSON), ``/scan/<id>``, ``/scans/<id>/pages/<n>.png``,
    ``POST /api/flags``, ``POST /api/resolve``, ``POST /api/correct`` (``{scan_id, page_no,
    text, editor}``) and ``POST /api/promote`` (``{scan_id, editor}``)."""

    data: ReviewData  # set on the subclass made by make_server
    allowed_hosts: frozenset[str] = frozenset()  # Host header values served (make_server)

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj, default=str).encode(), "application/json")

    def _html(self, status: int, body: bytes) -> None:
        self._send(status, body, "text/html; charset=utf-8")

    def _host_refused(self) -> bool:
        """Refuse (403) a request whose Host header does not name this server."""
        if self.headers.get("Host", "").lower() in self.allowed_hosts:
            return False
        self._json(HTTPStatus.FORBIDDEN, {"error": "unknown host: this page answers only "
                                                   "to its own address"})
        return True

    def do_GET(self) -> None:
        if self._host_refused():
            return None
        url = urlsplit(self.path)
        path = url.path
        try:
            if path in ("/", "/api/scans"):
                try:
                    query = QueueQuery.from_params(parse_qs(url.query, keep_blank_values=True))
                except CorpusError as e:
                    if path == "/":
                        return self._html(400, _page("Bad request", (
                            f"<p class=error>error: {html.escape(str(e))}</p>"
                            "<p><a href='/'>Back to the queue</a></p>")))
                    return self._json(400, {"error": str(e)})
                result = self.data.queue(query)
                if path == "/":
                    return self._html(200, render_queue(result))
                return self._json(200, result.to_json())
            if m := _ROUTE_SCAN.match(path):
                scan = self.data.scan(m.group(1))
                if scan is None:
                    return self._html(404, _page("Not found", "<p>No such scan.</p>"))
                return self._html(200, render_scan(scan))
            if m := _ROUTE_PAGE.match(path):
                png = self.data.page_png(m.group(1), int(m.group(2)))
                if png is None:
                    return self._send(404, b"no such page", "text/plain")
                return self._send(200, png, "image/png")
            return self._send(404, b"not found", "text/plain")
        except CorpusError as e:
            return self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            return None  # the browser left (moved to another scan before an image came)
        except Exception:  # a bug or a storage failure: say so without a traceback
            log.exception("GET %s failed", path)
            return self._send(500, b"server error (see the server log)", "text/plain")

    def do_POST(self) -> None:
        if self._host_refused():
            return None
        path = urlsplit(self.path).path
        if path not in ("/api/flags", "/api/resolve", "/api/correct", "/api/promote"):
            return self._send(404, b"not found", "text/plain")
        # Only this page may post: a JSON body (a cross-site form cannot send one without a
        # preflight) and, when the browser says where it comes from, this very host.
        origin = self.headers.get("Origin")
        host = self.headers.get("Host", "")
        if origin and urlsplit(origin).netloc.lower() != host.lower():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "cross-site request refused"})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._json(415, {"error": "send JSON"})
        try:
            limit = 1024 * 1024 if path == "/api/correct" else 64 * 1024  # a page of text
            length = min(int(self.headers.get("Content-Length", 0)), limit)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("send a JSON object")
            editor = str(body.get("editor") or "").strip()
            if path == "/api/flags":
                scan_id = str(body.get("scan_id", ""))
                flag_id = add_flag(self.data.lakehouse, scan_id,
                                   flag=str(body.get("flag", "")), editor=editor,
                                   note=str(body.get("note") or "") or None)
                status = current_status(self.data.lakehouse, scan_id)
                return self._json(201, {"flag_id": flag_id, "status": status})
            if path == "/api/correct":
                saved = save_correction(self.data.lakehouse, str(body.get("scan_id", "")),
                                        body.get("page_no"), body.get("text"), editor=editor)
                return self._json(201, {"correction_id": saved.correction_id,
                                        "page_no": saved.page_no, "editor": saved.editor,
                                        "created_at": saved.created_at.isoformat(),
                                        "written": saved.written, "note": saved.note})
            if path == "/api/promote":
                done = promote(self.data.lakehouse, str(body.get("scan_id", "")),
                               editor=editor)
                return self._json(200, {"promotion_id": done.promotion_id,
                                        "book_id": done.book_id, "n_pages": done.n_pages,
                                        "n_chars": done.n_chars})
            if not editor:
                raise ValueError("Resolving a flag needs the editor's name.")
            flag_id = str(body.get("flag_id", ""))
            status = resolve_flag(self.data.lakehouse, flag_id, editor=editor)
            return self._json(200, {"flag_id": flag_id, "status": status})
        except (ValueError, CorpusError) as e:
            return self._json(400, {"error": str(e)})
        except Exception:  # a bug or a storage failure: say so, never drop the request
            log.exception("%s request failed", path)
            return self._json(500, {"error": "not recorded (server error); try again"})


def make_server(lakehouse: Lakehouse, host: str = "127.0.0.1", port: int = 8765
                ) -> ThreadingHTTPServer:
    """The review server (not started); ``port=0`` picks a free port."""
    handler = type("BoundReviewHandler", (ReviewHandler,), {"data": ReviewData(lakehouse)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    handler.allowed_hosts = allowed_hosts(host, server.server_address[1])
    return server


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values the server answers: the loopback names and the configured
    host, each with the port (a browser leaves out port 80)."""
    names = {"localhost", "127.0.0.1", "[::1]",
             f"[{host.strip('[]')}]" if ":" in host else host}
    out = {f"{n.lower()}:{port}" for n in names}
    return frozenset(out | ({n.lower() for n in names} if port == 80 else set()))


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run a server in a background thread (tests, the demo)."""
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
