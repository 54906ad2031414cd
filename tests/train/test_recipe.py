"""The torchrun recipe end to end: 2 real gloo ranks on CPU, MiniLM, the bundled CLEAR sample.

One uninterrupted reference run is shared (module fixture; it validates every 5 steps and
writes TensorBoard events); the crash tests compare the sample ids every step trained on with
it. Faults are planted through the recipe's test hook (``CORPUS_TRAIN_FAULT``): a rank that
exits at step k on the first attempt, and a poison sample that kills whichever rank trains on
it. Early stopping has its own short runs (a learning rate high enough that the validation
error soon gets worse), one of them killed and resumed.
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
    best_checkpoint,
    best_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    prune_best,
    rng_state,
    save_best,
    save_checkpoint,
    set_rng_state,
)
from train.launch import LaunchConfig, TrainingFailed, run_training
from train.model import CARD_FILE, ModelConfig, build_model
from train.recipe import FAULT_ENV, TrainConfig, Validation, read_metrics
from train.shards import build_shards, read_manifest

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
    return [r["loss"] for r in read_metrics(run_dir)[0]]


EVAL_EVERY = 5


@pytest.fixture(scope="module")
def reference(lakehouse, tmp_path_factory):
    """An uninterrupted 3-epoch run, validating every 5 steps, with TensorBoard events."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    res = run_training(lakehouse, _cfg(lakehouse, epochs=3, eval_every=EVAL_EVERY,
                                       tensorboard=True),
                       LaunchConfig(nproc=NPROC), run_dir=run_dir, env=_env())
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
    rec = read_metrics(run_dir)[0][-1]
    assert "split" not in rec  # training rows keep their format
    for key in ("loss", "step_time_s", "tokens_per_s", "peak_rss_bytes", "peak_device_bytes"):
        assert key in rec
    assert rec["tokens_per_s"] > 0 and rec["peak_rss_bytes"] > 100 * 2**20
    # every rank's output is captured in the run folder (torchrun's stdout/stderr per rank),
    # and each rank's INFO records are in its own log whatever the console's verbosity
    attempt = run_dir / "logs" / "attempt-0"
    captured = {p.parent.name for p in attempt.rglob("std*.log")}
    assert {"0", "1"} <= captured, captured
    infos = {p.name: p.read_text() for p in attempt.glob("rank-*.info.log")}
    assert set(infos) == {"rank-0.info.log", "rank-1.info.log"}, infos
    assert all("INFO train.dist: rank" in text for text in infos.values()), infos
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


def _validation_split(lh: Lakehouse) -> tuple[int, set[str]]:
    """(windows, books) of the validation split of the module's shards."""
    manifest, _ = read_manifest(lh, "clear", version=lh.version("shards"), split="validation")
    return (sum(manifest["n_samples"].to_pylist()),
            {b for ids in manifest["book_ids"].to_pylist() for b in ids})


def _book_mae(lh: Lakehouse, folder: Path) -> float:
    """A saved model's validation book MAE, computed here in one process."""
    import torch

    from train.data import ShardStream
    from train.model import aggregate_windows, load_model

    model = load_model(folder).eval()
    val = ShardStream(lh, "clear", version=lh.version("shards"), split="validation",
                      shuffle=False)
    books, preds, truth = [], [], {}
    with torch.no_grad():
        for b in val.loader(8):
            preds += model(b["input_ids"], b["attention_mask"]).tolist()
            books += b["book_ids"]
            truth.update(zip(b["book_ids"], b["targets"].tolist(), strict=True))
    by_book = aggregate_windows(books, preds)
    return sum(abs(by_book[k] - truth[k]) for k in by_book) / len(by_book)


@pytest.mark.slow
def test_validation_rows_summary_model_card_and_tensorboard(lakehouse, reference):
    run_dir, m = reference.run_dir, reference.metrics
    steps = m["steps"]
    per_epoch = steps // 3
    train_rows, vals = read_metrics(run_dir)
    assert [r["step"] for r in train_rows] == list(range(1, steps + 1))
    # every 5 steps, at each epoch's end; once each (the raw file has no repeats either)
    expected = sorted({*range(EVAL_EVERY, steps + 1, EVAL_EVERY), per_epoch, 2 * per_epoch,
                       steps})
    assert [v["step"] for v in vals] == expected
    raw = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("split") == "validation" for r in raw) == len(expected)
    # the two ranks' shares together are the whole validation split, each window once
    windows, books = _validation_split(lakehouse)
    for v in vals:
        assert (v["val_windows"], v["val_books"]) == (windows, len(books))
        assert v["val_loss"] == v["val_window_mse"] and v["val_book_rmse"] >= v["val_book_mae"]
    assert vals[-1]["val_loss"] < vals[0]["val_loss"]  # it learns
    # summarised in the result and the runs row; without early stopping the last model is saved
    best = min(vals, key=lambda v: v["val_book_mae"])
    assert (m["best_step"], m["best_val_book_mae"]) == (best["step"], best["val_book_mae"])
    assert m["model_step"] == steps and m["val_book_mae"] == vals[-1]["val_book_mae"]
    assert m["validations"] == len(vals) and m["stopped_early"] is False
    row = next(r for r in lakehouse.read("runs").to_pylist() if r["run_id"] == reference.run_id)
    recorded = json.loads(row["metrics"])
    assert recorded["best_step"] == best["step"]
    assert recorded["first_val_book_mae"] == vals[0]["val_book_mae"]
    assert recorded["last_val_book_mae"] == vals[-1]["val_book_mae"]
    # the model card, in the saved folder and in the stored copy
    card = (Path(m["model"]) / CARD_FILE).read_text()
    version = lakehouse.version("shards")
    manifest, _ = read_manifest(lakehouse, "clear", version=version)
    for text in ("`all-minilm-l6-v2`", "| head | attention", f"clear@{version}",
                 "bt_easiness", "higher = easier", "LoRA r=8",
                 f"texts@{manifest['texts_version'][0].as_py()}",
                 f"scores@{manifest['scores_version'][0].as_py()}", "Intended use",
                 f"Saved model: step {steps}, the last step"):
        assert text in card, text
    if len(books) < 10:
        assert f"| books | {len(books)} (n={len(books)}: unreliable) |" in card
    stored = lakehouse.store.get_bytes(f"runs/{reference.run_id}/final/{CARD_FILE}")
    assert stored.decode() == card
    # TensorBoard: one point per step and per validation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    assert [e.step for e in events.Scalars("train/lr")] == list(range(1, steps + 1))
    for tag, key in (("validation/loss", "val_loss"), ("validation/book_mae", "val_book_mae")):
        got = events.Scalars(tag)
        assert [e.step for e in got] == expected
        assert [e.value for e in got] == pytest.approx([v[key] for v in vals], rel=1e-6)


def _early_cfg(lh: Lakehouse) -> TrainConfig:
    # lr 10x the reference's: the validation error soon gets worse, and patience 1 stops it
    return _cfg(lh, epochs=3, lr=5e-3, eval_every=2, ckpt_every=3, early_stop=1,
                tensorboard=True)


@pytest.fixture(scope="module")
def early(lakehouse, tmp_path_factory):
    """An uninterrupted run that stops early."""
    return run_training(lakehouse, _early_cfg(lakehouse), LaunchConfig(nproc=NPROC),
                        run_dir=tmp_path_factory.mktemp("runs") / "early", env=_env())


def _steps_per_epoch(lh: Lakehouse) -> int:
    from train.data import ShardStream

    train_split = ShardStream(lh, "clear", version=lh.version("shards"), rank=0,
                              world_size=NPROC, drop_last=True)
    return -(-len(train_split) // 8)


@pytest.mark.slow
def test_early_stopping_stops_and_saves_the_best_model(lakehouse, early):
    m, run_dir = early.metrics, early.run_dir
    per_epoch = _steps_per_epoch(lakehouse)
    assert m["stopped_early"] is True and m["steps"] < 3 * per_epoch
    _, vals = read_metrics(run_dir)
    assert [v["step"] for v in vals] == sorted(
        {*range(2, m["steps"] + 1, 2), *range(per_epoch, m["steps"] + 1, per_epoch)})
    best = min(vals, key=lambda v: v["val_book_mae"])
    last = vals[-1]
    # stopped at the first validation that did not improve on the best
    assert last["step"] == m["steps"] and last["since_best"] == 1 and not last["best"]
    assert last["val_book_mae"] >= best["val_book_mae"]
    assert m["best_step"] == m["model_step"] == best["step"] < last["step"]
    assert m["val_book_mae"] == m["best_val_book_mae"] == best["val_book_mae"]
    # the saved model is the best step's (only that best folder is left) ...
    folder = Path(m["checkpoint"])
    assert folder == best_checkpoint(run_dir, best["step"]) and best_checkpoints(run_dir) == [
        folder]
    # ... and scores the validation split as that step did, not as the last one
    mae = _book_mae(lakehouse, folder)
    assert mae == pytest.approx(best["val_book_mae"], rel=1e-4)
    assert mae != pytest.approx(last["val_book_mae"], rel=1e-4)
    final = json.loads(lakehouse.store.get_bytes(f"runs/{early.run_id}/final/meta.json"))
    assert final["step"] == best["step"]
    card = (Path(m["model"]) / CARD_FILE).read_text()  # the run's model: a calibrated copy
    assert f"stopped early at step {m['steps']}" in card
    assert f"Saved model: step {best['step']}, the best by validation book MAE" in card


@pytest.mark.slow
def test_early_stopping_resumes_exactly_after_a_kill(lakehouse, early, tmp_path):
    from train.checkpoint import checkpoint_name

    stop, best_step = early.metrics["steps"], early.metrics["best_step"]
    run_dir = tmp_path / "killed-early"
    # rank 1 dies on the step that stops the uninterrupted run
    res = run_training(lakehouse, _early_cfg(lakehouse), LaunchConfig(nproc=NPROC,
                       max_restarts=1), run_dir=run_dir,
                       env=_env({"crash_at_step": stop, "rank": 1, "attempt": 0}))
    assert res.attempts == 2
    per_epoch = _steps_per_epoch(lakehouse)
    saved = [k for k in range(1, stop) if k % 3 == 0 or k % per_epoch == 0]
    assert res.metrics["resumed_from"] == checkpoint_name(saved[-1])
    assert run_steps(run_dir) == run_steps(early.run_dir)
    got, want = read_metrics(run_dir)[1], read_metrics(early.run_dir)[1]
    assert [v["step"] for v in got] == [v["step"] for v in want]
    for g, w in zip(got, want, strict=True):
        if g["step"] < stop:  # replayed exactly
            assert g["val_book_mae"] == w["val_book_mae"]
        else:  # the crashed step is replayed with its suspect samples one by one
            assert g["val_book_mae"] == pytest.approx(w["val_book_mae"], rel=1e-2)
    assert (res.metrics["stopped_early"], res.metrics["steps"], res.metrics["best_step"]) == (
        True, stop, best_step)
    assert best_checkpoints(run_dir) == [best_checkpoint(run_dir, best_step)]
    assert _book_mae(lakehouse, Path(res.metrics["checkpoint"])) == pytest.approx(
        early.metrics["best_val_book_mae"], rel=1e-6)
    # TensorBoard hides what the killed attempt wrote after the checkpoint: one point a step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, stop + 1))
    assert [e.step for e in events.Scalars("validation/book_mae")] == [v["step"] for v in got]


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


def test_validation_state_keeps_the_best_and_stops_after_patience():
    v = Validation(patience=2)
    for step, mae in ((2, 3.0), (4, 2.0), (6, 2.5), (8, 1.5), (10, 1.5)):
        assert v.update(step, {"val_book_mae": mae}) is (step in (2, 4, 8))
        assert not v.stopped
    assert (v.best_step, v.best["val_book_mae"], v.since_best) == (8, 1.5, 1)
    v.update(12, {"val_book_mae": float("nan")})  # a diverged model is never the best
    assert v.stopped and (v.step, v.count, v.best_step) == (12, 6, 8)
    # saved with a checkpoint and restored; the patience is the resumed run's
    again = Validation.from_dict(json.loads(json.dumps(v.to_dict())), patience=3)
    assert (again.best_step, again.since_best, again.best, again.patience) == (
        8, 2, v.best, 3)
    off = Validation()  # patience 0: never stops
    for step in range(1, 6):
        off.update(step, {"val_book_mae": float(step)})
    assert not off.stopped and off.best_step == 1 and off.since_best == 4


def test_read_metrics_splits_rows_and_keeps_a_replayed_steps_last_record(tmp_path):
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0},
            {"split": "validation", "step": 2, "val_book_mae": 1.0},
            {"step": 3, "loss": 1.9},  # a crash, then steps 3 and 4 again from checkpoint 2
            {"step": 3, "loss": 1.5}, {"step": 4, "loss": 1.0},
            {"split": "validation", "step": 4, "val_book_mae": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, val = read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in train] == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)]
    assert [(r["step"], r["val_book_mae"]) for r in val] == [(2, 1.0), (4, 0.5)]
    assert read_metrics(tmp_path / "nothing") == ([], [])


def test_best_models_are_kept_apart_and_pruned(tmp_path):
    model = build_model(ModelConfig("all-minilm-l6-v2", lora_r=2, head="dense"), seed=0)
    for step in (2, 4):
        save_best(tmp_path, step=step, model=model, metrics={"val_book_mae": 1.0 / step})
    (tmp_path / "best" / ".step-000000006.tmp").mkdir()  # a crash while writing one
    assert [p.name for p in best_checkpoints(tmp_path)] == ["step-000000002", "step-000000004"]
    meta = json.loads((best_checkpoint(tmp_path, 4) / "meta.json").read_text())
    assert meta["step"] == 4 and meta["metrics"] == {"val_book_mae": 0.25}
    assert best_checkpoint(tmp_path, 6) is None
    # step checkpoints and best models do not prune each other
    save_checkpoint(tmp_path, step=5, model=model, train_state={"step": 5}, keep=1)
    prune_best(tmp_path, 4)
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["step-000000004"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000005"]


def test_validation_options_are_checked():
    from catalog.errors import ConfigError
    from train.recipe import require_tensorboard

    with pytest.raises(ConfigError, match="eval_every"):
        TrainConfig(root="x", dataset="d", shards_version=0, model={}, eval_every=-1)
    with pytest.raises(ConfigError, match="early_stop"):
        TrainConfig(root="x", dataset="d", shards_version=0, model={}, early_stop=-2)
    require_tensorboard()  # installed here (the tensorboard extra)


def test_missing_tensorboard_is_a_clear_error(monkeypatch):
    import sys

    from catalog.errors import ConfigError
    from train.recipe import require_tensorboard

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    with pytest.raises(ConfigError, match=r"corpus\[tensorboard\]"):
        require_tensorboard()
