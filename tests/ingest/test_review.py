"""The editors' review page: served for real, driven in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.review import make_server, marked_text, serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(small_share, tmp_path_factory):
    lh = Lakehouse(str(tmp_path_factory.mktemp("review") / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    sids = sorted(lh.read("scans").column("scan_id").to_pylist())
    run_ocr(lh, config=OcrConfig(workers=2), scan_ids=sids[:2])  # the rest stay "new"
    server = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(server)
    yield lh, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _post(url: str, payload: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_marked_text_marks_low_confidence_words():
    words = json.dumps([["Tbe", 41.0, 0, 0, 1, 1], ["cat", 96.0, 0, 0, 1, 1],
                        ["<sat>", 30.0, 0, 0, 1, 1]])
    out = marked_text("Tbe cat\n<sat>", words)
    assert out == ('<mark class="low" title="confidence 41">Tbe</mark> cat\n'
                   '<mark class="low" title="confidence 30">&lt;sat&gt;</mark>')


def test_only_registered_pages_are_served(served):
    lh, base = served
    sid = lh.read("scans").column("scan_id")[0].as_py()
    with urllib.request.urlopen(f"{base}/scans/{sid}/pages/1.png", timeout=60) as r:
        assert r.headers["Content-Type"] == "image/png" and r.read(8) == b"\x89PNG\r\n\x1a\n"
    for path in [f"/scans/{sid}/pages/99.png", "/scans/nope/pages/1.png",
                 "/scans/../../etc/passwd", "/scans/%2e%2e/pages/1.png", "/../etc/passwd"]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + path, timeout=60)
        assert e.value.code == 404, path


def test_concurrent_flags_are_all_kept(served):
    lh, base = served
    sid = lh.read("scans").column("scan_id")[-1].as_py()
    before = lh.read("flags").num_rows if lh.exists("flags") else 0
    results: list[int] = []

    def flag(i: int) -> None:
        status, _ = _post(f"{base}/api/flags", {"scan_id": sid, "flag": "needs_edit",
                                                "note": f"editor {i}", "editor": f"ed{i}"})
        results.append(status)

    threads = [threading.Thread(target=flag, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 8
    notes = {f["note"] for f in lh.read("flags").to_pylist()}
    assert {f"editor {i}" for i in range(8)} <= notes
    assert lh.read("flags").num_rows == before + 8
    # refused: another site's page posting here, and a body that is not JSON
    status, body = _post(f"{base}/api/flags", {"scan_id": sid, "flag": "ok", "editor": "x"},
                         {"Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body["error"]
    status, body = _post(f"{base}/api/flags", {"scan_id": "nope", "flag": "ok", "editor": "x"})
    assert status == 400 and "No scan" in body["error"]


def test_editor_flags_a_scan_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    lh, base = served
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(base + "/")
        rows = page.locator("#queue tr")
        assert rows.count() == 1 + lh.read("scans").num_rows
        # the queue puts new scans first; open the first OCR'd one instead
        done = page.locator("#queue tr", has_text="ocr_done").first
        sid = done.locator("a").inner_text()
        done.locator("a").click()
        page.wait_for_selector("#flagbar")
        page.wait_for_function("() => { const i = document.querySelector('.page img');"
                               " return i.complete && i.naturalWidth > 0; }", timeout=60000)
        assert page.locator(".page img").first.evaluate("img => img.naturalWidth") > 100
        assert page.locator(".ocr").first.inner_text().strip()
        page.fill("#editor", "Ana")
        page.fill("#note", "page 2 is cut off")
        page.click("button[data-flag=rescan]")
        page.wait_for_selector("#result:has-text('Flagged as rescan')")
        assert page.locator("#scan-status").inner_text() == "flagged"
        browser.close()
    rows = [f for f in lh.read("flags").to_pylist() if f["scan_id"] == sid]
    assert [(f["flag"], f["editor"], f["note"]) for f in rows] == [
        ("rescan", "Ana", "page 2 is cut off")]
    assert {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}[sid] == "flagged"


def _get(base: str, path: str, host: str | None, method: str = "GET",
         headers: dict | None = None) -> int:
    """Status of a request sent with a forged ``Host`` header (None: no Host at all); a
    POST carries a flag on an unknown scan (400 when it gets through)."""
    import http.client

    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = b""
    headers = dict(headers or {})
    if method == "POST":
        body = json.dumps({"scan_id": "nope", "flag": "ok", "editor": "x"}).encode()
        headers.update({"Content-Type": "application/json", "Content-Length": str(len(body))})
    conn.putrequest(method, path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders(body or None)
    status = conn.getresponse().status
    conn.close()
    return status


def test_requests_must_name_this_server_in_host(served):
    base = served[1]
    port = base.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}",
                 f"[::1]:{port}"):
        assert _get(base, "/", host) == 200, host
        assert _get(base, "/api/flags", host, "POST") == 400, host  # reached: no such scan
    # DNS rebinding: another site's name pointed at 127.0.0.1, a wrong port, no Host
    for host in (f"evil.example:{port}", "evil.example", "127.0.0.1", "127.0.0.1:1",
                 f"localhost.evil.example:{port}", None):
        assert _get(base, "/", host) == 403, host
        assert _get(base, "/api/scans", host) == 403, host
        assert _get(base, "/api/flags", host, "POST") == 403, host
    # the Host is ours but the page posting is not
    assert _get(base, "/api/flags", f"127.0.0.1:{port}", "POST",
                {"Origin": f"http://localhost:{port}"}) == 403
    assert _get(base, "/api/flags", f"localhost:{port}", "POST",
                {"Origin": f"http://localhost:{port}"}) == 400
    # the configured host is served too
    from ingest.review import allowed_hosts

    assert allowed_hosts("review.internal", 8765) >= {"review.internal:8765", "[::1]:8765"}
    assert "[::1]:80" in allowed_hosts("::1", 80) and "localhost" in allowed_hosts("x", 80)


def test_page_images_are_the_pages_ocr_reads(small_share, tmp_path):
    """A backup copy of a page image in a folder scan is a duplicate: neither OCR'd nor
    shown, and page n on the review page is the image OCR read as page n."""
    import pyarrow as pa

    from catalog import TABLES
    from ingest.ocr import plan_pages
    from ingest.review import preview_png

    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    folder = next(p for p in (share / "Scans").rglob("*") if p.is_dir()
                  and any(p.glob("page_*.jpg")))
    first = sorted(folder.glob("page_*.jpg"))[0]
    shutil.copy2(first, folder / f"Copy of {first.name}")  # sorts before every page
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, share, workers=1)
    source = folder.relative_to(share).as_posix()
    scan = next(s for s in lh.read("scans").to_pylist() if s["source"] == source)
    files = lh.read("files")
    assert sum(f["status"] != "ok" for f in files.to_pylist()
               if f["path"].startswith(source + "/")) == 1
    tasks, _ = plan_pages(pa.Table.from_pylist([scan], schema=TABLES["scans"].schema),
                          files, set(), {})
    assert [t.page_no for t in tasks] == list(range(1, scan["n_pages"] + 1)) and \
        len(tasks) >= 2
    server = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(server)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        shown = []
        for t in tasks:
            with urllib.request.urlopen(f"{base}/scans/{scan['scan_id']}/pages/{t.page_no}.png",
                                        timeout=60) as r:
                shown.append(r.read())
            assert shown[-1] == preview_png(lh.store.get_bytes(t.blob_key), None), t.page_no
        assert len(set(shown)) == len(shown)  # every page its own image
    finally:
        server.shutdown()
        server.server_close()
