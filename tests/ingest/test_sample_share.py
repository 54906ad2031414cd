"""The bundled sample share ingests the same on a local folder and on S3."""

from __future__ import annotations

import tarfile

import pytest

from corpus.demo import sample_share_tarball
from ingest.driver import run_ingest
from sql import SqlSession


@pytest.fixture(scope="module")
def small_share(tmp_path_factory):
    dest = tmp_path_factory.mktemp("small")
    with tarfile.open(sample_share_tarball()) as tar:
        tar.extractall(dest, filter="tar")
    return dest / "legacy_share"


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
    assert lakehouse.store.exists(one["blob_uri"].split("/objects/", 1)[1])
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
