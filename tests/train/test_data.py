"""ShardStream in one process: order, rank partition, exact resume, skip list, pinning, S3.

Ranks are simulated here by constructing one stream per rank in the same process (the
stream takes rank and world size as arguments and never touches a process group); the real
multi-process runs are in test_data_dist.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalog import ConfigError, Lakehouse, LakehouseConfig, StorageError, key_from_uri
from tests.helpers import import_sample, s3_config, small_config
from train.data import ShardStream, collate
from train.shards import build_shards, read_manifest


def _all_ids(lh: Lakehouse, dataset: str = "clear", split: str = "train",
             version: int | None = None) -> list[str]:
    manifest, _ = read_manifest(lh, dataset, version=version, split=split)
    ids: list[str] = []
    for uri in manifest.column("shard_uri").to_pylist():
        t = pq.read_table(io.BytesIO(lh.store.get_bytes(key_from_uri(uri))))
        ids += t.column("sample_id").to_pylist()
    return ids


def _streams(lh, world: int, **kw) -> list[ShardStream]:
    return [ShardStream(lh, "clear", rank=r, world_size=world, **kw) for r in range(world)]


def _steps(streams: list[ShardStream], iters: list, steps: int, batch: int) -> list[str]:
    """Consume ``steps`` lockstep steps of ``batch`` samples on every rank."""
    seen = []
    for _ in range(steps):
        for it in iters:
            seen += [next(it)["sample_id"] for _ in range(batch)]
    return seen


def test_an_epoch_is_every_sample_once_in_a_seeded_global_order(built):
    lh, report = built
    everything = _all_ids(lh)
    ds = ShardStream(lh, "clear", block_shards=4)
    assert ds.version == report.version and ds.total == len(everything) == len(ds)
    first = [s["sample_id"] for s in ds]
    assert sorted(first) == sorted(everything)
    assert ds.state_dict()["consumed"] == ds.total
    assert list(ds) == []  # the epoch is consumed until set_epoch moves on
    ds.set_epoch(1)
    second = [s["sample_id"] for s in ds]
    assert sorted(second) == sorted(everything) and second != first
    # Same seed and epoch: the same order, in a fresh stream; another seed: another order.
    again = ShardStream(lh, "clear", block_shards=4, epoch=1)
    assert [s["sample_id"] for s in again] == second
    other = ShardStream(lh, "clear", block_shards=4, seed=1)
    assert [s["sample_id"] for s in other] != first
    # Shuffled across shards, not within one: the first 16 samples span several shards.
    shard_of = {sid: i // 16 for i, sid in enumerate(everything)}
    assert len({shard_of[s] for s in first[:16]}) >= 3
    # Not shuffled: manifest order (for evaluation).
    assert [s["sample_id"] for s in ShardStream(lh, "clear", shuffle=False)] == everything


def test_samples_carry_tokens_and_targets(built):
    lh, _ = built
    ds = ShardStream(lh, "clear")
    item = next(iter(ds))
    assert set(item) >= {"sample_id", "book_id", "variant", "input_ids", "target"}
    assert item["input_ids"].ndim == 1 and 2 < len(item["input_ids"]) <= 64
    assert item["sample_id"].startswith(item["book_id"] + "|" + item["variant"] + "|")
    assert isinstance(item["target"], float)


def test_shard_files_from_before_the_label_rename_still_load(built, tmp_path):
    from catalog import SchemaError
    from train.data import LoadedShard

    lh, _ = built
    manifest, _ = read_manifest(lh, "clear")
    t = pq.read_table(io.BytesIO(lh.store.get_bytes(key_from_uri(manifest["shard_uri"][0]
                                                                 .as_py()))))
    new, old = tmp_path / "new.parquet", tmp_path / "old.parquet"
    pq.write_table(t, new)
    pq.write_table(t.rename_columns(["target" if c == "label" else c for c in t.column_names]),
                   old)
    assert LoadedShard.read(old).targets == LoadedShard.read(new).targets
    assert LoadedShard.read(new).targets == t["label"].to_pylist()
    pq.write_table(t.drop_columns(["label"]), old)
    with pytest.raises(SchemaError, match="'label'"):
        LoadedShard.read(old)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_epoch(built, world):
    lh, _ = built
    everything = sorted(_all_ids(lh))
    per_rank = [[s["sample_id"] for s in ds] for ds in _streams(lh, world)]
    union = [s for ids in per_rank for s in ids]
    assert sorted(union) == everything  # every sample once, no rank overlap
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1
    # drop_last: every rank gets the same count, fewer than `world` samples dropped.
    even = [[s["sample_id"] for s in ds] for ds in _streams(lh, world, drop_last=True)]
    assert len({len(x) for x in even}) == 1
    assert 0 <= len(everything) - sum(map(len, even)) < world


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 2), (2, 3), (3, 2)])
def test_resume_yields_exactly_the_unseen_samples_with_any_world_size(built, before, after):
    lh, _ = built
    everything = sorted(_all_ids(lh))
    kw = {"block_shards": 3, "seed": 7, "epoch": 2}
    streams = _streams(lh, before, **kw)
    seen = _steps(streams, [iter(s) for s in streams], steps=5, batch=12)
    states = [s.state_dict() for s in streams]
    assert all(st == states[0] for st in states)  # identical on all ranks at a step boundary
    state = json.loads(json.dumps(states[0]))  # JSON-able
    assert state["consumed"] == 5 * 12 * before and state["epoch"] == 2

    resumed = _streams(lh, after, block_shards=3, seed=7)
    for s in resumed:
        s.load_state_dict(state)
    rest = [x["sample_id"] for s in resumed for x in s]
    assert len(rest) == len(set(rest)) and not set(rest) & set(seen)
    assert sorted(seen + rest) == everything
    # Shards whose samples were all consumed are never read again.
    order = resumed[0].epoch_order(2)
    unread_needed = set(np.searchsorted(resumed[0].offsets, order[state["consumed"]:],
                                        side="right") - 1)
    for s in resumed:
        assert set(s.stats.shards_read) <= unread_needed
        assert len(s.stats.shards_read) == len(set(s.stats.shards_read))  # each read once
    assert len(unread_needed) < len(resumed[0].shard_keys)


def test_state_is_checked_against_the_stream(built):
    lh, _ = built
    ds = ShardStream(lh, "clear", seed=3)
    state = ds.state_dict()
    with pytest.raises(ConfigError, match="seed"):
        ShardStream(lh, "clear", seed=4).load_state_dict(state)
    with pytest.raises(ConfigError, match="split"):
        ShardStream(lh, "clear", split="validation", seed=3).load_state_dict(state)
    with pytest.raises(ConfigError, match="No shards for dataset 'nope'"):
        ShardStream(lh, "nope")
    with pytest.raises(ConfigError, match="rank"):
        ShardStream(lh, "clear", rank=2, world_size=2)


def test_set_epoch_keeps_or_resets_the_position(built):
    lh, _ = built
    ds = ShardStream(lh, "clear")
    it = iter(ds)
    head = [next(it)["sample_id"] for _ in range(10)]
    assert ds.consumed() == 10
    ds.set_epoch(0)  # the current epoch: keep going from sample 10
    assert ds.consumed() == 10
    tail = [s["sample_id"] for s in ds]
    assert len(head) + len(tail) == ds.total and not set(head) & set(tail)
    ds.set_epoch(1)
    assert ds.consumed() == 0 and len(ds) == ds.total


def test_skip_list_is_honoured_and_recorded(built):
    lh, _ = built
    everything = _all_ids(lh)
    poison = [everything[5], everything[100], everything[-1]]
    ds = ShardStream(lh, "clear", skip=[poison[0], "not-a-sample"])
    ds.skip_sample(poison[1])
    got = [s["sample_id"] for s in ds]
    assert sorted(got) == sorted(set(everything) - set(poison[:2]))
    assert set(ds.state_dict()["skip"]) == {poison[0], poison[1], "not-a-sample"}
    # A poison sample found mid-epoch: the restarted job skips it, on any world size, and
    # the epoch is still every other sample exactly once.
    streams = _streams(lh, 2, block_shards=2)
    seen = _steps(streams, [iter(s) for s in streams], steps=4, batch=4)
    state = streams[0].state_dict()
    order_ids = [x["sample_id"] for x in ShardStream(lh, "clear", block_shards=2)]
    ahead = order_ids[state["consumed"] + 3]  # a sample not yet seen
    resumed = _streams(lh, 3, block_shards=2)
    for s in resumed:
        s.load_state_dict(state)
        s.skip_sample(ahead)
    rest = [x["sample_id"] for s in resumed for x in s]
    assert ahead not in rest
    assert sorted(seen + rest) == sorted(set(everything) - {ahead})
    assert ahead in resumed[0].state_dict()["skip"]
    # ranks stay in step: counts differ by at most one
    counts = [len(list(s)) for s in _streams(lh, 2, skip=[ahead])]
    assert abs(counts[0] - counts[1]) <= 1 and sum(counts) == len(everything) - 1
    # A saved skip list joins the one the resumed stream was given.
    fresh = ShardStream(lh, "clear", block_shards=2, skip=[poison[2]])
    fresh.load_state_dict(resumed[0].state_dict() | {"consumed": 0, "epoch": 0})
    ids = [x["sample_id"] for x in fresh]
    assert sorted(ids) == sorted(set(everything) - {ahead, poison[2]})


def test_validation_split_holds_other_books(built):
    lh, report = built
    val = ShardStream(lh, "clear", split="validation", shuffle=False)
    train = ShardStream(lh, "clear")
    val_books = {s["book_id"] for s in val}
    train_books = {s["book_id"] for s in train}
    assert len(val_books) == report.books["validation"] > 0
    assert not val_books & train_books


def test_collate_pads_to_the_longest(built):
    lh, _ = built
    ds = ShardStream(lh, "clear")
    samples = list(ds)[:6]
    samples[0] = {**samples[0], "input_ids": samples[0]["input_ids"][:3]}
    b = collate(samples, pad_id=ds.pad_id)
    width = max(len(s["input_ids"]) for s in samples)
    assert b["input_ids"].shape == (6, width) == b["attention_mask"].shape
    assert b["attention_mask"].sum(1).tolist() == [len(s["input_ids"]) for s in samples]
    assert b["input_ids"][0, 3:].eq(ds.pad_id).all()
    assert b["input_ids"][0, :3].tolist() == samples[0]["input_ids"].tolist()
    assert b["targets"].tolist() == pytest.approx([s["target"] for s in samples])
    assert b["sample_ids"] == [s["sample_id"] for s in samples]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_in_rank_order_and_counts(built, workers):
    lh, _ = built
    reference = [s["sample_id"] for s in ShardStream(lh, "clear", rank=1, world_size=2)]
    ds = ShardStream(lh, "clear", rank=1, world_size=2)
    got = []
    for i, b in enumerate(ds.loader(8, num_workers=workers)):
        got += b["sample_ids"]
        if i == 3:
            break
    assert got == reference[:32]
    assert ds.state_dict()["consumed"] == 64  # 4 steps x 8 samples x 2 ranks
    rest = [sid for b in ds.loader(8, num_workers=workers) for sid in b["sample_ids"]]
    assert got + rest == reference


def test_pinned_version_reads_identically_after_a_rebuild(sample_lakehouse):
    lh = sample_lakehouse
    v1 = build_shards(lh, config=small_config()).version

    def read(version):
        ds = ShardStream(lh, "clear", version=version, seed=5)
        return [(s["sample_id"], s["input_ids"].tolist(), s["target"]) for s in ds]

    before = read(v1)
    v2 = build_shards(lh, config=small_config(seq_len=48, shard_samples=10)).version
    assert v2 > v1
    assert read(v1) == before
    latest = read(None)
    assert latest != before and max(len(x[1]) for x in latest) <= 48
    assert ShardStream(lh, "clear").version == v2


@pytest.mark.s3
def test_stream_from_s3_with_a_local_cache(s3_server, tmp_path):
    cfg: LakehouseConfig = s3_config(s3_server)
    lh = Lakehouse(cfg)
    import_sample(lh)
    report = build_shards(lh, config=small_config())
    assert cfg.root.startswith("s3://")
    manifest, _ = read_manifest(lh, "clear", split="train")
    assert all(u.startswith("s3://") for u in manifest["shard_uri"].to_pylist())
    everything = sorted(_all_ids(lh))
    cache = tmp_path / "cache"
    streams = [ShardStream(cfg, "clear", rank=r, world_size=2, cache_dir=cache)
               for r in range(2)]
    ids = [x["sample_id"] for s in streams for x in s]
    assert sorted(ids) == everything
    assert streams[0].stats.downloads == report.shards["train"]
    assert streams[1].stats.downloads == 0  # the second rank found them in the cache
    # Resume on S3, with an empty cache: only shards still needed are fetched.
    a = ShardStream(cfg, "clear", cache_dir=tmp_path / "c2")
    it = iter(a)
    head = [next(it)["sample_id"] for _ in range(100)]
    b = ShardStream(cfg, "clear", cache_dir=tmp_path / "c3")
    b.load_state_dict(a.state_dict())
    tail = [x["sample_id"] for x in b]
    assert sorted(head + tail) == everything
    assert b.stats.downloads == len(set(b.stats.shards_read)) < report.shards["train"] + 1
    # DataLoader workers (forked) fetch with their own S3 clients, in the rank's order.
    w = ShardStream(cfg, "clear", rank=1, world_size=2, cache_dir=tmp_path / "c5")
    got = [sid for batch in w.loader(8, num_workers=2) for sid in batch["sample_ids"]]
    assert got == [x["sample_id"] for x in ShardStream(cfg, "clear", rank=1, world_size=2,
                                                       cache_dir=cache)]
    # A shard object changed behind the manifest's back is refused.
    key = key_from_uri(manifest["shard_uri"][0].as_py())
    lh.store.put_bytes(key, b"not a parquet file")
    with pytest.raises(StorageError, match="sha256"):
        list(ShardStream(cfg, "clear", cache_dir=tmp_path / "c4"))
    assert pc.sum(manifest["n_samples"]).as_py() == len(everything)
