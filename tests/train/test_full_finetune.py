"""Full fine-tuning, a chosen layer or a learned mix of layers, layer-wise learning-rate
decay, and the head's standardised targets (issue 19).

The pure parts (a cut backbone, the parameter groups, config checks) run on MiniLM in
process; the recipe runs under torchrun with 2 real gloo ranks on the bundled CLEAR sample,
once uninterrupted and once with a rank killed, and must resume exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from catalog import ConfigError, Lakehouse
from tests.helpers import import_sample, run_steps, small_config
from train.launch import LaunchConfig, run_training
from train.model import (
    BACKBONE_FILE,
    CONFIG_FILE,
    ModelConfig,
    build_model,
    load_model,
    param_groups,
    read_trainable,
)
from train.recipe import FAULT_ENV, TrainConfig, read_metrics
from train.shards import build_shards

MINILM = "all-minilm-l6-v2"
NPROC = 2


def _ids(n: int = 2, length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0
    return ids, mask


def test_a_cut_backbone_gives_that_layers_states_and_drops_the_rest():
    full = build_model(ModelConfig(MINILM, lora_r=0), seed=0).eval()
    cut = build_model(ModelConfig(MINILM, lora_r=0, layer=3), seed=0).eval()
    assert len(cut.backbone.encoder.layer) == 3 == cut.backbone.config.num_hidden_layers
    assert full.backbone.pooler is None  # unused by any head: DDP would wait for its grads
    ids, mask = _ids()
    with torch.no_grad():
        want = full.backbone(input_ids=ids, attention_mask=mask,
                             output_hidden_states=True).hidden_states[3]
        got = cut.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want)
    with pytest.raises(ConfigError, match="has 6 layers"):
        build_model(ModelConfig(MINILM, lora_r=0, layer=7))


def test_layer_wise_decay_gives_lower_layers_smaller_rates():
    model = build_model(ModelConfig(MINILM, lora_r=0, full=True, layer=4, layer_mix=True),
                        seed=0)
    groups = param_groups(model, lr=1e-3, decay=0.5)
    rates = [g["lr"] for g in groups]
    # head, mix and layer 4 at lr; layers 3, 2, 1 and the embeddings below, halving
    assert rates == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["backbone.embeddings.word_embeddings.weight"])] == pytest.approx(
        6.25e-5)
    assert by_id[id(named["backbone.encoder.layer.0.output.dense.weight"])] == pytest.approx(
        1.25e-4)
    assert by_id[id(named["mix.weights"])] == by_id[id(named["head.out.weight"])] == 1e-3
    # without decay: one group; LoRA adapters are grouped by their layer too
    assert len(param_groups(model, lr=1e-3)) == 1
    lora = build_model(ModelConfig(MINILM, lora_r=2), seed=0)
    # the head with the last layer, then the 5 layers below
    assert len(param_groups(lora, lr=1e-3, decay=0.5)) == 6


def test_full_and_mixed_models_save_and_load_their_weights(tmp_path):
    from train.model import save_model

    model = build_model(ModelConfig(MINILM, lora_r=0, full=True, layer=2, layer_mix=True,
                                    target_mean=-1.0, target_scale=0.5), seed=0)
    with torch.no_grad():  # trained weights differ from the pretrained ones
        model.backbone.encoder.layer[0].output.dense.weight.add_(0.01)
        model.mix.weights.copy_(torch.tensor([0.3, -0.2, 0.1]))
    folder = save_model(model, tmp_path / "m")
    assert (folder / BACKBONE_FILE).exists()
    saved = read_trainable(folder)
    assert not any(k.startswith("encoder.layer.2.") for k in saved["backbone"])  # cut
    again = load_model(folder).eval()
    ids, mask = _ids()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask), model.eval()(ids, mask))
    # a LoRA model's folder holds no backbone weights
    lora = save_model(build_model(ModelConfig(MINILM, lora_r=2), seed=0), tmp_path / "l")
    assert not (lora / BACKBONE_FILE).exists()


def test_model_options_are_checked():
    with pytest.raises(ConfigError, match="--lora-r 0"):
        ModelConfig(MINILM, full=True)  # lora_r defaults to 8
    with pytest.raises(ConfigError, match="--quant none"):
        ModelConfig(MINILM, full=True, lora_r=0, quant="4bit")
    with pytest.raises(ConfigError, match="layer must be >= 1"):
        ModelConfig(MINILM, layer=0)
    with pytest.raises(ConfigError, match="target_scale"):
        ModelConfig(MINILM, target_scale=0.0)
    with pytest.raises(ConfigError, match="lr_decay"):
        TrainConfig(root="x", dataset="d", shards_version=0, model={}, lr_decay=1.5)


def test_by_default_a_model_trains_on_the_function_it_is_evaluated_with():
    """R1's systematic positive bias came from dropout: a head fitted on states computed with
    dropout (0.1 in MiniLM) read the states of evaluation, computed without it, as shifted
    (BENCHMARKS.md, R1). Without backbone dropout, training and evaluation see one function."""
    ids, mask = _ids()
    model = build_model(ModelConfig(MINILM, lora_r=4), seed=0)
    assert model.cfg.dropout == 0.0
    with torch.no_grad():
        trained_on = model.train()(ids, mask)
        evaluated = model.eval()(ids, mask)
    torch.testing.assert_close(trained_on, evaluated)
    own = build_model(ModelConfig(MINILM, lora_r=4, dropout=None), seed=0)
    with torch.no_grad():
        draws = torch.stack([own.train()(ids, mask) for _ in range(8)])
        plain = own.eval()(ids, mask)
    assert float((draws - plain).abs().max()) > 1e-3  # what the head trained on differs


def _fit_head(cfg: ModelConfig, ids, mask, targets, steps: int) -> float:
    """Train the head of a frozen MiniLM on one batch; the mean signed error after."""
    model = build_model(cfg, seed=0)
    model.backbone.eval()  # no dropout: the same features every step
    with torch.no_grad():
        states = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    opt = torch.optim.AdamW(param_groups(model, lr=1e-3))
    for _ in range(steps):
        raw = model.head(states, mask)
        loss = model.loss(raw * cfg.target_scale + cfg.target_mean, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model.head(states, mask) * cfg.target_scale + cfg.target_mean
    return float((pred - targets).mean())


def test_a_standardised_head_reaches_a_target_far_from_zero():
    """A head that starts at 0 and is moved by AdamW at about the learning rate per step
    cannot reach targets in the hundreds (Lexile measures) in a few hundred steps; its
    predictions stay pulled towards 0. Standardised, it starts at the targets' mean."""
    ids, _ = _ids(n=16, length=32)
    mask = torch.ones_like(ids)
    targets = torch.linspace(500.0, 1100.0, 16)  # Lexile-like: mean 800, sd ~180
    mean, sd = float(targets.mean()), float(targets.std(unbiased=False))
    raw_bias = _fit_head(ModelConfig(MINILM, lora_r=0), ids, mask, targets, steps=100)
    std_bias = _fit_head(ModelConfig(MINILM, lora_r=0, target_mean=mean, target_scale=sd),
                         ids, mask, targets, steps=100)
    assert raw_bias < -500, raw_bias  # still near 0, hundreds below the targets
    assert abs(std_bias) < 0.05 * sd, std_bias


# ---- the recipe under torchrun ------------------------------------------------------------


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory) -> Lakehouse:
    lh = Lakehouse(str(tmp_path_factory.mktemp("fullft") / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config())
    return lh


def _cfg(lh: Lakehouse, **kw) -> TrainConfig:
    opts = {"epochs": 1, "batch": 8, "lr": 1e-4, "ckpt_every": 3, "seed": 0, "max_steps": 8,
            "lr_decay": 0.8, "eval_every": 4}
    opts.update(kw)
    # no dropout: a resumed run re-runs the crashed step's samples one by one, and with
    # dropout their masks would differ from the uninterrupted run's (a different draw)
    model = ModelConfig(MINILM, lora_r=0, full=True, layer=3, layer_mix=True, dropout=0.0)
    return TrainConfig(root=lh.root, dataset="clear", shards_version=lh.version("shards"),
                       model=model.to_dict(), **opts)


def _env(fault: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = json.dumps(fault)
    return env


@pytest.fixture(scope="module")
def full_run(lakehouse, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    return run_training(lakehouse, _cfg(lakehouse), LaunchConfig(nproc=NPROC),
                        run_dir=run_dir, env=_env())


@pytest.mark.slow
def test_full_fine_tuning_trains_the_backbone_under_two_ranks(lakehouse, full_run):
    from train.data import ShardStream

    assert full_run.status == "finished" and full_run.metrics["steps"] == 8
    folder = Path(full_run.metrics["checkpoint"])
    saved = json.loads((folder / CONFIG_FILE).read_text())
    # the head reads standardised units: the training windows' target mean and deviation
    mean, sd = ShardStream(lakehouse, "clear", version=lakehouse.version("shards")
                           ).target_stats()
    assert (saved["target_mean"], saved["target_scale"]) == pytest.approx((mean, sd))
    assert mean < -0.3  # BT easiness: far enough from 0 for the scaling to matter
    # every kept backbone layer moved away from the pretrained weights (the lowest least)
    trained = read_trainable(folder)["backbone"]
    pretrained = build_model(ModelConfig(MINILM, lora_r=0, layer=3)).backbone.state_dict()
    assert set(trained) == set(pretrained)
    key = "encoder.layer.{}.attention.self.query.weight"
    moved = [float((trained[key.format(i)] - pretrained[key.format(i)]).abs().max())
             for i in range(3)]
    assert all(m > 0 for m in moved), moved
    # the saved model scores the validation windows as the run's last validation did
    model = load_model(folder).eval()
    val = ShardStream(lakehouse, "clear", version=lakehouse.version("shards"),
                      split="validation", shuffle=False)
    sq, n = 0.0, 0
    with torch.no_grad():
        for b in val.loader(8):
            sq += float(((model(b["input_ids"], b["attention_mask"]) - b["targets"]) ** 2)
                        .sum())
            n += len(b["sample_ids"])
    assert sq / n == pytest.approx(full_run.metrics["val_window_mse"], rel=1e-4)
    card = (Path(full_run.metrics["model"]) / "README.md").read_text()  # the run's model
    assert "fine-tuned: its weights are in this folder" in card
    assert "mix of the embeddings' and every layer's states up to layer 3" in card


@pytest.mark.slow
def test_full_fine_tuning_resumes_exactly_after_a_kill(lakehouse, full_run, tmp_path):
    run_dir = tmp_path / "killed"
    res = run_training(lakehouse, _cfg(lakehouse), LaunchConfig(nproc=NPROC, max_restarts=1),
                       run_dir=run_dir, env=_env({"crash_at_step": 5, "rank": 1,
                                                  "attempt": 0}))
    assert res.status == "finished" and res.attempts == 2
    assert res.metrics["resumed_from"] == "step-000000003"
    assert run_steps(run_dir) == run_steps(full_run.run_dir)
    got = {r["step"]: r["loss"] for r in read_metrics(run_dir)[0]}
    want = {r["step"]: r["loss"] for r in read_metrics(full_run.run_dir)[0]}
    assert sorted(got) == sorted(want) == list(range(1, 9))
    for k in range(1, 5):  # before the crash: the same run
        assert got[k] == want[k]
    for k in range(5, 9):  # step 5 ran its suspects one by one: the same sums, reordered
        assert got[k] == pytest.approx(want[k], rel=1e-4)
    a = read_trainable(res.metrics["checkpoint"])
    b = read_trainable(full_run.metrics["checkpoint"])
    for part in ("backbone", "head"):
        for k in b[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=1e-6)


def test_plan_counts_every_weight_of_a_full_fine_tune_of_a_cut_backbone():
    from train.plan import PlanConfig, load_arch, plan_memory

    model = build_model(ModelConfig(MINILM, lora_r=0, full=True, layer=4), seed=0)
    mem = plan_memory(load_arch(MINILM), PlanConfig(MINILM, lora_r=0, full=True, layer=4,
                                                    device="cpu", dtype="float32"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert mem.trainable_params == trainable
    assert mem.trainable_state == 16 * trainable
    with pytest.raises(ConfigError, match=r"choose --layer 1\.\.6"):
        plan_memory(load_arch(MINILM), PlanConfig(MINILM, layer=7))


@pytest.mark.slow
def test_a_checkpoint_from_before_these_options_resumes_as_it_was_trained(lakehouse,
                                                                          tmp_path):
    """A run started by older code (its checkpoints' model config has no dropout and no
    target scaling: it trained with the backbone's own dropout on the raw target) resumes as
    it was trained, not with today's defaults."""
    run_dir = tmp_path / "old"
    cfg = TrainConfig(root=lakehouse.root, dataset="clear",
                      shards_version=lakehouse.version("shards"),
                      model=ModelConfig(MINILM, lora_r=2).to_dict(), batch=8, lr=1e-3,
                      max_steps=2, ckpt_every=1, seed=0)
    run_training(lakehouse, cfg, LaunchConfig(nproc=1), run_dir=run_dir, env=_env())
    from train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    saved = json.loads((ckpt / CONFIG_FILE).read_text())
    assert saved["dropout"] == 0.0 and saved["target_mean"] < -0.3  # today's defaults
    for key in ("dropout", "target_mean", "target_scale", "full", "layer", "layer_mix"):
        saved.pop(key)  # as older code wrote it
    (ckpt / CONFIG_FILE).write_text(json.dumps(saved))
    more = TrainConfig(**{**cfg.to_dict(), "max_steps": 3})
    res = run_training(lakehouse, more, LaunchConfig(nproc=1), run_dir=run_dir, env=_env())
    assert res.metrics["resumed_from"] == ckpt.name and res.metrics["steps"] == 3
    final = json.loads((Path(res.metrics["checkpoint"]) / CONFIG_FILE).read_text())
    assert final["dropout"] is None
    assert (final["target_mean"], final["target_scale"]) == (0.0, 1.0)
