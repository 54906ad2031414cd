"""`corpus noise` and `corpus mine` on a Ray cluster of two nodes on 127.0.0.1 give the tables
a local run gives (the executor itself: tests/catalog/test_executor.py)."""

from __future__ import annotations

import pytest

from catalog import Lakehouse, Lineage
from noise.generate import NoiseConfig, run_noise
from noise.mine import MineConfig, run_mine
from tests.helpers import copy_lakehouse, lineage_config, table_rows

pytestmark = pytest.mark.slow
BROKEN = "9780000000999"  # an edited text whose chapter starts hold a null: no variant
NOISE = {"seed": 5, "per_book": 2, "batch_books": 1}


@pytest.fixture(scope="module")
def mined_base(small_pairs, tmp_path_factory) -> Lakehouse:
    """The OCR'd sample share, mined, plus one book whose edited row is corrupt."""
    lh = copy_lakehouse(small_pairs, tmp_path_factory.mktemp("noise_ray") / "base")
    run_mine(lh, config=MineConfig())
    lh.append("texts", [{"book_id": BROKEN, "variant": "edited", "text": "A short book.\n\n"
                         "Its second paragraph.", "chapter_offsets": [None, 3]}],
              lineage=Lineage(operation="test"))
    return lh


@pytest.fixture(scope="module")
def noise_local(mined_base, tmp_path_factory):
    lh = copy_lakehouse(mined_base, tmp_path_factory.mktemp("noise_local") / "lh")
    return lh, run_noise(lh, config=NoiseConfig(workers=2, **NOISE))


def test_noise_on_ray_equals_local(mined_base, noise_local, ray_cluster, tmp_path):
    local, local_report = noise_local
    lh = copy_lakehouse(mined_base, tmp_path / "lh")
    before = lh.version("texts")
    r = run_noise(lh, config=NoiseConfig(executor="ray", ray_address=ray_cluster.address,
                                         **NOISE))
    assert r.executor["kind"] == "ray" and r.executor["nodes"] == ray_cluster.nodes
    assert local_report.executor["kind"] == "local"
    # the same rows, one texts version per run, the same lineage but for the executor
    assert table_rows(lh, "texts") == table_rows(local, "texts")
    n_books = len({t["book_id"] for t in mined_base.read("texts").to_pylist()
                   if t["variant"] == "edited"})
    assert r.rows == local_report.rows == 2 * (n_books - 1)
    assert lh.version("texts") == before + 1
    assert local.version("texts") == before + 1
    assert lineage_config(lh, "texts") == lineage_config(local, "texts")
    assert lh.history("texts", limit=1)[0].config["executor"]["kind"] == "ray"
    # the corrupt book: a reason per variant, counted in the commit, the others written
    assert sorted(r.failed) == [f"{BROKEN}/5", f"{BROKEN}/6"]
    assert all("TypeError" in why for why in r.failed.values())
    commit = lh.history("texts", limit=1)[0]
    assert commit.config["failed"] == 2 and sorted(commit.config["failures"]) == sorted(r.failed)


def test_mine_on_ray_equals_local(small_pairs, ray_cluster, tmp_path):
    local = copy_lakehouse(small_pairs, tmp_path / "local")
    ray = copy_lakehouse(small_pairs, tmp_path / "ray")
    a = run_mine(local, config=MineConfig(workers=1))
    b = run_mine(ray, config=MineConfig(executor="ray", workers=None,
                                        ray_address=ray_cluster.address))
    assert b.executor["nodes"] == ray_cluster.nodes and a.books == b.books == 4
    for name in ("alignments", "artifacts"):
        assert table_rows(ray, name) == table_rows(local, name)
        assert ray.version(name) == local.version(name)
        assert lineage_config(ray, name) == lineage_config(local, name)
