"""The scan view: zoom and pan, word boxes linked to the text, OCR lines kept, a movable
low-confidence threshold, moving and flagging by keyboard. Served for real on the bundled
share's page images, with OCR pages written directly (no Tesseract), driven in headless
Chromium."""

from __future__ import annotations

import io
import json
import time

import pytest

from catalog import Lakehouse, Lineage
from ingest.driver import run_ingest
from ingest.review import (
    PREVIEW_DPI,
    linked_text,
    make_server,
    ocr_image_size,
    serve_in_thread,
    word_boxes,
)
from ingest.review_queue import query_queue, scan_neighbours
from tests.browser import launch

# page -> lines of (word, confidence); a blank line between blocks, as words_to_text joins
LONG = [(f"word{i}", 90.0) for i in range(40)]  # one scan line far wider than the pane
PAGES = {
    1: [[("Tbe", 41.0), ("cat", 96.0), ("sat", 88.0)], [("on", 92.0), ("tbe", 55.0),
                                                         ("mat.", 97.0)],
        None, [("miass", 75.0), ("common-fock", 70.0)]],
    2: [[("Page", 90.0), ("two", 58.0), ("begins", 90.0)], LONG],
}


def _page_row(scan: dict, n: int) -> dict:
    """An ``ocr_pages`` row as OCR writes it: text from the words' lines, boxes in pixels."""
    lines, words, y = [], [], 60
    for line in PAGES[n]:
        if line is None:
            lines.append("")
            y += 40
            continue
        lines.append(" ".join(w for w, _ in line))
        for j, (w, c) in enumerate(line):
            words.append([w, c, 60 + 28 * j, y, 24, 20])
        y += 40
    return {"scan_id": scan["scan_id"], "page_no": n, "scan_sha256": scan["sha256"],
            "text": "\n".join(lines), "words": json.dumps(words), "dpi": 300,
            "mean_confidence": 80.0, "engine": "test"}


@pytest.fixture(scope="module")
def view_server(small_share, tmp_path_factory):
    lh = Lakehouse(str(tmp_path_factory.mktemp("scan_view") / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    order = [r["scan_id"] for r in query_queue(lh).rows]  # the queue's default order
    scans = {s["scan_id"]: s for s in lh.read("scans").to_pylist()}
    first = scans[order[0]]
    assert first["n_pages"] == 2
    lh.append("ocr_pages", [_page_row(first, n) for n in (1, 2)],
              lineage=Lineage(operation="test"))
    srv = make_server(lh, "127.0.0.1", 0)
    serve_in_thread(srv)
    yield lh, f"http://127.0.0.1:{srv.server_address[1]}", order
    srv.shutdown()
    srv.server_close()


# ---- pure ------------------------------------------------------------------------------------

def test_linked_text_gives_every_word_its_index_and_confidence():
    words = json.dumps([["Tbe", 41.0, 0, 0, 1, 1], ["cat", 96.0, 0, 0, 1, 1],
                        ["<sat>", 30.0, 0, 0, 1, 1]])
    out = linked_text("Tbe cat\n<sat>", words)
    assert out == ('<span class="w low" data-i=0 data-c="41" title="confidence 41">Tbe</span> '
                   '<span class="w" data-i=1 data-c="96" title="confidence 96">cat</span>\n'
                   '<span class="w low" data-i=2 data-c="30" title="confidence 30">'
                   '&lt;sat&gt;</span>')
    # a token that is not the next OCR word stays plain and the rest keep their index
    out = linked_text("Tbe dog <sat>", words)
    assert "dog" in out and 'data-i=2 data-c="30"' in out and "data-i=1" not in out
    assert linked_text("no words", None) == "no words"


def test_word_boxes_are_fractions_of_the_ocr_image():
    words = json.dumps([["a", 50.0, 100, 200, 50, 20], ["b", 90.0, 0, 0, 1000, 2000]])
    out = word_boxes(words, (1000, 2000))
    assert ("<div class='box low' data-i=0 data-c='50' title='a (50)' style='left:10.000%;"
            "top:10.000%;width:5.000%;height:1.000%'></div>") in out
    assert "data-i=1 data-c='90'" in out and "width:100.000%;height:100.000%" in out
    assert word_boxes(words, None) == ""


def test_ocr_image_size_of_an_image_and_a_pdf_page():
    import pymupdf
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (640, 480), 255).save(buf, format="PNG")
    assert ocr_image_size(buf.getvalue(), None) == (640, 480)
    assert ocr_image_size(buf.getvalue(), None, frame=3) is None
    doc = pymupdf.open()
    doc.new_page(width=612, height=792)  # US letter in points
    pdf = doc.tobytes()
    assert ocr_image_size(pdf, 0, dpi=300) == (2550, 3300)
    assert ocr_image_size(pdf, 0, dpi=PREVIEW_DPI) == (935, 1210)
    assert ocr_image_size(pdf, 1, dpi=300) is None


def test_neighbours_follow_the_queues_default_order(view_server):
    lh, _, order = view_server
    assert len(order) >= 3
    assert scan_neighbours(lh, order[0]) == (None, order[1])
    assert scan_neighbours(lh, order[1]) == (order[0], order[2])
    assert scan_neighbours(lh, order[-1]) == (order[-2], None)
    assert scan_neighbours(lh, "nope") == (None, None)
    assert scan_neighbours(Lakehouse(str(lh.config.root) + "-empty"), "x") == (None, None)


def test_word_boxes_of_real_ocr_fall_on_the_ink(small_share, tmp_path):
    """Tesseract on a folder scan (pages of different sizes) and a PDF scan (pages at
    different dpi): every page's boxes, scaled from the OCR image to the preview the page
    shows, cover text, darker on average than the page."""
    from PIL import Image

    from ingest.ocr import OcrConfig, run_ocr
    from ingest.review import ReviewData

    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    rows = query_queue(lh).rows
    ids = [rows[0]["scan_id"], next(r["scan_id"] for r in rows if r["source"].endswith(".pdf"))]
    run_ocr(lh, config=OcrConfig(workers=1), scan_ids=ids)
    data = ReviewData(lh)
    checked = 0
    for sid in ids:
        scan = data.scan(sid)
        for p in scan["pages"]:
            words = json.loads(p["words"])
            size = scan["ocr_sizes"][p["page_no"]]
            img = Image.open(io.BytesIO(data.page_png(sid, p["page_no"]))).convert("L")
            sx, sy = img.width / size[0], img.height / size[1]
            assert abs(sx - sy) < 0.01  # the same page, only scaled

            def mean(im) -> float:
                hist = im.histogram()
                return sum(i * n for i, n in enumerate(hist)) / max(1, sum(hist))

            inside = [mean(img.crop((int(left * sx), int(top * sy), int((left + w) * sx) + 1,
                                     int((top + h) * sy) + 1)))
                      for _, _, left, top, w, h in words]
            assert len(words) > 10
            assert sum(inside) / len(inside) < mean(img) - 25, (sid, p["page_no"])
            checked += 1
    assert checked == 4


# ---- in a real browser -----------------------------------------------------------------------

def _distinct_colours(png: bytes, box: dict) -> int:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    crop = img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                     int(min(box["y"] + box["height"], img.height))))
    return len(crop.getcolors(maxcolors=1 << 20) or [])


def test_scan_view_in_a_real_browser(view_server, tmp_path):
    from playwright.sync_api import sync_playwright

    lh, base, order = view_server
    sid, next_sid = order[0], order[1]
    timings = {}
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(f"{base}/scan/{sid}")
        page.wait_for_function("() => [...document.querySelectorAll('.page img')].every("
                               "i => i.complete && i.naturalWidth > 0)", timeout=60000)
        timings["load"] = time.perf_counter() - t0
        p1 = page.locator("#page-1")
        img = p1.locator(".page img")

        # the image and text panes are drawn (screenshot checked for non-empty regions)
        shot = page.screenshot()
        (tmp_path / "scan-view.png").write_bytes(shot)
        assert _distinct_colours(shot, img.bounding_box()) > 20
        assert _distinct_colours(shot, p1.locator(".ocr").bounding_box()) > 5
        legend = page.inner_text("#keys")
        assert "next page" in legend and "resolve the newest open flag" in legend
        assert "3 needs edit" in legend

        # word boxes lie on the image
        ibox = img.bounding_box()
        assert p1.locator(".box").count() == 8
        for b in p1.locator(".box").all():
            bb = b.bounding_box()
            assert ibox["x"] <= bb["x"] and bb["x"] + bb["width"] <= ibox["x"] + ibox["width"]
            assert ibox["y"] <= bb["y"] and bb["y"] + bb["height"] <= ibox["y"] + ibox["height"]

        # zoom in: the rendered image grows; fit: back; the keyboard zooms the current page
        w0 = ibox["width"]
        p1.locator("button[data-zoom=in]").click()
        assert img.bounding_box()["width"] > 1.4 * w0
        assert p1.locator(".zoomval").inner_text() == "150%"
        # drag pans the zoomed image
        x0 = img.bounding_box()["x"]
        frame = p1.locator(".viewer").bounding_box()
        cx, cy = frame["x"] + frame["width"] / 2, frame["y"] + frame["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx - 80, cy - 40, steps=4)
        page.mouse.up()
        assert img.bounding_box()["x"] < x0 - 60
        page.keyboard.press("0")
        assert abs(img.bounding_box()["width"] - w0) < 1
        page.keyboard.press("+")
        assert img.bounding_box()["width"] > 1.4 * w0
        page.keyboard.press("0")

        # a word selected in the text marks its box, and the reverse; hovering marks too
        p1.locator(".ocr .w[data-i='4']").click()  # "tbe"
        assert "sel" in p1.locator(".box[data-i='4']").get_attribute("class").split()
        p1.locator(".box[data-i='0']").click()
        assert "sel" in p1.locator(".ocr .w[data-i='0']").get_attribute("class").split()
        assert "sel" not in p1.locator(".box[data-i='4']").get_attribute("class").split()
        assert page.locator(".sel").count() == 2
        p1.locator(".ocr .w[data-i='6']").hover()
        assert "hot" in p1.locator(".box[data-i='6']").get_attribute("class").split()

        # OCR lines are the scan's lines: no soft wrap, the long line scrolls sideways
        ocr2 = page.locator("#page-2 .ocr")
        assert ocr2.evaluate("e => getComputedStyle(e).whiteSpace") == "pre"
        assert ocr2.evaluate("e => e.scrollWidth > e.clientWidth")
        tops = ocr2.evaluate("e => [...e.querySelectorAll('.w')].map("
                             "w => Math.round(w.getBoundingClientRect().top))")
        assert len(set(tops)) == 2  # two lines of words, however long
        # a box chosen on the image scrolls its word into view in the text
        assert ocr2.evaluate("e => e.scrollLeft") == 0
        page.locator("#page-2 .box[data-i='42']").click()  # word39, the end of the long line
        assert "sel" in page.locator("#page-2 .w[data-i='42']").get_attribute("class").split()
        assert ocr2.evaluate("e => e.scrollLeft") > 0

        # the threshold: default 60, moved by the editor, remembered by the browser
        def marked() -> tuple[int, int, str]:
            return (page.locator(".ocr .w.low").count(), page.locator(".box.low").count(),
                    page.inner_text("#low-count"))

        def set_threshold(v: int) -> None:
            page.eval_on_selector("#threshold", "(e, v) => { e.value = v; "
                                  "e.dispatchEvent(new Event('input', {bubbles: true})); }", v)

        assert page.input_value("#threshold") == "60"
        assert marked() == (3, 3, "3 words marked")  # Tbe 41, tbe 55, two 58
        set_threshold(80)
        assert marked() == (5, 5, "5 words marked")  # + miass 75, common-fock 70
        assert page.inner_text("#threshold-val") == "80"
        set_threshold(30)
        assert marked() == (0, 0, "0 words marked")
        page.reload()
        page.wait_for_selector("#keys")
        assert page.input_value("#threshold") == "30" and marked()[0] == 0
        set_threshold(60)
        assert marked()[0] == 3

        # keys move between pages
        assert page.inner_text("#page-pos") == "page 1 of 2"
        page.keyboard.press("j")
        assert page.inner_text("#page-pos") == "page 2 of 2"
        assert "current" in page.locator("#page-2").get_attribute("class").split()
        # scrolled under the sticky bar: the bar stays on top of the zoomable images
        assert page.eval_on_selector("#scan-nav", "e => { const r = e.getBoundingClientRect();"
                                     " return e.contains(document.elementFromPoint("
                                     "r.left + 5, r.top + r.height / 2)); }")
        page.keyboard.press("j")  # no page 3
        assert page.inner_text("#page-pos") == "page 2 of 2"
        page.keyboard.press("ArrowLeft")
        assert page.inner_text("#page-pos") == "page 1 of 2"
        assert "current" not in page.locator("#page-2").get_attribute("class").split()

        # typing the shortcut letters in a text box does not trigger them
        flags_before = lh.read("flags").num_rows if lh.exists("flags") else 0
        page.click("#fix-1")
        page.keyboard.press("End")
        page.keyboard.type(" jknp+0 1234 r")
        assert page.input_value("#fix-1").endswith(" jknp+0 1234 r")
        page.click("#note")
        page.keyboard.type("jk1r")
        assert page.input_value("#note") == "jk1r"
        page.fill("#note", "")
        page.keyboard.press("Escape")
        page.keyboard.press("1")  # no name yet: nothing recorded, the name field asks for it
        page.wait_for_selector("#result:has-text('Enter your name first')")
        assert page.evaluate("document.activeElement.id") == "editor"
        page.keyboard.type("Ana")
        assert page.input_value("#editor") == "Ana"
        page.keyboard.press("Escape")  # leaves the field: keys work again
        assert page.url.startswith(f"{base}/scan/{sid}")
        assert page.inner_text("#page-pos") == "page 1 of 2"
        assert p1.locator(".zoomval").inner_text() == "100%"
        assert (lh.read("flags").num_rows if lh.exists("flags") else 0) == flags_before
        assert page.locator("#flags li").count() == 0

        # flag and resolve by keyboard
        page.keyboard.press("3")
        page.wait_for_selector("#result:has-text('Flagged as needs_edit')")
        assert "needs_edit by Ana" in page.inner_text("#flags li")
        assert page.inner_text("#scan-status") == "flagged"
        page.keyboard.press("r")
        page.wait_for_selector("#flags li:has-text('resolved by Ana')")
        page.screenshot(path=str(tmp_path / "scan-view-flagged.png"))

        # next and previous scan, in queue order
        t0 = time.perf_counter()
        page.keyboard.press("n")
        page.wait_for_url(f"{base}/scan/{next_sid}*")
        timings["next scan"] = time.perf_counter() - t0
        page.wait_for_selector("#keys")
        page.keyboard.press("p")
        page.wait_for_url(f"{base}/scan/{sid}*")
        page.wait_for_selector("#keys")
        page.keyboard.press("p")  # the first scan: nowhere to go
        page.wait_for_selector("#result:has-text('first scan in the queue')")
        browser.close()
    rows = [f for f in lh.read("flags").to_pylist() if f["scan_id"] == sid]
    assert [(f["flag"], f["editor"], f["resolved_by"]) for f in rows] == [
        ("needs_edit", "Ana", "Ana")]
    assert rows[0]["created_at"] is not None and rows[0]["resolved_at"] is not None
    print("scan view timings:", {k: round(v, 2) for k, v in timings.items()})
