"""`kill -9` of `corpus shards build` while its tokenizer pool works: no worker outlives it."""

from __future__ import annotations

import csv
import os
import sys

import pytest

from catalog import Lakehouse
from ingest.passages import run_import
from ingest.sample import SAMPLE_CONFIG, sample_passages
from tests.proctree import assert_no_orphans, kill_when


@pytest.mark.slow
def test_killed_shards_build_leaves_no_worker_behind(tmp_path):
    # the 60 sample passages nine times over (new ids): enough batches for a pool of 2
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
                        "--workers", "2"], env, min_children=2, log=tmp_path / "shards.log")
    assert_no_orphans(killed)
