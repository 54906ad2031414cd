"""`corpus noise` and `corpus mine` on a Ray cluster of two nodes on 127.0.0.1 give the tables
a local run gives (the executor itself: tests/catalog/test_executor.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from catalog import Lakehouse, Lineage
from catalog.executor import Failed
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


# ---- a worker killed mid-job ------------------------------------------------------------------
def _kill_after_first_result(monkeypatch, victims):
    """Make the executors' progress kill one worker process (``victims()`` gives their pids)
    as soon as the first variant is in: mid-job, with more work in flight and to come."""
    import catalog.log

    real = catalog.log.progress

    def progress(items, **kw):
        done = False
        for item in real(items, **kw):
            if not done and not isinstance(item, Failed):  # a batch's file is written
                os.kill(victims()[0], signal.SIGKILL)
                done = True
            yield item

    monkeypatch.setattr(catalog.log, "progress", progress)


def test_a_killed_ray_worker_is_retried_and_the_run_equals_a_clean_one(
        mined_base, noise_local, ray_cluster, monkeypatch, tmp_path):
    from catalog.executor import RayExecutor

    started = []
    real_start = RayExecutor._start

    def start(self, *args):
        real_start(self, *args)
        started.append(self)

    monkeypatch.setattr(RayExecutor, "_start", start)
    _kill_after_first_result(monkeypatch, lambda: started[-1].pids)
    lh = copy_lakehouse(mined_base, tmp_path / "lh")
    before = lh.version("texts")
    run_noise(lh, config=NoiseConfig(executor="ray", ray_address=ray_cluster.address,
                                     **NOISE))
    local, _ = noise_local
    assert table_rows(lh, "texts") == table_rows(local, "texts")
    assert lh.version("texts") == before + 1


def test_a_killed_pool_worker_stops_the_run_without_a_commit_and_a_rerun_is_clean(
        mined_base, noise_local, monkeypatch, tmp_path):
    from catalog.executor import WorkerLostError
    from tests.proctree import children

    lh = copy_lakehouse(mined_base, tmp_path / "lh")
    before = lh.version("texts")
    me = Path("/proc/self/cmdline").read_bytes()

    def pool_workers() -> list[int]:  # forked: our own command line (not a Ray process)
        return sorted(p for p in children(os.getpid())
                      if Path(f"/proc/{p}/cmdline").read_bytes() == me)

    _kill_after_first_result(monkeypatch, pool_workers)
    with pytest.raises(WorkerLostError, match="run the command again"):
        run_noise(lh, config=NoiseConfig(workers=2, **NOISE))
    monkeypatch.undo()
    assert lh.version("texts") == before  # no partial commit
    run_noise(lh, config=NoiseConfig(workers=2, **NOISE))
    local, _ = noise_local
    assert table_rows(lh, "texts") == table_rows(local, "texts")
    assert lh.version("texts") == before + 1
    # the data files the killed run's workers wrote are orphans: vacuum removes them
    orphans = lh.vacuum("texts", retention_hours=0, dry_run=True)
    assert orphans and all(f.endswith(".parquet") for f in orphans)
    assert sorted(lh.vacuum("texts", retention_hours=0, dry_run=False)) == sorted(orphans)
    assert lh.vacuum("texts", retention_hours=0, dry_run=True) == []
    assert table_rows(lh, "texts") == table_rows(local, "texts")
