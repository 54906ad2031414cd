"""`corpus shards build` over the executor: on a Ray cluster of two nodes on 127.0.0.1 the
workers write the shard files and the driver commits the manifest, and the dataset equals a
local build's; a build that stops commits nothing and vacuum removes the files it wrote."""

from __future__ import annotations

import pytest

from catalog import CorpusError, key_from_uri
from tests.helpers import VOLATILE, copy_lakehouse, lineage_config, small_config, table_rows
from train.shards import ShardWriter, build_shards, orphan_shard_files, read_manifest


def test_a_stopped_build_commits_nothing_and_vacuum_removes_its_files(sample_lakehouse,
                                                                       monkeypatch):
    lh = sample_lakehouse
    done = build_shards(lh, config=small_config("kept"))
    real, calls = ShardWriter.flush, []

    def flush(self):  # the third group's files cannot be written
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real(self)

    monkeypatch.setattr(ShardWriter, "flush", flush)
    with pytest.raises(CorpusError, match=r"could not be written.*nothing was committed"):
        build_shards(lh, config=small_config("stopped", shard_samples=4))
    monkeypatch.undo()
    assert lh.version("shards") == done.version
    orphans = orphan_shard_files(lh, retention_hours=0)
    assert orphans and all(k.startswith("shards/stopped/") for k in orphans)
    kept = {key_from_uri(u) for u in read_manifest(lh, "kept")[0]["shard_uri"].to_pylist()}
    assert not kept & set(orphans)  # a committed dataset's files are never orphans
    assert orphan_shard_files(lh, retention_hours=1) == []  # younger than the window
    for k in orphans:
        lh.store.delete(k)
    assert orphan_shard_files(lh, retention_hours=0) == []
    assert all(lh.store.exists(k) for k in kept)


@pytest.mark.slow

def test_shards_on_ray_equal_local(sample_lakehouse, ray_cluster, tmp_path):
    local = sample_lakehouse
    ray = copy_lakehouse(local, tmp_path / "ray")
    a = build_shards(local, config=small_config(workers=1))
    b = build_shards(ray, config=small_config(executor="ray", workers=None,
                                                ray_address=ray_cluster.address))
    assert b.executor["kind"] == "ray" and b.executor["nodes"] == ray_cluster.nodes
    assert (b.samples, b.tokens, b.shards) == (a.samples, a.tokens, a.shards)
    # the rows but for where the lakehouse is (each copy has its own root)
    drop = VOLATILE | {"shard_uri"}
    assert table_rows(ray, "shards", drop=drop) == table_rows(local, "shards", drop=drop)
    assert ray.version("shards") == local.version("shards")
    assert lineage_config(ray, "shards") == lineage_config(local, "shards")
    # the same files, byte for byte (content-addressed: the same keys)
    m_local, _ = read_manifest(local, "clear")
    m_ray, _ = read_manifest(ray, "clear")
    assert m_ray["sha256"].to_pylist() == m_local["sha256"].to_pylist()
    for uri in m_ray["shard_uri"].to_pylist():
        assert uri.startswith(ray.root)  # written by the workers into this lakehouse
