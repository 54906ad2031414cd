"""Fixtures of the noise tests: the development share's edited/OCR pairs. The share fixtures
(``small_share``, ``small_truth``, ``dev_share``, ``dev_truth``), the OCR'd sample share
(``small_pairs``, shared with the command tests in tests/corpus/) and the recorded
``ocr_pairs`` live in tests/conftest.py.
"""

from __future__ import annotations

import pytest

from catalog import Lakehouse


@pytest.fixture(scope="session")
def dev_pairs(dev_share, tmp_path_factory) -> Lakehouse:
    """The development share ingested, and the three longest scans of edited books OCR'd
    (21 pages: running headers alternating author/title on every page, chapters running
    across pages, a page number Tesseract read). About 30 s on 2 workers. Acceptance tests
    only; tests/fixtures/ocr_pairs.json.gz (the ``ocr_pairs`` fixture) holds these pairs as
    recorded by scripts/make_test_fixtures.py."""
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr

    lh = Lakehouse(str(tmp_path_factory.mktemp("noise_dev") / "lakehouse"))
    run_ingest(lh, dev_share, workers=2)
    texts = lh.read("texts", columns=["book_id", "variant"]).to_pylist()
    edited = {t["book_id"] for t in texts if t["variant"] == "edited"}
    scans = sorted((s for s in lh.read("scans").to_pylist() if s["book_id"] in edited),
                   key=lambda s: (-(s["n_pages"] or 0), s["scan_id"]))
    scans = [s["scan_id"] for s in scans[:3]]
    run_ocr(lh, config=OcrConfig(workers=2), scan_ids=scans)
    return lh
