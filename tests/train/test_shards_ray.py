"""`corpus shards build` on a Ray cluster of two nodes on 127.0.0.1: the workers write the
shard files, the driver commits the manifest; the dataset equals a local build's."""

from __future__ import annotations

import pytest

from tests.helpers import VOLATILE, copy_lakehouse, lineage_config, small_config, table_rows
from train.shards import build_shards, read_manifest

pytestmark = pytest.mark.slow


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
