"""Ingest of a real share, checked against its answer key: the bundled sample share (with
tests/fixtures/sample_share.truth.json) and, in `make acceptance`, the whole development
share."""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import pytest
from rapidfuzz.distance import Levenshtein

from catalog import Lakehouse
from ingest.driver import run_ingest
from sql import SqlSession


def fidelity(ours: str, truth: str) -> float:
    """1 - CER, case-insensitive, whitespace runs collapsed."""
    a = re.sub(r"\s+", " ", ours.lower()).strip()
    b = re.sub(r"\s+", " ", truth.lower()).strip()
    return 1 - Levenshtein.distance(a, b) / max(1, len(b))


@pytest.fixture(scope="module")
def ingested(share, tmp_path_factory):
    lh = Lakehouse(str(tmp_path_factory.mktemp("lake") / "lakehouse"))
    report = run_ingest(lh, share.path, workers=2)
    return lh, report


def test_every_file_is_accounted_for(ingested, share):
    lh, report = ingested
    on_disk = sum(len(files) for _, _, files in os.walk(share.path))
    with SqlSession(lh) as s:
        n = s.query("SELECT count(*) AS n FROM files").column("n")[0].as_py()
        unexplained = s.query("SELECT path FROM files WHERE status <> 'ok' AND reason IS NULL")
        blobs = s.query("SELECT count(DISTINCT sha256) AS n FROM files").column("n")[0].as_py()
    assert n == on_disk == report.n_files
    assert unexplained.num_rows == 0
    assert len(list(lh.store.list("raw/"))) == blobs  # every byte kept, each once


def test_books_match_the_truth(ingested, share):
    lh, _ = ingested
    share_truth = share.truth
    books = {b["book_id"]: b for b in lh.read("books").to_pylist()}
    texts = {t["book_id"]: t["text"] for t in lh.read("texts").to_pylist()}
    edited = {k: v for k, v in share_truth["books"].items() if v["has_edited"]}
    assert set(books) == set(edited)
    bad = []
    for isbn, t in edited.items():
        b = books[isbn]
        title_ok = (b["title"] or "").strip() == t["title"].strip()
        if not title_ok and t["format"] == "pdf":
            # A PDF text layer can lose glyphs (quotes drawn as "·") or hold a title cut off
            # on its title page; held to the same standard as PDF text, not exactness.
            title_ok = fidelity(b["title"] or "", t["title"]) >= 0.9
        if not title_ok:
            bad.append((isbn, "title", b["title"], t["title"]))
        if (b["author"] or "").strip() != t["author"].strip():
            bad.append((isbn, "author", b["author"], t["author"]))
        if b["n_chapters"] != int(t["chapters"]):
            bad.append((isbn, "chapters", b["n_chapters"], t["chapters"]))
        f = fidelity(texts[isbn], t["clean_text"])
        need = 0.97 if t["format"] == "pdf" else 0.99
        if f < need:
            bad.append((isbn, f"fidelity {t['format']}", round(f, 4), need))
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:5]}"


def test_scans_registered(ingested, share):
    lh, _ = ingested
    share_truth = share.truth
    scanned = {s["book_id"]: s for s in lh.read("scans").to_pylist()}
    want = {k: v for k, v in share_truth["books"].items() if v["has_scan"]}
    assert set(want) <= set(scanned)
    for isbn, t in want.items():
        assert scanned[isbn]["n_pages"] == int(t["scan_pages"]), isbn
        assert scanned[isbn]["status"] == "new"


def test_current_scores_equal_the_truth(ingested, share):
    lh, _ = ingested
    share_truth = share.truth
    with SqlSession(lh) as s:
        cur = s.query("SELECT book_id, metric, "
                      "arg_max(value, (scored_at, source_file, source_row)) AS v "
                      "FROM scores GROUP BY ALL").to_pylist()
    got = {(r["book_id"], r["metric"]): r["v"] for r in cur}
    bad = []
    for isbn, t in share_truth["books"].items():
        if not t["scored"]:
            # The key marks 9783152807420 unscored although scores_2018.xlsx row 21 scores
            # it with the key's own values; accept a score only when it is that value.
            if (isbn, "bt_easiness") in got:
                assert abs(got[(isbn, "bt_easiness")] - float(t["bt_easiness"])) < 1e-6, isbn
            continue
        if abs(got.get((isbn, "bt_easiness"), 1e9) - float(t["bt_easiness"])) > 1e-6:
            bad.append((isbn, "bt", got.get((isbn, "bt_easiness")), t["bt_easiness"]))
        if t.get("lexile") not in (None, "") and got.get((isbn, "lexile")) != float(t["lexile"]):
            bad.append((isbn, "lexile", got.get((isbn, "lexile")), t["lexile"]))
    assert not bad, bad[:5]


def test_duplicates_junk_superseded_corrections(ingested, share):
    lh, _ = ingested
    share_truth = share.truth
    files = {f["path"]: f for f in lh.read("files").to_pylist()}
    for a, b in share_truth["duplicates"]:
        assert {files[a]["status"], files[b]["status"]} == {"ok", "duplicate"}, (a, b)
    for path in share_truth["junk"]:
        assert files[path]["status"] == "quarantined" and files[path]["reason"], path
    for path in share_truth["superseded"]:
        assert files[path]["status"] == "superseded", path
    books = {b["book_id"]: b for b in lh.read("books").to_pylist()}
    for isbn, t in share_truth["books"].items():
        if t.get("corrected_by"):
            assert books[isbn]["sources"] == [t["corrected_by"]], isbn


def test_rerun_is_idempotent(ingested, share):
    lh, _ = ingested
    before = {n: lh.version(n) for n in ("files", "books", "texts", "scans", "scores")}
    report = run_ingest(lh, share.path, workers=2)
    assert set(report.written.values()) == {0}
    assert report.n_read == 0  # nothing changed: no file read or hashed again
    assert {n: lh.version(n) for n in before} == before
    full = run_ingest(lh, share.path, workers=2, full=True)
    assert full.n_read == full.n_files and set(full.written.values()) == {0}


def test_a_rewrite_with_the_same_size_and_mtime_needs_full(small_share, tmp_path):
    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, share, workers=1)
    f = next((share / "Editorial").rglob("*.txt"))
    st = f.stat()
    data = f.read_bytes()
    f.write_bytes(data.replace(b"e", b"a", 1))  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: looks unchanged
    quick = run_ingest(lh, share, workers=1)
    assert quick.n_read == 0 and quick.written["files"] == 0
    full = run_ingest(lh, share, workers=1, full=True)
    assert full.n_read == full.n_files and full.written["files"] == 1
    row = next(r for r in lh.read("files").to_pylist()
               if r["path"] == f.relative_to(share).as_posix())
    assert row["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
