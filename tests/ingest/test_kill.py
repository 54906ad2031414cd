"""`kill -9` of `corpus ingest` while its pool reads the share: no worker outlives it."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.proctree import assert_no_orphans, kill_when


@pytest.mark.slow
def test_killed_ingest_leaves_no_worker_behind(small_share, tmp_path):
    share = tmp_path / "share"
    shutil.copytree(small_share, share, symlinks=True)
    # more files than the sample holds, so the kill lands while the pool is reading
    docx = next(share.rglob("*.docx"))
    bulk = share / "Editorial" / "Bulk"
    bulk.mkdir()
    for i in range(150):
        shutil.copy2(docx, bulk / f"copy {i:03d} of {docx.name}")
    env = {**os.environ, "CORPUS_ROOT": str(tmp_path / "lakehouse")}
    killed = kill_when([sys.executable, "-m", "corpus.cli", "ingest", str(share),
                        "--workers", "2"], env, min_children=2, log=tmp_path / "ingest.log")
    assert_no_orphans(killed)
