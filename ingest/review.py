"""`corpus review`: the editors' review page for new scans.

A small web application on the standard library's threading HTTP server: a queue of scans
(new first, lowest OCR confidence first) and, for one scan, its page images beside the OCR
text with low-confidence words marked, and buttons to flag it. It binds to 127.0.0.1 by
default. Page images are looked up by scan id and page number in the catalog and rendered
from the stored bytes: nothing in a request names a file. The pages of a folder scan are
the images OCR reads (:func:`ingest.ocr.scan_page_files`), so an image and the text beside
it come from the same file. Flags are appended to the ``flags`` table, so editors flagging
at once never lose a flag.

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
from urllib.parse import urlsplit

import pyarrow.compute as pc

from catalog import CorpusError, Lakehouse, TableNotFoundError
from ingest.flags import FLAGS, add_flag
from ingest.ocr import blob_page_counts, scan_page_files, scan_pages
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
.pages{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1em}
.page img{width:100%;border:1px solid #ccc;background:#fff}
.ocr{white-space:pre-wrap;background:#fff;border:1px solid #ccc;padding:.6em;font-family:serif}
mark.low{background:#ffd27f}.flagbar{position:sticky;top:0;background:#eef;padding:.6em;
border:1px solid #ccd;margin-bottom:1em}button{margin-right:.4em;padding:.35em .8em}
.status{font-weight:600}#result{margin-left:1em}
"""


class ReviewData:
    """What the pages show, read from the catalog (fresh on every request)."""

    def __init__(self, lakehouse: Lakehouse):
        self.lakehouse = lakehouse

    def queue(self) -> list[dict]:
        try:
            scans = self.lakehouse.read("scans").to_pylist()
        except TableNotFoundError:
            return []
        flags = self._flags()
        for s in scans:
            s["open_flags"] = sum(1 for f in flags
                                  if f["scan_id"] == s["scan_id"] and f["resolved_at"] is None)
        order = {"new": 0, "ocr_done": 1, "flagged": 2, "failed": 3, "accepted": 4}
        return sorted(scans, key=lambda s: (order.get(s["status"], 9),
                                            s["mean_confidence"] if s["mean_confidence"]
                                            is not None else -1, s["scan_id"]))

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
        scan["flags"] = sorted((f for f in self._flags() if f["scan_id"] == scan_id),
                               key=lambda f: f["created_at"], reverse=True)
        return scan

    def page_png(self, scan_id: str, page_no: int) -> bytes | None:
        """The page as PNG, or None when the scan or page is not registered."""
        scan = self.scan(scan_id)
        if scan is None or not 1 <= page_no <= (scan["n_pages"] or 0):
            return None
        page_files = scan_page_files(scan["source"], self.lakehouse.read("files").to_pylist())
        pages = scan_pages(page_files, blob_page_counts(self.lakehouse.store, page_files))
        if page_no > len(pages):
            return None
        key, pdf_page, frame = pages[page_no - 1]
        return _cached_preview(self.lakehouse, key, pdf_page, frame)


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


def marked_text(text: str, words_json: str | None) -> str:
    """The page text as HTML, words below :data:`LOW_CONFIDENCE` in ``<mark class=low>``.

    The OCR text was built from Tesseract's words in order, so its tokens and the word list
    line up one to one.
    """
    words = json.loads(words_json or "[]")
    out, i = [], 0
    for token in re.split(r"(\s+)", text or ""):
        if not token or token.isspace():
            out.append(html.escape(token))
            continue
        conf = words[i][1] if i < len(words) and words[i][0] == token else None
        i += 1
        esc = html.escape(token)
        if conf is not None and 0 <= conf < LOW_CONFIDENCE:
            out.append(f'<mark class="low" title="confidence {conf:.0f}">{esc}</mark>')
        else:
            out.append(esc)
    return "".join(out)


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style><header><a href='/'>Corpus scans</a></header>"
            f"<main>{body}</main></html>").encode()


def _conf(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def render_queue(scans: list[dict]) -> bytes:
    """The queue page."""
    rows = "".join(
        f"<tr><td><a href='/scan/{html.escape(s['scan_id'])}'>{html.escape(s['scan_id'])}</a>"
        f"</td><td>{html.escape(s['book_id'] or '')}</td>"
        f"<td class=status>{html.escape(s['status'])}</td><td>{s['n_pages'] or 0}</td>"
        f"<td>{_conf(s['mean_confidence'])}</td><td>{s['open_flags']}</td></tr>"
        for s in scans)
    return _page("Scans", "<h1>Scans to review</h1><p>New scans first, then the lowest OCR "
                 "confidence.</p><table id=queue><tr><th>scan</th><th>book</th><th>status"
                 "</th><th>pages</th><th>confidence</th><th>open flags</th></tr>"
                 f"{rows}</table>")


FLAG_SCRIPT = """
const form = document.getElementById('flagbar');
const who = document.getElementById('editor');
who.value = localStorage.getItem('corpus-editor') || '';
form.addEventListener('click', async (ev) => {
  const flag = ev.target.dataset.flag;
  if (!flag) return;
  ev.preventDefault();
  const result = document.getElementById('result');
  if (!who.value.trim()) { result.textContent = 'Enter your name first.'; return; }
  localStorage.setItem('corpus-editor', who.value.trim());
  const res = await fetch('/api/flags', {method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({scan_id: form.dataset.scan, flag: flag,
                          note: document.getElementById('note').value, editor: who.value})});
  const body = await res.json();
  result.textContent = res.ok ? `Flagged as ${flag} (flag ${body.flag_id}).` : body.error;
  if (res.ok) document.getElementById('scan-status').textContent = body.status;
});
"""


def render_scan(scan: dict) -> bytes:
    """One scan: page images beside their OCR text, flag buttons, earlier flags."""
    sid = html.escape(scan["scan_id"])
    texts = {p["page_no"]: p for p in scan["pages"]}
    pages = []
    for n in range(1, (scan["n_pages"] or 0) + 1):
        p = texts.get(n)
        text = (marked_text(p["text"], p["words"]) if p else
                "<em>not OCR'd yet: run corpus ocr</em>")
        conf = f" · confidence {_conf(p['mean_confidence'])}" if p else ""
        pages.append(f"<section class=pages><div class=page><img alt='page {n}' "
                     f"src='/scans/{sid}/pages/{n}.png' loading=lazy></div><div><h3>Page {n}"
                     f"{conf}</h3><div class=ocr>{text}</div></div></section>")
    flags = "".join(
        f"<li>{html.escape(f['flag'])} by {html.escape(f['editor'])}, "
        f"{f['created_at']:%Y-%m-%d %H:%M}{': ' + html.escape(f['note']) if f['note'] else ''}"
        f"{' (resolved)' if f['resolved_at'] else ''}</li>" for f in scan["flags"])
    buttons = "".join(f"<button type=button data-flag='{f}'>{f.replace('_', ' ')}</button>"
                      for f in FLAGS)
    body = (f"<h1>Scan {sid}</h1><p>Book {html.escape(scan['book_id'] or '?')} · "
            f"status <span id=scan-status class=status>{html.escape(scan['status'])}</span>"
            f" · {scan['n_pages'] or 0} pages · mean confidence "
            f"{_conf(scan['mean_confidence'])}</p>"
            f"<form id=flagbar class=flagbar data-scan='{sid}'><label>Your name "
            f"<input id=editor name=editor size=12></label> <label>Note <input id=note "
            f"name=note size=40></label><br>{buttons}<span id=result role=status></span>"
            f"</form><ul id=flags>{flags}</ul>{''.join(pages)}<script>{FLAG_SCRIPT}</script>")
    return _page(f"Scan {scan['scan_id']}", body)


class ReviewHandler(BaseHTTPRequestHandler):
    """Routes: ``/``, ``/scan/<id>``, ``/scans/<id>/pages/<n>.png``, ``POST /api/flags``."""

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
        path = urlsplit(self.path).path
        try:
            if path == "/":
                return self._send(200, render_queue(self.data.queue()), "text/html; charset=utf-8")
            if m := _ROUTE_SCAN.match(path):
                scan = self.data.scan(m.group(1))
                if scan is None:
                    return self._send(404, _page("Not found", "<p>No such scan.</p>"),
                                      "text/html; charset=utf-8")
                return self._send(200, render_scan(scan), "text/html; charset=utf-8")
            if m := _ROUTE_PAGE.match(path):
                png = self.data.page_png(m.group(1), int(m.group(2)))
                if png is None:
                    return self._send(404, b"no such page", "text/plain")
                return self._send(200, png, "image/png")
            if path == "/api/scans":
                return self._json(200, {"scans": self.data.queue()})
            return self._send(404, b"not found", "text/plain")
        except CorpusError as e:
            return self._json(400, {"error": str(e)})

    def do_POST(self) -> None:
        if self._host_refused():
            return None
        if urlsplit(self.path).path != "/api/flags":
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
            length = min(int(self.headers.get("Content-Length", 0)), 64 * 1024)
            body = json.loads(self.rfile.read(length) or b"{}")
            flag_id = add_flag(self.data.lakehouse, str(body.get("scan_id", "")),
                               flag=str(body.get("flag", "")),
                               editor=str(body.get("editor", "")),
                               note=str(body.get("note") or "") or None)
        except (ValueError, CorpusError) as e:
            return self._json(400, {"error": str(e)})
        except Exception:  # a bug or a storage failure: say so, never drop the request
            log.exception("flag request failed")
            return self._json(500, {"error": "the flag was not recorded (server error); "
                                             "try again"})
        status = current_status(self.data.lakehouse, str(body.get("scan_id", "")))
        return self._json(201, {"flag_id": flag_id, "status": status})


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
