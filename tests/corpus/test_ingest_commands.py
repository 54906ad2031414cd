"""The ingest stage's commands as a user runs them (``corpus ingest``, ``corpus ocr``,
``corpus scans``, ``corpus flag``, ``corpus promote``), in-process or as real subprocesses
killed or raced against editors: re-runs after a kill, hostile entries, concurrent writers.
The stage's own logic is tested in tests/ingest/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog import TABLES, Lakehouse
from corpus.cli import cli
from ingest.corrections import CorrectionError, promote, save_correction
from ingest.driver import run_ingest
from ingest.evolve import add_hostile_entries
from ingest.scan_status import flag_status
from tests.helpers import copy_lakehouse, corrections_lakehouse, text_of
from tests.proctree import assert_no_orphans, kill_when


@pytest.fixture(scope="module")
def ocred_copy(small_pairs, tmp_path_factory) -> Lakehouse:
    """The sample share ingested and OCR'd (a private copy of ``small_pairs``: the flags
    written here must not reach the shared one)."""
    return copy_lakehouse(small_pairs, tmp_path_factory.mktemp("ocr") / "lakehouse")


# ---- ingest --------------------------------------------------------------------------------------
def _stable(lh: Lakehouse, name: str):
    """A table without run-dependent columns, sorted by its keys."""
    t = lh.read(name)
    t = t.drop_columns([c for c in ("ingested_at", "updated_at", "created_at", "blob_uri")
                        if c in t.column_names])
    return t.sort_by([(k, "ascending") for k in TABLES[name].keys])


@pytest.mark.slow
def test_incremental_and_kill_and_rerun(share, tmp_path):
    src, share = share.path, tmp_path / "share"
    shutil.copytree(src, share, symlinks=True)  # copy2: keeps modification times
    root = tmp_path / "lakehouse"
    env = {**os.environ, "CORPUS_ROOT": str(root)}
    cmd = [sys.executable, "-m", "corpus.cli", "ingest", str(share), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it as soon as the first table commit lands: mid-way through the table writes.
    first = root / "tables" / "books" / "_delta_log"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the records of a run are saved after all its commits: none means it was cut short
    assert not list(root.rglob("records-*/*.arrow")), "the run finished before it was killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lh = Lakehouse(str(root))
    clean = Lakehouse(str(tmp_path / "clean"))
    run_ingest(clean, share, workers=2)
    for name in ("files", "books", "texts", "scans", "scores"):
        assert _stable(lh, name).equals(_stable(clean, name)), name

    # incremental: one edited chapter changes only its rows. A book with no other edited
    # version: editing it would make it newer than a correction, which changes that row too.
    def alone(ch: Path) -> bool:
        isbn = re.search(r"\d{13}", ch.parent.name).group(0)
        return [ch.parent] == [p for p in (share / "Editorial").rglob(f"*{isbn}*")]

    folder = next(p for p in sorted((share / "Editorial" / "Finished").rglob("ch01.txt"))
                  if alone(p))
    folder.write_text(folder.read_text() + "\n\nA new closing paragraph.\n")
    isbn = re.search(r"\d{13}", folder.parent.name).group(0)
    before = {b["book_id"]: b for b in lh.read("books").to_pylist()}
    report = run_ingest(lh, share, workers=2)
    # only the changed book's files are read again (the record cache holds no text)
    book_files = [r for r in lh.read("files").to_pylist()
                  if r["book_id"] == isbn and r["kind"] == "edited" and r["status"] != "removed"]
    assert report.n_read == len(book_files) < 10 and report.n_dirty == 1
    assert report.written["books"] == 1 and report.written["texts"] == 1
    assert report.written["files"] == 1
    after = {b["book_id"]: b for b in lh.read("books").to_pylist()}
    assert after[isbn]["text_sha256"] != before[isbn]["text_sha256"]
    texts = {t["book_id"]: t["text"] for t in lh.read("texts").to_pylist()}
    assert "A new closing paragraph." in texts[isbn]


def _unprivileged() -> list[str]:
    """A command prefix that takes root's power to read any file away (tests run as root
    in CI): without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH a mode-000 file cannot be read."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's file capabilities"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_hostile_entries_are_quarantined_without_a_hang_or_traceback(lakehouse_config,
                                                                     root_env, small_share,
                                                                     tmp_path):
    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    hostile = add_hostile_entries(share)
    cmd = [*_unprivileged(), sys.executable, "-m", "corpus.cli", "ingest", str(share),
           "--workers", "2"]
    for _ in range(2):  # and again: the re-run must not hang on them either
        p = subprocess.run(cmd, env=root_env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr + p.stdout
    files = {f["path"]: f for f in Lakehouse(lakehouse_config).read("files").to_pylist()}
    for path, why in hostile.items():
        row = files[path]
        assert row["status"] == "quarantined" and why in row["reason"], row
    # the editor fixes the permissions (size and mtime unchanged): the next run reads it
    locked = next(p for p, why in hostile.items() if why == "cannot be read")
    (share / locked).chmod(0o644)
    p = subprocess.run(cmd, env=root_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    row = next(f for f in Lakehouse(lakehouse_config).read("files").to_pylist()
               if f["path"] == locked)
    assert row["status"] == "ok" and row["kind"] == "edited", row


# ---- OCR and editors' flags ----------------------------------------------------------------------
@pytest.mark.slow
def test_kill_and_rerun_loses_nothing_and_duplicates_nothing(small_share, tmp_path):
    root = tmp_path / "lakehouse"
    lh = Lakehouse(str(root))
    run_ingest(lh, small_share, workers=2)
    total = sum(s["n_pages"] for s in lh.read("scans").to_pylist())
    env = {**os.environ, "CORPUS_ROOT": str(root)}
    cmd = [sys.executable, "-m", "corpus.cli", "ocr", "--workers", "2"]
    log = root / "tables" / "ocr_pages" / "_delta_log"
    # kill -9 after 2 pages landed, the pool's 2 workers busy: neither may outlive it
    killed = kill_when(cmd, env, ready=lambda: log.exists() and len(list(log.glob("*.json")))
                       >= 3, min_children=2, log=tmp_path / "ocr.log")
    assert_no_orphans(killed)
    done_before = lh.read("ocr_pages").num_rows
    assert 0 < done_before < total, "the kill did not land mid-run"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"({done_before} already done)" in done.stdout
    pages = lh.read("ocr_pages").to_pylist()
    keys = [(p["scan_id"], p["page_no"]) for p in pages]
    assert len(keys) == len(set(keys)) == total
    assert {s["status"] for s in lh.read("scans").to_pylist()} == {"ocr_done"}


def test_editor_commands(ocred_copy):
    lh = ocred_copy
    env = {**os.environ, "CORPUS_ROOT": lh.root}

    def corpus(*args, ok=True):
        p = subprocess.run([sys.executable, "-m", "corpus.cli", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    queue = json.loads(corpus("scans", "--format", "json").stdout)
    assert len(queue) == 5 and {"scan_id", "confidence", "status"} <= set(queue[0])
    sid = queue[0]["scan_id"]
    out = corpus("flag", sid, "--as", "needs_edit", "--note", "headers left in", "--by", "cy")
    fid = out.stdout.split()[1].rstrip(":")
    flagged = json.loads(corpus("scans", "--status", "flagged", "--format", "json").stdout)
    assert [s["scan_id"] for s in flagged] == [sid]
    open_flags = json.loads(corpus("flags", "--open", "--format", "json").stdout)
    assert fid in {f["flag_id"] for f in open_flags}
    corpus("flags", "resolve", fid)
    assert fid not in {f["flag_id"] for f in json.loads(
        corpus("flags", "--open", "--format", "json").stdout)}
    bad = corpus("flag", "scan-nope", "--as", "ok", "--by", "cy", ok=False)
    assert bad.returncode == 2 and "No scan" in bad.stderr and "Traceback" not in bad.stderr


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


# ---- corrections and promotion -------------------------------------------------------------------
def test_promotion_is_refused_until_every_page_is_corrected(tmp_path):
    lh = corrections_lakehouse(tmp_path / "lh")
    book = "9780000000000"
    save_correction(lh, "s1", 2, "The cat sat on the mat.", editor="Ana")
    with pytest.raises(CorrectionError, match=r"2 of 3 page\(s\) are not corrected yet \(1, 3\)"):
        promote(lh, "s1", editor="Ana")
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(tmp_path / "lh"), "promote", "s1", "--by", "Ana"])
    assert res.exit_code == 2 and "not corrected yet" in res.stderr
    assert text_of(lh, book, "edited") is None and not lh.exists("promotions")
    save_correction(lh, "s1", 1, "The Title\n\nby A. Writer", editor="Ana")
    save_correction(lh, "s1", 3, "Page three ends.", editor="Ben")
    res = runner.invoke(cli, ["--root", str(tmp_path / "lh"), "promote", "s1", "--by", "Cleo"])
    assert res.exit_code == 0, res.output
    assert f"book {book} edited from scan s1 (3 corrected pages" in res.stdout
    edited = text_of(lh, book, "edited")
    corrected = text_of(lh, book, "corrected")
    assert edited["text"] == corrected["text"] == (
        "The Title\n\nby A. Writer\n\nThe cat sat on the mat.\n\nPage three ends.")
    assert edited["derived_from"] == corrected["derived_from"]
    commit = lh.history("texts")[0]
    assert commit.operation == "promote" and commit.config["editor"] == "Cleo"
    assert commit.inputs["corrections"] == lh.version("corrections")
    prom = lh.read("promotions").to_pylist()
    assert len(prom) == 1 and prom[0]["editor"] == "Cleo" and prom[0]["book_id"] == book
    assert prom[0]["n_pages"] == 3 and len(prom[0]["correction_ids"]) == 3
    assert lh.history("promotions")[0].operation == "promote"
    # the OCR text is untouched
    assert text_of(lh, book, "ocr")["text"].startswith("THE TITLE")


@pytest.mark.slow
def test_a_real_ocr_run_beside_an_editor_loses_no_correction(small_share, tmp_path):
    """`corpus ocr` recognises one scan in its own process while an editor keeps saving
    corrections of another scan: OCR finishes whole, and every correction lands in
    ``corrected`` (both write the ``texts`` table; the catalog retries the loser)."""
    import os
    import subprocess
    import sys

    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr

    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, share, workers=1)
    pdfs = sorted((s for s in lh.read("scans").to_pylist() if s["source"].endswith(".pdf")),
                  key=lambda s: s["scan_id"])
    edited, other = pdfs[0], pdfs[1]
    run_ocr(lh, config=OcrConfig(workers=1), scan_ids=[edited["scan_id"]])
    env = {**os.environ, "CORPUS_ROOT": lh.root}
    proc = subprocess.Popen([sys.executable, "-m", "corpus.cli", "ocr", "--scan",
                             other["scan_id"], "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last: dict[int, str] = {}
    saves = 0
    while proc.poll() is None or saves < 3:
        page = 1 + saves % edited["n_pages"]
        last[page] = f"page {page}, correction {saves}"
        save_correction(lh, edited["scan_id"], page, last[page], editor="Ana")
        saves += 1
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    scans = {s["scan_id"]: s for s in lh.read("scans").to_pylist()}
    assert scans[other["scan_id"]]["status"] == "ocr_done"
    assert text_of(lh, other["book_id"], "ocr") is not None
    corrected = text_of(lh, edited["book_id"], "corrected")["text"]
    assert all(text in corrected for text in last.values()), (last, corrected)
    assert lh.read("corrections").num_rows == saves
