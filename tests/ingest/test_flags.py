"""Editors' flags and the scan status rule (racing a real `corpus ocr`:
tests/corpus/test_ingest_commands.py)."""

from __future__ import annotations

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.flags import add_flag, list_flags, resolve_flag
from ingest.ocr import OcrConfig, run_ocr


def _status(lh: Lakehouse, sid: str) -> str:
    return {s["scan_id"]: s["status"] for s in lh.read("scans").to_pylist()}[sid]


def test_resolving_a_flag_recomputes_the_status(small_share, tmp_path):
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, small_share, workers=1)
    done, new = sorted(lh.read("scans").column("scan_id").to_pylist())[:2]
    run_ocr(lh, config=OcrConfig(workers=1), scan_ids=[done])
    assert (_status(lh, done), _status(lh, new)) == ("ocr_done", "new")

    rescan = add_flag(lh, done, flag="rescan", editor="ann")
    assert _status(lh, done) == "flagged"
    ok = add_flag(lh, done, flag="ok", editor="bob")
    assert _status(lh, done) == "accepted"  # the latest open flag wins
    resolve_flag(lh, ok)
    assert _status(lh, done) == "flagged"   # the rescan flag is still open
    assert resolve_flag(lh, rescan, editor=" dee ") == "ocr_done"
    assert _status(lh, done) == "ocr_done"  # no open flag: back to the OCR state
    who = {f["flag_id"]: f["resolved_by"] for f in lh.read("flags").to_pylist()}
    assert (who[rescan], who[ok]) == ("dee", None)  # who resolved it, when told
    scan = next(s for s in lh.read("scans").to_pylist() if s["scan_id"] == done)
    assert scan["pages_done"] == scan["n_pages"] and scan["mean_confidence"] > 0

    # a scan flagged before OCR: OCR keeps the editor's status, resolving gives OCR's
    early = add_flag(lh, new, flag="needs_edit", editor="cy")
    resolve_flag(lh, early)
    assert _status(lh, new) == "new"
    early = add_flag(lh, new, flag="wrong_book", editor="cy")
    run_ocr(lh, config=OcrConfig(workers=1), scan_ids=[new])
    scan = next(s for s in lh.read("scans").to_pylist() if s["scan_id"] == new)
    assert scan["status"] == "flagged" and scan["pages_done"] == scan["n_pages"]
    resolve_flag(lh, early)
    assert _status(lh, new) == "ocr_done"
    assert list_flags(lh, open_only=True).num_rows == 0
