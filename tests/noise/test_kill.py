"""`kill -9` of `corpus mine` and `corpus noise` while their pools work: no worker outlives
the killed command."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from catalog import Lakehouse
from noise.mine import MineConfig, run_mine
from tests.proctree import assert_no_orphans, kill_when


@pytest.fixture
def pairs_copy(small_pairs, tmp_path) -> Lakehouse:
    """A private copy of the OCR'd sample lakehouse (the kills must not touch the shared
    one)."""
    root = tmp_path / "lakehouse"
    shutil.copytree(small_pairs.root, root)
    return Lakehouse(str(root))


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
