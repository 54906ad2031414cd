"""The bundled sample share ingests the same on a local folder and on S3."""

from __future__ import annotations

import pytest

from catalog import key_from_uri
from ingest.driver import run_ingest
from sql import SqlSession


def test_ingest_sample_share(lakehouse, small_share):
    report = run_ingest(lakehouse, small_share, workers=2)
    assert report.n_files == 38
    assert report.by_status == {"ok": 26, "duplicate": 1, "quarantined": 6, "superseded": 5}
    with SqlSession(lakehouse) as s:
        rows = s.query("SELECT kind, count(*) AS n FROM files GROUP BY ALL").to_pylist()
        kinds = {r["kind"]: r["n"] for r in rows}
        blobs = s.query("SELECT DISTINCT sha256 FROM files").num_rows
    assert kinds["edited"] >= 20 and kinds["scan"] == 6 and kinds["scores"] == 3
    assert len(list(lakehouse.store.list("raw/"))) == blobs
    one = lakehouse.read("files").to_pylist()[0]
    assert lakehouse.store.exists(key_from_uri(one["blob_uri"]))
    # a dry run writes nothing; a rerun writes nothing new
    versions = {n: lakehouse.version(n) for n in ("files", "books", "texts", "scans", "scores")}
    dry = run_ingest(lakehouse, small_share, dry_run=True)
    again = run_ingest(lakehouse, small_share, workers=1)
    assert dry.by_status == report.by_status and set(again.written.values()) == {0}
    assert {n: lakehouse.version(n) for n in versions} == versions


def test_bad_share_path_is_a_clear_error(lakehouse, tmp_path):
    from ingest.share import ShareError

    with pytest.raises(ShareError, match="not a folder"):
        run_ingest(lakehouse, tmp_path / "nope")


def test_symlinks_are_recorded_not_followed_and_removed_files_kept(tmp_path, small_share):
    import os
    import shutil

    from catalog import Lakehouse, key_from_uri

    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    secret = tmp_path / "outside.txt"
    secret.write_text("not part of the share")
    os.symlink(secret, share / "Editorial" / "escape.txt")
    os.symlink(tmp_path, share / "Editorial" / "escape_dir")
    inside = next(p for p in (share / "Editorial" / "Finished").rglob("*.txt"))
    os.symlink(inside, share / "Editorial" / "shortcut.txt")
    lh = Lakehouse(str(tmp_path / "lake"))
    run_ingest(lh, share, workers=1)
    files = {f["path"]: f for f in lh.read("files").to_pylist()}
    assert len(files) == 38 + 3
    for name in ("escape.txt", "escape_dir"):
        row = files[f"Editorial/{name}"]
        assert row["status"] == "quarantined" and "outside the share" in row["reason"]
    assert "not followed" in files["Editorial/shortcut.txt"]["reason"]
    stored = b"".join(lh.store.get_bytes(k) for k in lh.store.list("raw/"))
    assert b"not part of the share" not in stored  # nothing outside the share was read

    # a file that leaves the share keeps its row, marked removed
    (share / "Editorial" / "shortcut.txt").unlink()
    gone = next(p for p in (share / "Editorial" / "Drafts").iterdir())
    rel = gone.relative_to(share).as_posix()
    gone.unlink()
    report = run_ingest(lh, share, workers=1)
    assert report.by_status["removed"] == 2
    files = {f["path"]: f for f in lh.read("files").to_pylist()}
    assert files[rel]["status"] == "removed" and "no longer in the share" in files[rel]["reason"]
    assert lh.store.exists(key_from_uri(files[rel]["blob_uri"]))
    again = run_ingest(lh, share, workers=1)
    assert again.written["files"] == 0  # removed rows are not rewritten every run


def test_a_reader_crash_quarantines_one_file_and_the_ingest_goes_on(tmp_path, small_share,
                                                                     monkeypatch):
    import ingest.readers
    from catalog import Lakehouse

    real = ingest.readers.read_epub

    def broken(data, *, name):
        raise RuntimeError("simulated reader bug")

    monkeypatch.setitem(ingest.readers.FORMATS, ".epub", broken)
    lh = Lakehouse(str(tmp_path / "lake"))
    report = run_ingest(lh, small_share, workers=1)  # in-process: the patch applies
    epubs = [f for f in lh.read("files").to_pylist() if f["path"].endswith(".epub")]
    assert epubs and all(f["status"] == "quarantined" for f in epubs)
    assert "simulated reader bug" in epubs[0]["reason"]
    assert report.by_status["ok"] > 20  # everything else was ingested
    assert real is ingest.readers.read_epub


def test_rerun_records_are_arrow_data_and_a_damaged_one_costs_a_read_not_the_run(
        lakehouse, small_share, caplog):
    """The per-file records of a re-run are Arrow IPC objects (data, never code); one that
    is garbage or cut short is ignored with a warning, its files are read again, nothing
    in the tables changes, and the next run finds a whole cache again."""
    first = run_ingest(lakehouse, small_share, workers=1)
    keys = sorted(lakehouse.store.list("cache/ingest/"))
    assert len(keys) > 2 and all(k.endswith(".arrow") for k in keys)
    assert all(lakehouse.store.get_bytes(k).startswith(b"ARROW1") for k in keys)
    # the versions a run reports are the tables' versions (read, or its own commits)
    versions = {n: lakehouse.version(n) for n in first.versions}
    assert first.versions == versions and len(versions) == 5
    good = lakehouse.store.get_bytes(keys[1])
    lakehouse.store.put_bytes(keys[0], b"not arrow at all")
    lakehouse.store.put_bytes(keys[1], good[: len(good) // 2])
    with caplog.at_level("WARNING"):
        again = run_ingest(lakehouse, small_share, workers=1)
    warned = [r.getMessage() for r in caplog.records if "ingest cache" in r.getMessage()]
    assert len(warned) == 2, warned
    assert 0 < again.n_read < again.n_files  # only the files of the two damaged buckets
    assert set(again.written.values()) == {0}
    assert {n: lakehouse.version(n) for n in versions} == versions == again.versions
    assert run_ingest(lakehouse, small_share, workers=1).n_read == 0
