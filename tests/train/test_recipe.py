"""The torchrun recipe end to end: 2 real gloo ranks on CPU, MiniLM, the bundled CLEAR sample.

One uninterrupted reference run is shared (module fixture); the crash tests compare the sample
ids every step trained on with it. Faults are planted through the recipe's test hook
(``CORPUS_TRAIN_FAULT``): a rank that exits at step k on the first attempt, and a poison sample
that kills whichever rank trains on it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from catalog import Lakehouse
from tests.helpers import import_sample, run_steps, small_config
from train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from train.launch import LaunchConfig, TrainingFailed, run_training
from train.model import ModelConfig, build_model
from train.recipe import FAULT_ENV, TrainConfig
from train.shards import build_shards

NPROC = 2


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory) -> Lakehouse:
    lh = Lakehouse(str(tmp_path_factory.mktemp("recipe") / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config())
    return lh


def _cfg(lh: Lakehouse, **kw) -> TrainConfig:
    opts = {"epochs": 1, "batch": 8, "lr": 5e-4, "ckpt_every": 4, "seed": 0}
    opts.update(kw)
    return TrainConfig(root=lh.root, dataset="clear", shards_version=lh.version("shards"),
                       model=ModelConfig("all-minilm-l6-v2", head="attention").to_dict(),
                       **opts)


def _env(fault: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = json.dumps(fault)
    return env


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(lakehouse, tmp_path_factory):
    """An uninterrupted 3-epoch run."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    res = run_training(lakehouse, _cfg(lakehouse, epochs=3), LaunchConfig(nproc=NPROC),
                       run_dir=run_dir, env=_env())
    return res


@pytest.mark.slow
def test_two_ranks_converge_and_the_run_is_recorded(lakehouse, reference):
    run_dir = reference.run_dir
    assert reference.status == "finished" and reference.attempts == 1
    losses = _losses(run_dir)
    per_epoch = len(losses) // 3
    first, last = losses[:per_epoch], losses[-per_epoch:]
    # the training loss of the last epoch is clearly below the first epoch's
    assert sum(last) / len(last) < 0.6 * sum(first) / len(first), (first, last)
    steps = run_steps(run_dir)
    # every step trained NPROC disjoint batches; each epoch saw each sample at most once
    epoch_one = [s for k in range(1, per_epoch + 1) for rank in steps[k] for s in rank]
    assert len(epoch_one) == len(set(epoch_one)) > 200
    rec = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss", "step_time_s", "tokens_per_s", "peak_rss_bytes", "peak_device_bytes"):
        assert key in rec
    assert rec["tokens_per_s"] > 0 and rec["peak_rss_bytes"] > 100 * 2**20
    # every rank's output is captured in the run folder
    logs = sorted(p for p in (run_dir / "logs" / "attempt-0").rglob("*.log")
                  if p.stat().st_size)
    ranks_logged = {p.parent.name for p in logs}
    assert {"0", "1"} <= ranks_logged, logs
    # recorded in `runs` with lineage to the pinned shards version
    runs = lakehouse.read("runs").to_pylist()
    row = next(r for r in runs if r["run_id"] == reference.run_id)
    assert row["status"] == "finished" and row["shards_version"] == lakehouse.version("shards")
    assert json.loads(row["config"])["model"]["head"] == "attention"
    metrics = json.loads(row["metrics"])
    assert metrics["attempts"] == 1 and "val_book_mae" in metrics
    commit = lakehouse.history("runs")[0]
    assert commit.inputs == {"shards": lakehouse.version("shards")}
    assert lakehouse.store.exists(f"runs/{reference.run_id}/final/head.safetensors")


@pytest.mark.slow
def test_trained_head_and_adapter_survive_the_checkpoint(lakehouse, reference):
    """The final checkpoint, reloaded, scores the validation windows as the run did."""
    import torch

    from train.data import ShardStream
    from train.model import load_model

    model = load_model(reference.metrics["checkpoint"]).eval()
    val = ShardStream(lakehouse, "clear", version=lakehouse.version("shards"),
                      split="validation", shuffle=False)
    sq, n = 0.0, 0
    with torch.no_grad():
        for b in val.loader(8):
            pred = model(b["input_ids"], b["attention_mask"])
            sq += float(((pred - b["targets"]) ** 2).sum())
            n += len(b["sample_ids"])
    assert n == reference.metrics["val_windows"]
    assert sq / n == pytest.approx(reference.metrics["val_window_mse"], rel=1e-4)


@pytest.mark.slow
def test_killed_rank_resumes_at_the_exact_sample(lakehouse, reference, tmp_path):
    run_dir = tmp_path / "killed"
    res = run_training(lakehouse, _cfg(lakehouse, epochs=3, max_steps=10),
                       LaunchConfig(nproc=NPROC, max_restarts=1), run_dir=run_dir,
                       env=_env({"crash_at_step": 7, "rank": 1, "attempt": 0}))
    assert res.status == "finished" and res.attempts == 2
    assert res.metrics["resumed_from"] == "step-000000004"  # newest checkpoint before step 7
    assert res.skipped == []  # one crash is not enough to skip anything
    crashes = json.loads((run_dir / "crashes.json").read_text())
    ref = run_steps(reference.run_dir)
    assert set(crashes) <= {s for rank in ref[7] for s in rank}
    assert set(ref[7][1]) <= set(crashes)  # the killed rank's batch was in flight
    got = run_steps(run_dir)
    assert sorted(got) == list(range(1, 11))
    for k in range(1, 11):
        assert got[k] == ref[k], f"step {k} trained other samples after the resume"
    assert latest_checkpoint(run_dir).name == "step-000000010"


@pytest.mark.slow
def test_poison_sample_is_skipped_after_two_crashes(lakehouse, reference, tmp_path, caplog):
    ref = run_steps(reference.run_dir)
    poison = ref[6][1][3]
    run_dir = tmp_path / "poison"
    with caplog.at_level(logging.WARNING, logger="train.launch"):
        res = run_training(lakehouse, _cfg(lakehouse, max_steps=8),
                           LaunchConfig(nproc=NPROC, max_restarts=2), run_dir=run_dir,
                           env=_env({"poison": poison}))
    assert res.status == "finished" and res.attempts == 3
    assert res.skipped == [poison]  # only the poison: its batch-mates were cleared
    assert json.loads((run_dir / "crashes.json").read_text())[poison] == 2
    assert any(poison in r.getMessage() and "skip list" in r.getMessage()
               for r in caplog.records)
    got = run_steps(run_dir)
    assert all(poison not in rank for k in got for rank in got[k])
    # up to the checkpoint before the crash, the same samples as the reference
    for k in range(1, 5):
        assert got[k] == ref[k]
    row = next(r for r in lakehouse.read("runs").to_pylist() if r["run_id"] == res.run_id)
    assert json.loads(row["metrics"])["skipped"] == [poison]


@pytest.mark.slow
def test_a_job_that_keeps_crashing_fails_with_a_clear_error(lakehouse, tmp_path):
    with pytest.raises(TrainingFailed, match="failed 1 time"):
        run_training(lakehouse, _cfg(lakehouse, max_steps=3), LaunchConfig(nproc=1,
                     max_restarts=0), run_dir=tmp_path / "fails",
                     env=_env({"crash_at_step": 2, "rank": 0, "attempt": 0}))
    row = next(r for r in lakehouse.read("runs").to_pylist() if r["run_id"] == "fails")
    assert row["status"] == "failed"


@pytest.mark.slow
def test_hung_rank_is_treated_as_crashed_and_the_job_resumes(lakehouse, reference, tmp_path):
    run_dir = tmp_path / "hung"
    res = run_training(lakehouse, _cfg(lakehouse, max_steps=6),
                       LaunchConfig(nproc=NPROC, max_restarts=1, hang_timeout=8),
                       run_dir=run_dir, env=_env({"hang_at_step": 3, "rank": 1, "attempt": 0}))
    assert res.status == "finished" and res.attempts == 2
    ref = run_steps(reference.run_dir)
    # the hung rank's batch is the suspect, not the batch of the rank waiting for it
    assert set(json.loads((run_dir / "crashes.json").read_text())) == set(ref[3][1])
    got = run_steps(run_dir)
    assert [got[k] for k in range(1, 7)] == [ref[k] for k in range(1, 7)]


def test_checkpoints_are_atomic_pruned_and_found(tmp_path):
    import random

    import numpy as np
    import torch

    model = build_model(ModelConfig("all-minilm-l6-v2", lora_r=2, head="dense"), seed=0)
    state = {"step": 1, "loader": {"consumed": 8}, "rng": [rng_state()]}
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step=step, model=model, train_state={**state, "step": step},
                        keep=2)
    # a crash while saving leaves a temporary folder: never taken for a checkpoint
    (tmp_path / "checkpoints" / ".step-000000004.abc").mkdir()
    (tmp_path / "checkpoints" / "step-000000005").mkdir()  # no meta.json: incomplete
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000002", "step-000000003"]
    newest = latest_checkpoint(tmp_path)
    assert newest.name == "step-000000003"
    saved = load_train_state(newest)
    assert saved["step"] == 3 and saved["loader"] == {"consumed": 8}
    # saving the same step again (a resumed run) replaces it
    save_checkpoint(tmp_path, step=3, model=model, train_state={**state, "step": 3, "x": 1})
    assert load_train_state(latest_checkpoint(tmp_path))["x"] == 1
    # RNG states round-trip: the same random numbers after restoring
    set_rng_state(saved["rng"][0])
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(saved["rng"][0])
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_launch_config_and_torchrun_command(tmp_path):
    from catalog.errors import ConfigError
    from train.launch import torchrun_command

    with pytest.raises(ConfigError, match="--rdzv"):
        LaunchConfig(nnodes=2)
    with pytest.raises(ConfigError):
        LaunchConfig(nproc=0)
    one = torchrun_command(tmp_path, LaunchConfig(nproc=2), attempt=1)
    assert "--standalone" in one and "--nproc-per-node=2" in one and "--max-restarts=0" in one
    assert f"--log-dir={tmp_path / 'logs' / 'attempt-1'}" in one
    assert one[-3:] == ["-m", "train.recipe", str(tmp_path)]
    multi = torchrun_command(tmp_path, LaunchConfig(nproc=4, nnodes=2, rdzv="10.0.0.1:29400",
                                                    node_rank=1), attempt=0)
    assert "--standalone" not in multi
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:29400",
            "--node-rank=1", f"--rdzv-id={tmp_path.name}"} <= set(multi)


def test_crash_bookkeeping_skips_only_repeat_offenders(tmp_path, caplog):
    from train.launch import _suspects, record_crash

    inflight = tmp_path / "inflight"
    inflight.mkdir()

    def write(rank: int, state: str, ids: list[str]) -> None:
        (inflight / f"rank-{rank}.json").write_text(json.dumps(
            {"rank": rank, "state": state, "sample_ids": ids}))

    write(0, "peer_failure", ["a", "b"])  # a victim of rank 1
    write(1, "running", ["c", "d"])
    assert _suspects(tmp_path) == ["c", "d"]
    assert record_crash(tmp_path, ["c", "d"]) == []
    write(1, "running", ["d"])  # the next attempt isolated the suspects: d alone crashed
    with caplog.at_level(logging.WARNING, logger="train.launch"):
        assert record_crash(tmp_path, _suspects(tmp_path)) == ["d"]
    assert any("sample d" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "skip.json").read_text()) == ["d"]
    write(0, "sync", ["a"])  # only ranks waiting for peers: they are the suspects then
    write(1, "terminated", ["c"])
    assert _suspects(tmp_path) == ["a"]
