"""Editors' flags and the scan status rule, alone and racing a real OCR run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from catalog import Lakehouse
from ingest.driver import run_ingest
from ingest.flags import add_flag, list_flags, resolve_flag
from ingest.ocr import OcrConfig, run_ocr
from ingest.scan_status import flag_status


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


# One process flagging (and now and then resolving) a scan through `corpus flag` and
# `corpus flags resolve`, as fast as it can, until told to stop; prints what it did.
FLAG_LOOP = r"""
import json, sys
from pathlib import Path
from catalog import Lakehouse
from corpus.cli import cli
from ingest.flags import list_flags
sid, stop = sys.argv[1], Path(sys.argv[2])
lh, did, i = Lakehouse(), [], 0
while not stop.exists():
    if i % 4 == 3:  # resolve the scan's open flags
        for f in list_flags(lh, open_only=True).to_pylist():
            if f["scan_id"] == sid:
                cli.main(["flags", "resolve", f["flag_id"]], standalone_mode=False, obj={})
                did.append(["resolve", f["flag_id"]])
    else:
        flag = ("needs_edit", "ok", "rescan")[i % 3]
        cli.main(["flag", sid, "--as", flag, "--by", f"ed{i}"], standalone_mode=False, obj={})
        did.append(["flag", flag])
    i += 1
print("DID " + json.dumps(did))
"""


@pytest.mark.slow
def test_ocr_and_flags_at_once_lose_neither(small_share, tmp_path):
    """`corpus ocr` and `corpus flag` in two processes on the same scan, once per scan: the
    flag loop runs while the pages are recognised and while OCR commits its result."""
    root = tmp_path / "lakehouse"
    lh = Lakehouse(str(root))
    run_ingest(lh, small_share, workers=1)
    env = {**os.environ, "CORPUS_ROOT": str(root)}
    scans = {s["scan_id"]: s for s in lh.read("scans").to_pylist()}
    raced = 0
    for sid in sorted(scans):
        stop = tmp_path / f"stop-{sid}"
        flagger = subprocess.Popen([sys.executable, "-c", FLAG_LOOP, sid, str(stop)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # let the flag loop get going: its first flags land during OCR
        ocr = subprocess.run([sys.executable, "-m", "corpus.cli", "ocr", "--scan", sid,
                              "--workers", "2"], env=env, capture_output=True, text=True,
                             timeout=300)
        stop.touch()
        out, err = flagger.communicate(timeout=120)
        assert ocr.returncode == 0, ocr.stderr
        assert flagger.returncode == 0, err
        did = json.loads(out.rsplit("DID ", 1)[1])
        flags = [f for f in lh.read("flags").to_pylist() if f["scan_id"] == sid]
        # no flag lost, every resolution kept
        assert len(flags) == sum(1 for d in did if d[0] == "flag") > 0
        resolved = {d[1] for d in did if d[0] == "resolve"}
        assert {f["flag_id"] for f in flags if f["resolved_at"]} == resolved
        # the status follows the latest open flag, else the (finished) OCR state
        open_ = [f for f in flags if f["resolved_at"] is None]
        latest = max(open_, key=lambda f: (f["created_at"], f["flag_id"]), default=None)
        scan = next(s for s in lh.read("scans").to_pylist() if s["scan_id"] == sid)
        assert scan["status"] == (flag_status(latest["flag"]) if latest else "ocr_done"), did
        # and nothing of OCR's work lost
        pages = [p for p in lh.read("ocr_pages").to_pylist() if p["scan_id"] == sid]
        assert sorted(p["page_no"] for p in pages) == list(range(1, scan["n_pages"] + 1))
        assert scan["pages_done"] == scan["n_pages"] and scan["reason"] is None
        assert scan["ocr_engine"] and scan["mean_confidence"] > 0
        texts = [t for t in lh.read("texts").to_pylist()
                 if t["variant"] == "ocr" and t["derived_from"] == f"scan:{sid}"]
        assert len(texts) == 1 and len(texts[0]["page_offsets"]) == scan["n_pages"]
        raced += len(did)
    assert raced >= 2 * len(scans), "the flag loop barely ran: no race was tested"
