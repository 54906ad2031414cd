"""The one executor interface (catalog/executor.py): a local pool and Ray actors map a stage's
function the same way: results in order, a bad item a row with its reason, state made once
per worker, a bounded window of work in flight, a dead worker retried (Ray) or one clear
error (local). The Ray tests run on two nodes on 127.0.0.1 (the ``ray_cluster`` fixture);
every stage on it: tests/<stage>/test_*ray*.py."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from catalog import StorageError
from catalog.executor import (
    RAY_IN_FLIGHT,
    Failed,
    LocalExecutor,
    RayExecutor,
    WorkerLostError,
    batched,
    make_executor,
)


# ---- stage functions: module level, so that workers import them --------------------------
def _setup(marks: str) -> dict:
    """A worker's state; leaves a file per call, named by the process, to count them."""
    Path(marks, f"setup-{os.getpid()}-{len(os.listdir(marks))}").touch()
    return {"factor": 10, "pid": os.getpid()}


def _times(state: dict, batch: list[int]) -> list[int]:
    if 13 in batch:
        raise ValueError("thirteen is unlucky")
    return [x * state["factor"] for x in batch]


def _storage_down(state, batch):
    raise StorageError("the object store does not answer")


def _die_once(marks: str, batch: list[int]) -> list[int]:
    """Kills its own process the first time it sees 3 (a worker killed mid-job)."""
    flag = Path(marks, "killed")
    if 3 in batch and not flag.exists():
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return [x + 1 for x in batch]


def _die(marks: str, batch: list[int]) -> list[int]:
    os.kill(os.getpid(), signal.SIGKILL)
    return batch


def _slowly(state, batch: list[int]) -> list[int]:
    time.sleep(0.15)  # slower than the bar's refresh
    return batch


def _marks(marks: str) -> str:
    return marks


# ---- the interface, locally -----------------------------------------------------------------
def test_batched_by_count_and_by_weight():
    assert list(batched(range(5), size=2)) == [[0, 1], [2, 3], [4]]
    words = ["aaaa", "b", "cc", "dddd", "e"]
    assert list(batched(words, size=10, weight=len, limit=5)) == [
        ["aaaa", "b"], ["cc", "dddd"], ["e"]]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_a_bad_item_is_a_row_with_its_reason(workers, tmp_path):
    ex = LocalExecutor(workers)
    batches = ([i, i + 1, i + 2] for i in range(0, 30, 3))  # 13 is in the fifth batch
    out = list(ex.map(_times, batches, setup=_setup, setup_args=(str(tmp_path),),
                      desc="times", key=lambda x: f"item {x}"))
    assert len(out) == 30
    assert out[:13] == [x * 10 for x in range(13)] and out[14:] == [x * 10 for x in range(14, 30)]
    assert out[13] == Failed("item 13", "ValueError: thirteen is unlucky")
    assert ex.stats.items == 30 and ex.stats.failed == 1
    # the state is made once per worker, not once per batch
    assert len(list(tmp_path.iterdir())) == workers


def test_unordered_results_are_all_there():
    out = list(LocalExecutor(2).map(_times, ([i] for i in range(20)), desc="times",
                                    setup=_setup, setup_args=(_tmp(),), ordered=False))
    assert sorted(x for x in out if not isinstance(x, Failed)) == \
        sorted(x * 10 for x in range(20) if x != 13)


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="corpus-executor-")


def _bad_setup(what: str):
    from catalog import ConfigError

    raise ConfigError(f"cannot load {what}")


def test_a_failed_setup_is_its_own_error_not_a_dead_worker():
    from catalog import ConfigError

    for workers in (1, 2):
        with pytest.raises(ConfigError, match="cannot load the model"):
            list(LocalExecutor(workers).map(_times, ([i] for i in range(4)), desc="x",
                                            setup=_bad_setup, setup_args=("the model",)))


def test_storage_errors_stop_the_job_instead_of_becoming_rows():
    with pytest.raises(StorageError, match="does not answer"):
        list(LocalExecutor(1).map(_storage_down, [[1], [2]], desc="x"))


def test_the_window_bounds_what_is_read_ahead():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield [i]

    ex = LocalExecutor(2)
    it = ex.map(_times, source(), setup=_setup, setup_args=(_tmp(),), desc="window")
    assert next(it) == 0
    assert len(pulled) <= 2 * ex.workers + 1  # never the whole job at once
    it.close()


def test_a_killed_pool_worker_is_one_clear_error(tmp_path):
    ex = LocalExecutor(2)
    with pytest.raises(WorkerLostError, match=r"worker process died.*run the command again"):
        list(ex.map(_die_once, ([i] for i in range(8)), setup=_marks,
                    setup_args=(str(tmp_path),), desc="die"))


def test_one_summary_line_when_stderr_is_not_a_terminal(capsys):
    list(LocalExecutor(1).map(_times, [[12, 13], [14]], setup=_setup, setup_args=(_tmp(),),
                              desc="times", unit="number"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("times: 3 numbers in ") and "number/s" in err[0]
    assert err[0].endswith("[local, 1 worker(s)]; 1 failed")


def test_a_progress_bar_with_rate_and_eta_on_a_terminal(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = list(LocalExecutor(1).map(_slowly, [[1], [2], [3]], desc="times", unit="number",
                                    total=3))
    assert out == [1, 2, 3]
    bar = term.getvalue()
    # done/total [elapsed<remaining (the ETA), rate]
    assert re.search(r"times: +\d+%.*[123]/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+number/s\]", bar), bar
    assert "numbers in" not in bar  # no summary line on a terminal: the bar says it


def test_bad_executor_names_are_config_errors():
    from catalog import ConfigError

    with pytest.raises(ConfigError, match="--executor must be local or ray"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        make_executor("local", workers=0)


# ---- on a Ray cluster of two nodes on 127.0.0.1 ---------------------------------------------
@pytest.mark.slow
def test_the_cluster_and_ray_started_here_are_on_loopback(ray_cluster, monkeypatch):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == ray_cluster.nodes == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    # Ray started by the executor itself (no cluster given): on 127.0.0.1 too, and a new
    # instance of its own, not the cluster another process runs here (which Ray's own
    # RAY_ADDRESS and /tmp/ray/ray_current_cluster would point ray.init() at)
    ray.shutdown()
    monkeypatch.delenv("CORPUS_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    from catalog.executor import ray_init

    ray_init(None)
    try:
        here = [n for n in ray.nodes() if n["Alive"]]
        assert len(here) == 1 and {n["NodeManagerAddress"] for n in here} == {"127.0.0.1"}
        gcs = ray.get_runtime_context().gcs_address
        assert gcs.startswith("127.0.0.1:") and gcs != ray_cluster.address
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_map_runs_on_both_nodes_like_the_local_pool(ray_cluster, tmp_path):
    ex = make_executor("ray", address=ray_cluster.address)
    assert isinstance(ex, RayExecutor) and ex.workers == 2  # one per CPU of the cluster
    batches = [[i, i + 1] for i in range(0, 40, 2)]
    out = list(ex.map(_times, batches, setup=_setup, setup_args=(str(tmp_path),),
                      desc="times", key=lambda x: f"item {x}"))
    local = list(LocalExecutor(1).map(_times, batches, setup=_setup,
                                      setup_args=(_tmp(),), desc="times",
                                      key=lambda x: f"item {x}"))
    assert out == local and out[13] == Failed("item 13", "ValueError: thirteen is unlucky")
    assert len(ex.stats.nodes) == 2 and sum(ex.stats.nodes.values()) == 40
    assert len(list(tmp_path.iterdir())) == 2  # state made once per actor
    assert not ex.actors  # released at the end of the map


@pytest.mark.slow
def test_ray_window_and_a_killed_worker_is_restarted(ray_cluster, tmp_path):
    pulled = []

    def source():
        for i in range(12):
            pulled.append(i)
            yield [i]

    ex = make_executor("ray", address=ray_cluster.address)
    it = ex.map(_die_once, source(), setup=_marks, setup_args=(str(tmp_path),), desc="die")
    first = next(it)
    assert len(pulled) <= RAY_IN_FLIGHT * ex.workers + 1
    rest = list(it)
    # the worker that ran item 3 was killed; a new one took its place and ran the item
    assert (tmp_path / "killed").exists()
    assert [first, *rest] == [i + 1 for i in range(12)]


@pytest.mark.slow
def test_ray_workers_that_keep_dying_are_one_clear_error(ray_cluster, tmp_path):
    ex = make_executor("ray", address=ray_cluster.address)
    with pytest.raises(WorkerLostError, match=r"Ray workers died 4 times.*run the command"):
        list(ex.map(_die, [[1], [2]], setup=_marks, setup_args=(str(tmp_path),), desc="die"))
    assert not ex.actors
