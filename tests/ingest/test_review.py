"""The editors' review page: served for real, driven in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from catalog import ConfigError, Lakehouse
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.review import make_server, serve_in_thread
from tests.browser import launch
from tests.helpers import N_SYNTH, READY_SCANS, synthetic_queue, with_windows


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


def test_editor_flags_a_scan_in_a_real_browser(served, tmp_path):
    from playwright.sync_api import sync_playwright

    lh, base = served
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto(base + "/")
        rows = page.locator("#queue-body tr")
        assert rows.count() == lh.read("scans").num_rows
        # no trained run: the reading-level column says why it is empty
        assert "no trained run yet" in page.locator("#level-info").inner_text()
        assert set(page.locator("#queue-body td.level").all_inner_texts()) == {
            "no trained run yet"}
        shot = tmp_path / "queue-share.png"
        page.screenshot(path=str(shot))
        assert _not_blank(shot, page.locator("#queue").bounding_box()) > 20
        # a scan without OCR says so (no "mean confidence" followed by nothing)
        new = page.locator("#queue-body tr", has_text="not OCR'd yet").first
        new.locator("a").click()
        page.wait_for_selector("#flagbar")
        assert page.locator("#scan-conf").inner_text() == "not OCR'd yet"
        assert "mean confidence" not in page.inner_text("main")
        page.goto(base + "/")
        done = page.locator("#queue-body tr", has_text="ocr_done").first
        sid = done.locator("a").inner_text()
        done.locator("a").click()
        page.wait_for_selector("#flagbar")
        page.wait_for_function("() => { const i = document.querySelector('.page img');"
                               " return i.complete && i.naturalWidth > 0; }", timeout=60000)
        assert page.locator(".page img").first.evaluate("img => img.naturalWidth") > 100
        assert page.locator(".ocr").first.inner_text().strip()
        page.evaluate("window.__sameDocument = true")
        page.fill("#editor", "Ana")
        page.fill("#note", "page 2 is cut off")
        page.click("button[data-flag=rescan]")
        page.wait_for_selector("#result:has-text('Flagged as rescan')")
        assert page.locator("#scan-status").inner_text() == "flagged"
        # the flag is listed at once, with a button to resolve it
        assert page.input_value("#note") == ""
        item = page.locator("#flags li", has_text="page 2 is cut off")
        assert "rescan by Ana" in item.inner_text()
        page.screenshot(path=str(tmp_path / "scan.png"))
        item.locator("button[data-resolve]").click()
        page.wait_for_selector("#flags li:has-text('resolved by Ana')")
        assert page.locator("#scan-status").inner_text() == "ocr_done"
        assert page.evaluate("window.__sameDocument") is True
        browser.close()
    rows = [f for f in lh.read("flags").to_pylist() if f["scan_id"] == sid]
    assert [(f["flag"], f["editor"], f["note"], f["resolved_by"]) for f in rows] == [
        ("rescan", "Ana", "page 2 is cut off", "Ana")]
    assert rows[0]["resolved_at"] >= rows[0]["created_at"]
    assert {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}[sid] == "ocr_done"


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
        assert _get(base, "/api/resolve", host, "POST") == 400, host  # reached: no such flag
    # DNS rebinding: another site's name pointed at 127.0.0.1, a wrong port, no Host
    for host in (f"evil.example:{port}", "evil.example", "127.0.0.1", "127.0.0.1:1",
                 f"localhost.evil.example:{port}", None):
        assert _get(base, "/", host) == 403, host
        assert _get(base, "/api/scans", host) == 403, host
        assert _get(base, "/api/flags", host, "POST") == 403, host
        assert _get(base, "/api/resolve", host, "POST") == 403, host
    # the Host is ours but the page posting is not
    assert _get(base, "/api/flags", f"127.0.0.1:{port}", "POST",
                {"Origin": f"http://localhost:{port}"}) == 403
    assert _get(base, "/api/resolve", f"127.0.0.1:{port}", "POST",
                {"Origin": f"http://evil.example:{port}"}) == 403
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


# ---- the queue: filters, sort and pages in SQL; flags from the page; reading levels -------

def _ids(result) -> list[str]:
    return [r["scan_id"] for r in result.rows]


def test_queue_query_filters_sorts_and_pages_in_sql(tmp_path):
    from ingest.flags import add_flag
    from ingest.review_queue import QueueQuery, query_queue

    lh = synthetic_queue(tmp_path / "lh")
    add_flag(lh, "scan00007", flag="needs_edit", editor="Ana")
    add_flag(lh, "scan00009", flag="ok", editor="Ben")
    first = query_queue(lh)
    assert first.total == N_SYNTH and len(first.rows) == 50 and first.pages == 3
    assert first.counts == {"new": 65, "ocr_done": 32, "failed": 31, "flagged": 1,
                            "accepted": 1}
    # the default order is the share's: a flagged scan is where it was
    assert _ids(first)[:10] == [f"scan{i:05d}" for i in range(10)]
    assert first.rows[7]["status"] == "flagged" and first.rows[7]["open_flags"] == 1
    assert [f["flag"] for f in first.rows[7]["open_flag_list"]] == ["needs_edit"]
    last = query_queue(lh, QueueQuery(page=3))
    assert len(last.rows) == N_SYNTH - 100 and _ids(last)[-1] == f"scan{N_SYNTH - 1:05d}"
    assert not set(_ids(first)) & set(_ids(last))
    assert query_queue(lh, QueueQuery(page=9)).rows == []
    # filters
    assert query_queue(lh, QueueQuery(status="ocr_done")).total == 32
    assert _ids(query_queue(lh, QueueQuery(flag="any"))) == ["scan00007", "scan00009"]
    assert _ids(query_queue(lh, QueueQuery(flag="needs_edit"))) == ["scan00007"]
    assert query_queue(lh, QueueQuery(flag="none")).total == N_SYNTH - 2
    conf = query_queue(lh, QueueQuery(min_conf=90, max_conf=95, per_page=500))
    assert conf.total and all(90 <= r["mean_confidence"] <= 95 for r in conf.rows)
    # search: title, author, hyphenated ISBN, scan id, the title page; input is data, not SQL
    assert _ids(query_queue(lh, QueueQuery(q="moby"))) == ["scan00002"]
    assert _ids(query_queue(lh, QueueQuery(q="austen"))) == ["scan00006", "scan00010"]
    assert _ids(query_queue(lh, QueueQuery(q="978-0-00000-0006"))) == ["scan00006"]
    assert _ids(query_queue(lh, QueueQuery(q="SCAN00120"))) == ["scan00120"]
    willows = query_queue(lh, QueueQuery(q="willows")).rows
    assert [(r["title"], r["title_from_page"]) for r in willows] == [
        ("THE WIND IN THE WILLOWS / Kenneth Grahame", True)]
    for q in ("'; DROP TABLE scans; --", "%", "_", "\\"):
        assert query_queue(lh, QueueQuery(q=q)).total == 0, q
    # sorting, both ways, and combined with a filter and a page
    by_conf = query_queue(lh, QueueQuery(status="ocr_done", sort="confidence", dir="desc",
                                         per_page=5, page=2))
    confs = [r["mean_confidence"] for r in by_conf.rows]
    assert confs == sorted(confs, reverse=True) and by_conf.total == 32
    top = query_queue(lh, QueueQuery(status="ocr_done", sort="confidence", dir="desc",
                                     per_page=5)).rows
    assert top[-1]["mean_confidence"] >= confs[0]
    titled = _ids(query_queue(lh, QueueQuery(sort="title", per_page=4)))
    assert titled == ["scan00006", "scan00002", "scan00010", "scan00014"]  # Emma, Moby, ...
    # no trained run: every level cell says why
    assert first.level_note == "no trained run yet"
    assert {r["level_note"] for r in first.rows} == {"no trained run yet"}


def test_queue_query_bad_parameters_are_plain_errors():
    from ingest.review_queue import QueueQuery

    ok = QueueQuery.from_params({"status": ["new"], "min_conf": ["10"], "max_conf": [""],
                                 "q": [" emma "], "sort": ["title"], "dir": ["desc"],
                                 "page": ["2"]})
    assert ok == QueueQuery(status="new", min_conf=10.0, q="emma", sort="title", dir="desc",
                            page=2)
    assert ok.url(page=3) == "/?status=new&min_conf=10&q=emma&sort=title&dir=desc&page=3"
    bad = [({"status": ["done"]}, "status: expected one of"),
           ({"flag": ["bogus"]}, "flag: expected one of"),
           ({"min_conf": ["abc"]}, "min_conf: expected a number"),
           ({"max_conf": ["nan"]}, "max_conf: expected a confidence"),
           ({"min_conf": ["80"], "max_conf": ["20"]}, "swap them"),
           ({"sort": ["status; DROP TABLE scans"]}, "sort: expected one of"),
           ({"dir": ["up"]}, "dir: expected asc or desc"),
           ({"page": ["0"]}, "page: expected"), ({"page": ["-1"]}, "page: expected"),
           ({"page": ["1", "2"]}, "give it once"), ({"q": ["x" * 201]}, "200 characters"),
           ({"order": ["x"]}, "unknown parameter")]
    for params, message in bad:
        with pytest.raises(ConfigError, match=message):
            QueueQuery.from_params(params)


def test_queue_shows_the_newest_finished_runs_prediction(tmp_path):
    from ingest.review_queue import QueueQuery, query_queue

    lh = synthetic_queue(tmp_path / "lh", 20, runs=True)
    res = query_queue(lh)
    assert (res.run_id, res.target, res.level_note) == ("new", "bt_easiness", None)
    rows = {r["scan_id"]: r for r in res.rows}
    assert (rows["scan00002"]["pred_ocr"], rows["scan00002"]["pred_edited"],
            rows["scan00002"]["pred_diff"]) == (-0.75, -0.5, 0.25)
    assert (rows["scan00006"]["pred_ocr"], rows["scan00006"]["pred_edited"]) == (1.25, None)
    assert rows["scan00003"]["level_note"] == "no OCR text yet"
    assert rows["scan00010"]["level_note"] == "not scored by run new"
    by_level = query_queue(lh, QueueQuery(sort="level", dir="desc"))
    assert _ids(by_level)[:2] == ["scan00006", "scan00002"]


def test_queue_filters_scans_that_can_be_scored_without_editing(tmp_path):
    from ingest.review import render_queue
    from ingest.review_queue import QueueQuery, query_queue

    lh = with_windows(synthetic_queue(tmp_path / "lh", 20, runs=True))
    res = query_queue(lh, QueueQuery(ready=True))
    assert _ids(res) == READY_SCANS and res.total == 2
    assert [(r["n_windows"], round(r["pred_se"], 3)) for r in res.rows] == [(9, 0.05),
                                                                             (16, 0.1)]
    everything = {r["scan_id"]: r for r in query_queue(lh, QueueQuery(per_page=500)).rows}
    assert sorted(s for s, r in everything.items() if r["ready"]) == READY_SCANS
    # the newest prediction of a text is shown (the one judged), not a mean with eval's
    assert everything["scan00002"]["pred_ocr"] == -0.70
    assert everything["scan00002"]["pred_diff"] == pytest.approx(0.20)
    page = render_queue(res).decode()
    assert page.count("can be scored without editing</span>") == 2
    assert "name=ready value=1 checked" in page
    assert QueueQuery.from_params({"ready": ["1"]}) == QueueQuery(ready=True)
    assert QueueQuery.from_params({"ready": ["0"]}) == QueueQuery()
    assert QueueQuery(ready=True).url(page=2) == "/?page=2&ready=1"
    for bad in ("yes", "2", "true"):
        with pytest.raises(ConfigError, match="ready: expected 1"):
            QueueQuery.from_params({"ready": [bad]})
    # no run with window counts: nothing is ready, nothing breaks
    assert query_queue(synthetic_queue(tmp_path / "bare", 5), QueueQuery(ready=True)).total == 0


def test_queue_without_any_table_yet(tmp_path):
    from ingest.review_queue import query_queue

    res = query_queue(Lakehouse(str(tmp_path / "empty")))
    assert (res.total, res.rows, res.counts) == (0, [], {})
    assert res.level_note.startswith("no trained run yet")


@pytest.fixture
def synth_server(tmp_path):
    lh = synthetic_queue(tmp_path / "lh", runs=True)
    server = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(server)
    yield lh, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _not_blank(png_path, box: dict | None = None) -> int:
    """Distinct colours in the screenshot (in ``box``, a Playwright bounding box)."""
    from PIL import Image

    img = Image.open(png_path).convert("RGB")
    if box:
        img = img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                        int(box["y"] + min(box["height"], img.height - box["y"]))))
    return len(img.getcolors(maxcolors=1 << 20) or [])


def test_queue_filters_pages_and_flags_in_a_real_browser(synth_server, tmp_path):
    from playwright.sync_api import sync_playwright

    lh, base = synth_server
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base + "/")
        body = page.locator("#queue-body tr")
        assert body.count() == 50
        counts = page.locator("#counts").inner_text()
        assert "all 130" in counts and "new 66" in counts and "ocr_done 32" in counts
        # the reading level: metric named, OCR value, edited value and the difference
        assert "BT easiness, higher = easier" in page.locator("#queue thead").inner_text()
        moby = page.locator("#row-scan00002")
        assert "Moby-Dick" in moby.inner_text() and "Herman Melville" in moby.inner_text()
        level = moby.locator("td.level").inner_text()
        assert "-0.75" in level and "edited -0.50" in level and "+0.25" in level
        assert "from the title page" in page.locator("#row-scan00014").inner_text()
        assert page.locator("#row-scan00001 td.conf").inner_text() == "not OCR'd yet"
        shot = tmp_path / "queue.png"
        page.screenshot(path=str(shot), full_page=True)
        assert _not_blank(shot, page.locator("#queue").bounding_box()) > 20
        # paginate
        page.click("#pager a[rel=next]")
        page.wait_for_url("**page=2")
        assert page.locator("#queue-body tr").first.get_attribute("data-scan") == "scan00050"
        assert "51–100 of 130" in page.locator("#pager").inner_text()
        # filter by status with the form, then search
        page.goto(base + "/")
        page.select_option("select[name=status]", "failed")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**status=failed**")
        statuses = page.locator("#queue-body td.status").all_inner_texts()
        assert len(statuses) == 32 and set(statuses) == {"failed"}
        page.fill("input[name=q]", "austen")
        page.select_option("select[name=status]", "")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**q=austen**")
        assert page.locator("#queue-body tr").evaluate_all(
            "rows => rows.map(r => r.dataset.scan)") == ["scan00006", "scan00010"]
        page.screenshot(path=str(tmp_path / "queue-search.png"))
        # a bad parameter is a plain 400
        resp = page.goto(base + "/?min_conf=lots")
        assert resp.status == 400 and "error: min_conf" in page.inner_text("main")

        # flag then resolve from the queue: no reload, the row keeps its place
        page.goto(base + "/")
        page.evaluate("window.__sameDocument = true")
        order = page.locator("#queue-body tr").evaluate_all("rs => rs.map(r => r.dataset.scan)")
        row = page.locator("#row-scan00005")
        row.locator("select").select_option("needs_edit")
        row.locator("button[data-flag-row]").click()
        page.wait_for_selector("#result:has-text('Enter your name first')")
        page.fill("#editor", "Ana")
        row.locator("button[data-flag-row]").click()
        page.wait_for_selector("#row-scan00005 .chip:has-text('needs_edit')")
        assert page.locator("#row-scan00005 td.status").inner_text() == "flagged"
        assert "flagged 1" in page.locator("#counts").inner_text()
        shot = tmp_path / "queue-flagged.png"
        page.screenshot(path=str(shot))
        assert _not_blank(shot, page.locator("#row-scan00005").bounding_box()) > 8
        assert page.locator("#queue-body tr").evaluate_all(
            "rs => rs.map(r => r.dataset.scan)") == order
        page.locator("#row-scan00005 button[data-resolve]").click()
        page.wait_for_selector("#row-scan00005 td.flags:not(:has(.chip))")
        assert page.locator("#row-scan00005 td.status").inner_text() == "new"
        assert page.locator("#queue-body tr").evaluate_all(
            "rs => rs.map(r => r.dataset.scan)") == order
        assert page.evaluate("window.__sameDocument") is True  # never reloaded
        # the editor's name is remembered by this browser
        page.reload()
        assert page.input_value("#editor") == "Ana"
        browser.close()
    flags = [f for f in lh.read("flags").to_pylist() if f["scan_id"] == "scan00005"]
    assert len(flags) == 1
    f = flags[0]
    assert (f["flag"], f["editor"], f["resolved_by"]) == ("needs_edit", "Ana", "Ana")
    assert f["created_at"] is not None and f["resolved_at"] >= f["created_at"]
    status = {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}
    assert status["scan00005"] == "new"


def test_thousands_of_scans_one_page_at_a_time(tmp_path):
    import time

    from ingest.review_queue import QueueQuery, query_queue

    lh = synthetic_queue(tmp_path / "lh", 5000)
    t = time.perf_counter()
    res = query_queue(lh, QueueQuery(page=61, per_page=50, q="scan0", sort="scan",
                                     dir="desc"))
    took = time.perf_counter() - t
    assert res.total == 5000 and len(res.rows) == 50 and res.pages == 100
    assert res.rows[0]["scan_id"] == f"scan{5000 - 3000 - 1:05d}"
    assert took < 10, took
    server = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/scans?page=50&status=new"
        with urllib.request.urlopen(url, timeout=60) as r:
            body = json.loads(r.read())
        assert body["total"] == 2500 and len(body["scans"]) == 50 and body["pages"] == 50
        assert body["level_note"].startswith("no trained run yet")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.replace("status=new", "sort=nope"), timeout=60)
        assert e.value.code == 400 and "sort: expected one of" in json.loads(
            e.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()
