"""`kill -9` of a command while its pool works (`corpus ingest` reading the share, `corpus
mine` and `corpus noise`, `corpus shards build` tokenising): no worker outlives it."""

from __future__ import annotations

import csv
import os
import shutil
import sys

import pytest

from catalog import Lakehouse
from ingest.passages import run_import
from ingest.sample import SAMPLE_CONFIG, sample_passages
from noise.mine import MineConfig, run_mine
from tests.helpers import copy_lakehouse
from tests.proctree import assert_no_orphans, kill_when


# ---- ingest ---------------------------------------------------------------------------------
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


# ---- noise ----------------------------------------------------------------------------------
@pytest.fixture
def pairs_copy(small_pairs, tmp_path) -> Lakehouse:
    """A private copy of the OCR'd sample lakehouse (the kills must not touch the shared
    one)."""
    return copy_lakehouse(small_pairs, tmp_path / "lakehouse")


def _corpus(lh: Lakehouse, *args: str) -> tuple[list[str], dict[str, str]]:
    return ([sys.executable, "-m", "corpus.cli", *args],
            {**os.environ, "CORPUS_ROOT": lh.root})


@pytest.mark.slow
def test_killed_mine_leaves_no_worker_behind(pairs_copy, tmp_path):
    cmd, env = _corpus(pairs_copy, "mine", "--workers", "2")
    killed = kill_when(cmd, env, min_children=2, log=tmp_path / "mine.log")
    assert_no_orphans(killed)


@pytest.mark.slow
def test_killed_noise_leaves_no_worker_behind(pairs_copy, tmp_path):
    run_mine(pairs_copy, config=MineConfig(workers=1))
    cmd, env = _corpus(pairs_copy, "noise", "--workers", "2", "--per-book", "8")
    killed = kill_when(cmd, env, min_children=2, log=tmp_path / "noise.log")
    assert_no_orphans(killed)


# ---- train ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_shards_build_leaves_no_worker_behind(tmp_path):
    # the 60 sample passages nine times over (new ids), in small shards: enough groups of
    # texts for a pool of 2
    with open(sample_passages(), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    many = tmp_path / "passages.csv"
    with open(many, "w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows({**r, "ID": f"{r['ID']}-{k}"} for k in range(9) for r in rows)
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_import(lh, many, config=SAMPLE_CONFIG)
    assert lh.read("texts", columns=["book_id"]).num_rows == 9 * len(rows)
    env = {**os.environ, "CORPUS_ROOT": lh.root, "HF_HUB_OFFLINE": "1"}
    killed = kill_when([sys.executable, "-m", "corpus.cli", "shards", "build", "--name", "k",
                        "--tokenizer", "all-minilm-l6-v2", "--seq-len", "64", "--window", "chunks",
                        "--shard-samples", "8", "--workers", "2"], env, min_children=2,
                       log=tmp_path / "shards.log")
    assert_no_orphans(killed)
