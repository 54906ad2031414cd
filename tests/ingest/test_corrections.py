"""Editors' corrections of OCR pages: the pure assembly, the writer and its lineage,
promotion to edited, concurrent saves, the JSON endpoints, and the scan view in Chromium."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from catalog import ConfigError, Lakehouse, Lineage
from ingest.corrections import (
    CorrectionError,
    assemble_corrected,
    latest_corrections,
    save_correction,
)
from ingest.ocr import assemble_ocr_text
from ingest.review import make_server, serve_in_thread
from tests.browser import launch
from tests.helpers import OCR_PAGES, corrections_lakehouse, ocr_page, text_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BOOK = "9780000000002"


def _fix(page: int, text: str, minutes: int, sha: str = "sha-a", cid: str | None = None,
         scan: str = "s1") -> dict:
    return {"correction_id": cid or f"c{page}-{minutes}", "scan_id": scan, "scan_sha256": sha,
            "page_no": page, "text": text, "editor": "Ana",
            "created_at": T0 + timedelta(minutes=minutes)}


# ---- pure ------------------------------------------------------------------------------------

def test_newest_correction_of_the_current_content_wins_and_pages_join_like_ocr():
    scan = {"scan_id": "s1", "sha256": "sha-a", "n_pages": 3}
    pages = [ocr_page(n, t) for n, t in OCR_PAGES.items()] + [
        ocr_page(2, "old content page", sha="sha-old"), ocr_page(2, "another scan", scan="s2")]
    fixes = [_fix(2, "The cat sat\non the mat.", 5), _fix(2, "first try", 1),
             _fix(3, "a correction of the old content", 9, sha="sha-old"),
             _fix(1, "another scan's page", 9, scan="s2")]
    got = assemble_corrected(scan, pages, fixes)
    expect = assemble_ocr_text([{"page_no": 1, "text": OCR_PAGES[1]},
                                {"page_no": 2, "text": "The cat sat\non the mat."},
                                {"page_no": 3, "text": OCR_PAGES[3]}])
    assert (got.text, list(got.page_offsets)) == expect
    assert got.text == f"{OCR_PAGES[1]}\n\nThe cat sat\non the mat.\n\n{OCR_PAGES[3]}"
    assert got.corrected == (2,) and got.uncorrected == (1, 3) and got.missing == ()
    assert got.correction_ids == ("c2-5",) and got.complete and not got.fully_corrected
    # same time: the larger id wins, for every reader alike
    tie = latest_corrections([_fix(1, "x", 3, cid="b"), _fix(1, "y", 3, cid="a")], scan)
    assert tie[1]["text"] == "x"


def test_a_page_with_neither_ocr_nor_correction_leaves_the_text_unwritten():
    scan = {"scan_id": "s1", "sha256": "sha-a", "n_pages": 3}
    got = assemble_corrected(scan, [ocr_page(1, OCR_PAGES[1])],
                             [_fix(3, "typed from the image", 1)])
    assert got.missing == (2,) and got.text == "" and not got.complete
    full = assemble_corrected(scan, [], [_fix(n, f"page {n}", n) for n in (3, 1, 2)])
    assert full.fully_corrected and full.text == "page 1\n\npage 2\n\npage 3"
    assert full.correction_ids == ("c1-1", "c2-2", "c3-3")


# ---- the writer ------------------------------------------------------------------------------

def test_saving_a_correction_writes_the_corrected_variant_with_lineage(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    book = "9780000000000"
    ocr_before = text_of(lh, book, "ocr")
    pages_before = lh.read("ocr_pages").to_pylist()
    saved = save_correction(lh, "s1", 2, "The cat sat\non the mat.", editor=" Ana ")
    assert saved.written and saved.editor == "Ana" and saved.page_no == 2
    row = text_of(lh, book, "corrected")
    assert row["text"] == f"{OCR_PAGES[1]}\n\nThe cat sat\non the mat.\n\n{OCR_PAGES[3]}"
    assert row["page_offsets"] == assemble_ocr_text(
        [{"page_no": n, "text": "The cat sat\non the mat." if n == 2 else t}
         for n, t in OCR_PAGES.items()])[1]
    assert row["derived_from"] == f"scan:s1 corrections:{saved.correction_id}"
    commit = lh.history("texts")[0]
    assert commit.operation == "correct" and commit.config["editor"] == "Ana"
    assert commit.config["scan_id"] == "s1"
    assert commit.inputs["corrections"] == lh.version("corrections")
    assert commit.inputs["ocr_pages"] == lh.version("ocr_pages")
    assert commit.inputs["texts"] == commit.version - 1 and "scans" in commit.inputs
    # the lineage walk reaches the corrections and the OCR pages
    tables = {n.table for n in _walk(lh.lineage("texts"))}
    assert {"corrections", "ocr_pages", "scans"} <= tables
    # nothing overwrote the OCR text
    assert text_of(lh, book, "ocr") == ocr_before
    assert lh.read("ocr_pages").to_pylist() == pages_before
    corr = lh.read("corrections").to_pylist()
    assert len(corr) == 1 and corr[0]["scan_sha256"] == "sha-a" and corr[0]["book_id"] == book
    # a second save of the same page: history kept, the newest wins
    save_correction(lh, "s1", 2, "The cat sat on the mat.", editor="Ben")
    assert lh.read("corrections").num_rows == 2
    assert "The cat sat on the mat." in text_of(lh, book, "corrected")["text"]


def _walk(node):
    yield node
    for p in node.parents:
        yield from _walk(p)


def test_bad_corrections_are_refused(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    with pytest.raises(CorrectionError, match="No scan 'nope'"):
        save_correction(lh, "nope", 1, "x", editor="Ana")
    with pytest.raises(CorrectionError, match="has no page 4"):
        save_correction(lh, "s1", 4, "x", editor="Ana")
    with pytest.raises(ConfigError, match="editor"):
        save_correction(lh, "s1", 1, "x", editor="  ")
    with pytest.raises(ConfigError, match="page number"):
        save_correction(lh, "s1", "1", "x", editor="Ana")
    with pytest.raises(ConfigError, match="string"):
        save_correction(lh, "s1", 1, None, editor="Ana")
    assert not lh.exists("corrections")


def test_a_rescan_makes_earlier_corrections_history(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    save_correction(lh, "s1", 1, "Corrected title page", editor="Ana")
    lh.merge("scans", [{"scan_id": "s1", "sha256": "sha-b", "status": "new"}],
             columns=["sha256", "status"], lineage=Lineage(operation="test"))
    lh.append("ocr_pages", [ocr_page(n, f"new {n}", sha="sha-b") for n in (1, 2, 3)],
              lineage=Lineage(operation="test"))
    save_correction(lh, "s1", 3, "new three, corrected", editor="Ana")
    assert text_of(lh, "9780000000000", "corrected")["text"] == (
        "new 1\n\nnew 2\n\nnew three, corrected")


def _race(lh: Lakehouse, round_: int) -> list[BaseException]:
    """Ana saves page 1 and Ben page 3 of scan s1 while OCR writes scan s2, all at once."""
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def editor(page: int, name: str) -> None:
        try:
            start.wait()
            save_correction(Lakehouse(lh.config), "s1", page,
                            f"{name} fixed page {page} in round {round_}", editor=name)
        except BaseException as e:  # reported by the test
            errors.append(e)

    def ocr_run() -> None:
        try:
            start.wait()
            other = Lakehouse(lh.config)
            other.append("ocr_pages", [ocr_page(1, f"reread {round_}", scan="s2")],
                         lineage=Lineage(operation="ocr"))
            other.merge("texts", [{"book_id": "9780000000001", "variant": "ocr",
                                   "text": f"reread {round_}"}], lineage=Lineage(operation="ocr"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=editor, args=(1, "Ana")),
               threading.Thread(target=editor, args=(3, "Ben")),
               threading.Thread(target=ocr_run)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_saves_and_an_ocr_run_keep_every_correction(tmp_path):
    """Two editors save different pages of one scan at the same moment while an OCR run
    writes pages and an ``ocr`` text of another scan: both corrections end in ``corrected``
    (the last writer recomputes from every correction)."""
    lh = corrections_lakehouse(tmp_path / "lh", scans=2)
    for round_ in range(3):
        errors = _race(lh, round_)
        assert not errors, errors
        text = text_of(lh, "9780000000000", "corrected")["text"]
        assert f"Ana fixed page 1 in round {round_}" in text
        assert f"Ben fixed page 3 in round {round_}" in text
        assert OCR_PAGES[2] in text
    assert lh.read("corrections").num_rows == 6
    assert text_of(lh, "9780000000001", "ocr")["text"] == "reread 2"


class _SlowLakehouse(Lakehouse):
    """A catalog whose first ``texts`` write waits until ``go`` is set: the writer has read
    the corrections and writes late, after a later save finished (the race made certain)."""

    def __init__(self, config, go: threading.Event):
        super().__init__(config)
        self.go, self.held = go, threading.Event()

    def merge(self, name, data, **kw):
        if name == "texts" and not self.held.is_set():
            self.held.set()
            assert self.go.wait(60)
        return super().merge(name, data, **kw)


def test_a_late_writer_with_a_stale_read_recomputes(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    go = threading.Event()
    slow = _SlowLakehouse(lh.config, go)
    errors: list[BaseException] = []

    def ana() -> None:
        try:
            save_correction(slow, "s1", 1, "Ana's page one", editor="Ana")
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=ana)
    t.start()
    assert slow.held.wait(60)  # Ana read the corrections (hers only) and waits to write
    save_correction(lh, "s1", 3, "Ben's page three", editor="Ben")  # reads both, writes
    go.set()  # Ana's stale text lands last, then she recomputes and writes again
    t.join()
    assert not errors, errors
    text = text_of(lh, "9780000000000", "corrected")["text"]
    assert "Ana's page one" in text and "Ben's page three" in text
    assert [c.operation for c in lh.history("texts")[:3]] == ["correct"] * 3


# ---- the endpoints -----------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    srv = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(srv)
    yield lh, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_correct_and_promote_endpoints(server):
    lh, base = server
    payload = {"scan_id": "s1", "page_no": 2, "text": "The cat sat.", "editor": "Ana"}
    body = json.dumps(payload).encode()
    assert _post(base + "/api/correct", body, {"Origin": "http://evil.example"})[0] == 403
    assert _post(base + "/api/correct", body, {"Host": "evil.example"})[0] == 403
    assert _post(base + "/api/correct", body, {"Content-Type": "text/plain"})[0] == 415
    status, out = _post(base + "/api/correct", json.dumps({**payload, "page_no": 9}).encode())
    assert status == 400 and "no page 9" in out["error"]
    status, out = _post(base + "/api/correct", json.dumps({**payload, "editor": ""}).encode())
    assert status == 400 and "editor" in out["error"]
    assert not lh.exists("corrections")
    status, out = _post(base + "/api/correct", body)
    assert status == 201 and out["written"] and out["editor"] == "Ana"
    status, out = _post(base + "/api/promote", json.dumps({"scan_id": "s1",
                                                           "editor": "Ana"}).encode())
    assert status == 400 and "not corrected yet (1, 3)" in out["error"]
    for n in (1, 3):
        assert _post(base + "/api/correct", json.dumps({**payload, "page_no": n}).encode()
                     )[0] == 201
    status, out = _post(base + "/api/promote", json.dumps({"scan_id": "s1",
                                                           "editor": "Ana"}).encode())
    assert status == 200 and out["book_id"] == "9780000000000" and out["n_pages"] == 3
    with urllib.request.urlopen(base + "/scan/s1", timeout=60) as r:
        page = r.read().decode()
    assert page.count("corrected by Ana") == 3 and "id=promote>" in page


# ---- the scan view in a real browser -------------------------------------------------------------

@pytest.fixture(scope="module")
def share_server(small_share, tmp_path_factory):
    """The bundled share ingested (real page images), one scan's OCR pages written directly."""
    from ingest.driver import run_ingest

    lh = Lakehouse(str(tmp_path_factory.mktemp("corrections") / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    scan = next(s for s in sorted(lh.read("scans").to_pylist(), key=lambda s: s["scan_id"])
                if s["book_id"] and (s["n_pages"] or 0) >= 2)
    lh.append("ocr_pages", [{
        "scan_id": scan["scan_id"], "page_no": n, "scan_sha256": scan["sha256"],
        "text": f"Page {n} of tbe book, as OCR read it.\nA second line.",
        "mean_confidence": 70.0, "engine": "test"} for n in range(1, scan["n_pages"] + 1)],
        lineage=Lineage(operation="test"))
    srv = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(srv)
    yield lh, f"http://127.0.0.1:{srv.server_address[1]}", scan
    srv.shutdown()
    srv.server_close()


def test_editor_corrects_a_page_in_a_real_browser(share_server, tmp_path):
    from playwright.sync_api import sync_playwright

    lh, base, scan = share_server
    sid, n_pages, book = scan["scan_id"], scan["n_pages"], scan["book_id"]
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/scan/{sid}")
        page.wait_for_selector("#flagbar")
        assert page.input_value("#fix-1") == "Page 1 of tbe book, as OCR read it.\nA second line."
        assert page.inner_text("#corr-1") == "not corrected"
        assert page.locator("#promote").is_disabled()
        page.fill("#editor", "Ana")
        page.fill("#fix-1", "Page 1 of the book, as the editor read it.\nA second line.")
        page.click("button[data-save='1']")
        page.wait_for_selector("#corr-1[data-corrected]")
        assert page.inner_text("#corr-1").startswith("corrected by Ana, ")
        assert "Saved page 1." in page.inner_text("#result")
        page.screenshot(path=str(tmp_path / "corrected.png"))
        page.reload()
        page.wait_for_selector("#flagbar")
        assert page.input_value("#fix-1") == (
            "Page 1 of the book, as the editor read it.\nA second line.")
        assert page.inner_text("#corr-1").startswith("corrected by Ana, ")
        assert page.input_value("#editor") == "Ana"  # remembered by the browser
        # the OCR text beside the image is still OCR's
        assert "tbe book" in page.locator(".ocr").first.inner_text()
        # promotion: refused while pages are left, then done from the page
        for n in range(2, n_pages + 1):
            page.fill(f"#fix-{n}", f"Page {n}, corrected.")
            page.click(f"button[data-save='{n}']")
            page.wait_for_selector(f"#corr-{n}[data-corrected]")
        assert page.locator("#promote").is_enabled()
        page.click("#promote")
        page.wait_for_selector("#result:has-text('Promoted')")
        browser.close()
    corrected = text_of(lh, book, "corrected")
    assert corrected["text"].startswith("Page 1 of the book, as the editor read it.\n"
                                        "A second line.\n\nPage 2, corrected.")
    assert corrected["derived_from"].startswith(f"scan:{sid} corrections:")
    edited = text_of(lh, book, "edited")
    assert edited["text"] == corrected["text"]
    commits = lh.history("texts")
    assert commits[0].operation == "promote" and commits[0].config["editor"] == "Ana"
    correct = next(c for c in commits if c.operation == "correct")
    assert correct.config["editor"] == "Ana" and {"ocr_pages", "corrections", "texts"} <= set(
        correct.inputs)
    assert lh.read("promotions").to_pylist()[0]["scan_id"] == sid
