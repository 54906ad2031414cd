"""A pinned shard dataset as Arrow, pandas, an HF Dataset and a torch IterableDataset, and its
Parquet export: the same samples as the trainer's stream, in its order, resumable."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from catalog import ConfigError, Lakehouse
from tests.helpers import copy_lakehouse, import_sample, s3_config, small_config
from train.data import ShardStream
from train.dataset import ShardDataset, export_dataset
from train.recipe import TrainConfig
from train.shards import build_shards


def _rows(samples) -> list[tuple[str, list[int], float]]:
    """(sample_id, input_ids, label) of stream samples (``target``) or table rows (``label``)."""
    return [(s["sample_id"], [int(i) for i in s["input_ids"]],
             float(s["label"] if "label" in s else s["target"])) for s in samples]


def _trainer_stream(lh, version, *, rank, world, seed) -> ShardStream:
    """The stream exactly as train.recipe.setup builds it (TrainConfig's defaults)."""
    return ShardStream(lh, "clear", version=version, split="train", rank=rank, world_size=world,
                       seed=seed, skip=[], block_shards=TrainConfig.block_shards,
                       drop_last=True)


def test_arrow_pandas_and_hf_dataset_hold_the_streams_samples(built, tmp_path):
    lh, report = built
    ds = ShardDataset.from_ref(lh, f"clear@{report.version}")
    assert ds.version == report.version and ds.splits == ["train", "validation"]
    assert (ds.tokenizer, ds.seq_len, ds.window, ds.metric) == (
        "all-minilm-l6-v2", 64, "chunks", "bt_easiness")
    for split in ds.splits:
        stream = list(ShardStream(lh, "clear", version=ds.version, split=split, shuffle=False,
                                  rank=0, world_size=1))
        assert len(stream) == report.samples[split]
        table = ds.to_arrow(split)
        assert table.column_names == ["sample_id", "book_id", "variant", "window",
                                      "input_ids", "label"]
        assert _rows(table.to_pylist()) == _rows(stream)
        frame = ds.to_pandas(split)
        assert list(frame["sample_id"]) == [s["sample_id"] for s in stream]
        hf = ds.to_hf(split, cache_dir=tmp_path / "hf")
        assert len(hf) == len(stream) and hf.split == split
        assert _rows(hf) == _rows(stream)
    # the shuffled training stream is a permutation of the same samples
    shuffled = _rows(ShardStream(lh, "clear", version=ds.version, rank=0, world_size=1))
    assert sorted(shuffled) == sorted(_rows(ds.to_hf("train", cache_dir=tmp_path / "hf")))


def test_torch_dataset_over_two_ranks_is_the_trainers_stream(built):
    lh, report = built
    ds = ShardDataset(lh, "clear")
    for seed, epoch in ((0, 0), (3, 1)):
        got, want = [], []
        for rank in range(2):
            mine = ds.torch(rank=rank, world_size=2, seed=seed, epoch=epoch)
            trainer = _trainer_stream(lh, report.version, rank=rank, world=2, seed=seed)
            trainer.set_epoch(epoch)
            # through a DataLoader, as a user would, against the trainer's own loader
            loaded = [sid for b in DataLoader(mine, batch_size=4, collate_fn=mine.collate_fn)
                      for sid in b["sample_ids"]]
            expected = [sid for b in trainer.loader(4) for sid in b["sample_ids"]]
            assert loaded == expected and loaded
            got.append(loaded)
            want.append(expected)
        # the two ranks cover the epoch: every sample once, less the < world_size dropped
        everything = set(ds.to_arrow("train").column("sample_id").to_pylist())
        union = got[0] + got[1]
        assert len(set(union)) == len(union) and set(union) <= everything
        assert len(everything) - len(union) < 2 and len(got[0]) == len(got[1])


def test_torch_dataset_resumes_mid_epoch_with_the_remainder_exactly(built):
    lh, _ = built
    ds = ShardDataset(lh, "clear")
    full = [[s["sample_id"] for s in ds.torch(rank=r, world_size=2, seed=5, epoch=2)]
            for r in range(2)]
    # three lockstep steps of 4 samples on both ranks, then a checkpoint
    streams = [ds.torch(rank=r, world_size=2, seed=5, epoch=2) for r in range(2)]
    iters = [iter(s) for s in streams]
    for _ in range(3):
        for it in iters:
            for _ in range(4):
                next(it)
    state = streams[0].state_dict()
    assert state == streams[1].state_dict() and state["consumed"] == 24
    state = json.loads(json.dumps(state))  # as a checkpoint saves it
    for r in range(2):
        rest = [s["sample_id"] for s in ds.torch(rank=r, world_size=2, seed=5, state=state)]
        assert rest == full[r][12:]
    # another world size continues with exactly the unseen samples of the epoch
    one = [s["sample_id"] for s in ShardDataset(lh, "clear").torch(seed=5, state=state)]
    seen = {sid for r in range(2) for sid in full[r][:12]}
    epoch = set(ds.to_arrow("train").column("sample_id").to_pylist())
    assert set(one) == epoch - seen and len(one) == len(epoch) - 24
    # a state of another order is refused
    with pytest.raises(ConfigError, match="seed"):
        ds.torch(seed=6, state=state)


def test_a_dataset_stays_pinned_and_refuses_unknown_splits(built, tmp_path):
    lh, report = built
    mine = copy_lakehouse(lh, tmp_path / "lh")
    build_shards(mine, config=small_config(seq_len=32))
    old, new = ShardDataset(mine, "clear", version=report.version), ShardDataset(mine, "clear")
    assert new.version > old.version and (old.seq_len, new.seq_len) == (64, 32)
    assert old.to_arrow().num_rows == report.samples["train"]
    with pytest.raises(ConfigError, match="no 'test' split"):
        old.to_arrow("test")
    with pytest.raises(ConfigError, match="DATASET@VERSION"):
        ShardDataset.from_ref(lh, "clear@x1")


def test_export_writes_parquet_per_split_and_a_card(built, tmp_path):
    lh, report = built
    ds = ShardDataset(lh, "clear")
    out = tmp_path / "export"
    r = export_dataset(ds, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "train.parquet",
                                                     "validation.parquet"]
    for split in ("train", "validation"):
        t = pq.read_table(out / f"{split}.parquet")
        assert t.equals(ds.to_arrow(split))
        assert r.stats[split].samples == report.samples[split] == t.num_rows
        assert r.stats[split].books == report.books[split]
        assert r.stats[split].tokens == report.tokens[split]
    card = (out / "README.md").read_text()
    for needle in (f"shards@{report.version}", "`all-minilm-l6-v2`", "| seq_len | 64 ",
                   "`chunks`", "`bt_easiness` (higher = easier)",
                   f"`texts@{report.texts_version}`, `scores@{report.scores_version}`",
                   f"| train | `train.parquet` | {report.books['train']} | "
                   f"{report.samples['train']:,} | {report.tokens['train']:,} |",
                   "CC BY-NC-SA 4.0", "license: cc-by-nc-sa-4.0", "path: validation.parquet"):
        assert needle in card, needle
    # any Parquet reader: pandas without pyarrow's dataset layer
    frame = pq.ParquetFile(out / "train.parquet").read().to_pandas()
    assert isinstance(frame["input_ids"][0], np.ndarray) and frame["label"].dtype == float
    # a non-empty folder is refused unless forced
    with pytest.raises(ConfigError, match="not empty"):
        export_dataset(ds, out)
    (out / "notes.txt").write_text("mine")
    export_dataset(ds, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.s3
def test_a_dataset_on_s3_reads_and_exports_through_the_checked_cache(s3_server, tmp_path):
    lh = Lakehouse(s3_config(s3_server))
    import_sample(lh)
    report = build_shards(lh, config=small_config())
    ds = ShardDataset(lh.config, "clear", cache_dir=tmp_path / "cache")
    files = ds.files("train")
    assert len(files) == report.shards["train"]
    assert all(str(f).startswith(str(tmp_path / "cache")) for f in files)
    local = [x["sample_id"] for x in ShardStream(lh, "clear", shuffle=False, rank=0,
                                                 world_size=1, cache_dir=tmp_path / "c2")]
    assert ds.to_arrow("train").column("sample_id").to_pylist() == local
    r = export_dataset(ds, tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "train.parquet").num_rows == len(local)
    assert r.stats["validation"].samples == report.samples["validation"]
