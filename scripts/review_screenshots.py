"""Screenshots of the editors' desk for the README: the queue and a scan view.

Ingests the bundled sample share into a throwaway lakehouse, OCRs its scans for real
(Tesseract), serves `corpus review` on 127.0.0.1 and photographs it in headless Chromium
(Debian's, driven by Playwright). Writes docs/review-queue.png and docs/review-scan.png.

    .venv/bin/python scripts/review_screenshots.py
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.ocr import OcrConfig, run_ocr
from ingest.review import make_server, serve_in_thread
from ingest.sample import sample_share_tarball

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def main() -> None:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="corpus-shots-"))
    try:
        with tarfile.open(sample_share_tarball()) as tar:
            tar.extractall(tmp, filter="tar")
        lh = Lakehouse(str(tmp / "lakehouse"))
        run_ingest(lh, tmp / "legacy_share", workers=2)
        run_ocr(lh, config=OcrConfig(workers=2))
        scan = next(s for s in lh.read("scans").to_pylist()
                    if s["status"] == "ocr_done" and s["source"].endswith(".pdf"))
        server = make_server(lh, "127.0.0.1", 0)
        serve_in_thread(server)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        DOCS.mkdir(exist_ok=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}/")
                page.screenshot(path=str(DOCS / "review-queue.png"))
                page.goto(f"{base}/scan/{scan['scan_id']}")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.page img')].every("
                    "i => i.complete && i.naturalWidth > 0)", timeout=60000)
                # a word selected in the text marks its box on the image
                page.locator(".ocr .w").nth(12).click()
                page.screenshot(path=str(DOCS / "review-scan.png"))
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
        print(f"wrote {DOCS / 'review-queue.png'} and {DOCS / 'review-scan.png'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
