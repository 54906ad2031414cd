"""OCR of real scans from the sample share, resumability, failures, editors' flags (the
commands, and a kill mid-run: tests/corpus/test_ingest_commands.py)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from rapidfuzz.distance import Levenshtein

from catalog import ConfigError, Lakehouse, key_from_uri
from ingest.driver import run_ingest
from ingest.flags import FlagError, add_flag, list_flags, resolve_flag
from ingest.ocr import OcrConfig, OcrError, ocr_document, run_ocr


@pytest.fixture(scope="module")
def ocred(small_share, tmp_path_factory):
    lh = Lakehouse(str(tmp_path_factory.mktemp("ocr") / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    report = run_ocr(lh, config=OcrConfig(workers=2))
    return lh, report


def _cer(ours: str, truth: str) -> float:
    a = re.sub(r"\s+", " ", ours.lower()).strip()
    b = re.sub(r"\s+", " ", truth.lower()).strip()
    return Levenshtein.distance(a, b) / max(1, len(b))


def test_ocr_of_sample_scans_against_the_truth(ocred, small_truth, tmp_path_factory):
    lh, report = ocred
    scans = lh.read("scans").to_pylist()
    assert report.scans_failed == {} and report.scans_done == len(scans) == 5
    assert report.pages_done == sum(s["n_pages"] for s in scans)
    texts = {t["book_id"]: t for t in lh.read("texts").to_pylist() if t["variant"] == "ocr"}
    cers = {}
    for s in scans:
        assert s["status"] == "ocr_done" and s["pages_done"] == s["n_pages"]
        assert s["ocr_engine"].startswith("tesseract 5") and s["mean_confidence"] > 60
        t = texts[s["book_id"]]
        assert len(t["page_offsets"]) == s["n_pages"] and t["derived_from"].endswith(s["scan_id"])
        cers[s["book_id"]] = round(_cer(t["text"], small_truth["books"][s["book_id"]]
                                        ["clean_text"]), 4)
    # Reported, not tuned: the title/copyright page, running headers and page numbers of
    # the scans are in the OCR text and count as errors against the edited text.
    out = tmp_path_factory.getbasetemp() / "ocr_cer.json"
    out.write_text(json.dumps(cers, indent=1))
    print(f"\nOCR CER against the edited text (furniture included): {cers}")
    assert max(cers.values()) < 0.5, cers
    pages = lh.read("ocr_pages").to_pylist()
    words = json.loads(pages[0]["words"])
    assert words and all(len(w) == 6 for w in words)  # word, confidence, box
    pdf_scans = {s["scan_id"] for s in scans if s["source"].endswith(".pdf")}
    # PDF pages are rendered at their embedded image's resolution (150-300 dpi here)
    assert all(100 <= p["dpi"] <= 400 for p in pages if p["scan_id"] in pdf_scans)


def test_ocr_document_in_memory_gives_the_pipeline_text(ocred):
    lh, _ = ocred
    scans = {s["scan_id"]: s for s in lh.read("scans").to_pylist()}
    files = {f["path"]: f for f in lh.read("files").to_pylist()}
    texts = {t["book_id"]: t for t in lh.read("texts").to_pylist() if t["variant"] == "ocr"}
    pdf = next(s for s in scans.values() if s["source"].endswith(".pdf"))
    data = lh.store.get_bytes(key_from_uri(files[pdf["source"]]["blob_uri"]))
    text, offsets = ocr_document(data, name=pdf["source"])
    assert text == texts[pdf["book_id"]]["text"]
    assert offsets == texts[pdf["book_id"]]["page_offsets"]
    with pytest.raises(OcrError, match=r"broken\.pdf"):
        ocr_document(b"%PDF-1.4 truncated", name="broken.pdf")


def test_rerun_does_nothing_and_history_has_lineage(ocred):
    lh, _ = ocred
    n = lh.read("ocr_pages").num_rows
    again = run_ocr(lh, config=OcrConfig(workers=2))
    assert again.pages_done == 0 and lh.read("ocr_pages").num_rows == n
    c = lh.history("ocr_pages", limit=1)[0]
    assert c.operation == "ocr" and set(c.inputs) == {"scans", "files"}


def test_flags(ocred):
    lh, _ = ocred
    sid = lh.read("scans").column("scan_id")[0].as_py()
    fid = add_flag(lh, sid, flag="rescan", editor="ann", note="page 2 is blurred")
    assert {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}[sid] == "flagged"
    assert list_flags(lh, open_only=True).column("flag_id").to_pylist() == [fid]
    resolve_flag(lh, fid)
    assert list_flags(lh, open_only=True).num_rows == 0
    with pytest.raises(FlagError, match="already resolved"):
        resolve_flag(lh, fid)
    with pytest.raises(FlagError, match="No scan"):
        add_flag(lh, "scan-nope", flag="ok", editor="ann")
    with pytest.raises(ConfigError, match="Unknown flag"):
        add_flag(lh, sid, flag="great", editor="ann")
    add_flag(lh, sid, flag="ok", editor="bob")
    assert {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}[sid] == "accepted"


def test_corrupt_scan_fails_alone_and_text_layer_pages_are_read(small_share, tmp_path):
    import pymupdf

    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    real = next((share / "Scans" / "batch_2021").rglob("page_0001.jpg")).read_bytes()
    bad = share / "Scans" / "batch_2021" / "9780306406157"
    bad.mkdir(parents=True)
    # not an image at all: quarantined by ingest, never becomes a scan
    (bad / "page_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    # a real page image cut short: its header reads, its pixels do not (OCR must fail it)
    (bad / "page_0002.jpg").write_bytes(real[: len(real) // 3])
    with pymupdf.open() as pdf:  # a "scan" that is really a PDF with a text layer
        page = pdf.new_page()
        page.insert_text((72, 72), "This scanned page came with a real text layer, "
                                   "so it is read rather than recognised.")
        pdf.save(share / "Scans" / "incoming" / "9780131103627_scan.pdf")
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, share, workers=1)
    # only the two new scans, to keep the test short
    ids = {s["book_id"]: s["scan_id"] for s in lh.read("scans").to_pylist()}
    files = {f["path"]: f for f in lh.read("files").to_pylist()}
    junk = files["Scans/batch_2021/9780306406157/page_0001.jpg"]
    assert junk["status"] == "quarantined" and "not a readable image" in junk["reason"]
    report = run_ocr(lh, config=OcrConfig(workers=1),
                     scan_ids=[ids["9780306406157"], ids["9780131103627"]])
    assert set(report.scans_failed) == {ids["9780306406157"]}
    assert "cannot read the image" in report.scans_failed[ids["9780306406157"]]
    scans = {s["book_id"]: s for s in lh.read("scans").to_pylist()}
    assert scans["9780306406157"]["status"] == "failed"
    assert "cannot read" in scans["9780306406157"]["reason"]
    assert scans["9780131103627"]["status"] == "ocr_done"
    page = next(p for p in lh.read("ocr_pages").to_pylist()
                if p["scan_id"] == ids["9780131103627"])
    assert page["engine"] == "text-layer" and "real text layer" in page["text"]


@pytest.mark.slow
def test_ocr_reads_pages_from_the_object_store_local_and_s3(lakehouse, small_share):
    run_ingest(lakehouse, small_share, workers=2)
    sid = sorted(lakehouse.read("scans").column("scan_id").to_pylist())[-1]
    report = run_ocr(lakehouse, config=OcrConfig(workers=2), scan_ids=[sid])
    assert report.scans_done == 1 and report.scans_failed == {}
    assert {p["scan_id"] for p in lakehouse.read("ocr_pages").to_pylist()} == {sid}
