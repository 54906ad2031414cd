"""The memory/time/cost planner: from config.json only, checked against measured peak memory.

The measurement runs real training steps (MiniLM + LoRA, AdamW) in a fresh subprocess and
takes its peak RSS (VmHWM, reset just before the model is built) minus its RSS then. glibc's
malloc would otherwise keep freed activation buffers in its heap (RSS then measures the allocator's
retention, not live tensors), so the subprocess sets ``MALLOC_MMAP_THRESHOLD_``: large blocks
are mapped and unmapped, as a GPU allocator's ``max_memory_allocated`` would count them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from catalog.errors import ConfigError
from tests.helpers import LLAMA_7B, MISTRAL, NO_CAP
from train.plan import (
    GiB,
    PlanConfig,
    arch_from_config,
    load_arch,
    plan_cost,
    plan_memory,
)

MEASURE = r"""
import json, os, sys
import torch, transformers, peft
torch.set_num_threads(1)
from train.model import ModelConfig, build_model
a = json.loads(sys.argv[1])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
# The imports' own peak varies with the machine's state: reset the high-water mark (VmHWM)
# to the current RSS, so only what happens from here on counts.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
m = build_model(ModelConfig(a["backbone"], lora_r=a["lora_r"],
                            gradient_checkpointing=a["ckpt"]), seed=0)
m.train()
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(1000, 2000, (a["batch"], a["seq_len"]))
for _ in range(2):
    opt.zero_grad(set_to_none=True)
    m.loss(m(ids, torch.ones_like(ids)), torch.zeros(a["batch"])).backward()
    opt.step()
print(json.dumps({"peak": status("VmHWM") - base}))
"""



def _measure(**cfg) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cfg)], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def test_parameter_counts_match_the_real_models():
    from train.model import ModelConfig, build_model, count_parameters

    arch = load_arch("all-minilm-l6-v2")
    model = build_model(ModelConfig("all-minilm-l6-v2", lora_r=8, head="dense"), seed=0)
    trainable, total = count_parameters(model)
    mem = plan_memory(arch, PlanConfig("all-minilm-l6-v2", lora_r=8, head="dense"))
    assert mem.params + mem.trainable_params == total
    assert mem.trainable_params == trainable


def test_seven_billion_plan_without_weights():
    arch = arch_from_config(LLAMA_7B)
    # Llama-2-7B: 6.74e9 with its LM head (32000 x 4096), which AutoModel does not load
    assert abs(arch.params() - (6.738e9 - 32000 * 4096)) / 6.6e9 < 0.005
    t0 = time.perf_counter()
    q = plan_memory(arch, PlanConfig("x", seq_len=2048, batch=4, quant="4bit",
                                     gradient_checkpointing=True))
    full = plan_memory(arch, PlanConfig("x", seq_len=2048, batch=4, quant="none"))
    assert time.perf_counter() - t0 < 0.1
    assert 3 * GiB < q.weights < 4.5 * GiB  # NF4: ~0.52 byte per linear weight
    assert full.weights > 12 * GiB and full.total > q.total * 3
    assert q.fits(24 * GiB) and not full.fits(24 * GiB)
    # doubling the sequence without checkpointing grows activations about twice
    s2 = plan_memory(arch, PlanConfig("x", seq_len=4096, batch=4, quant="4bit"))
    s1 = plan_memory(arch, PlanConfig("x", seq_len=2048, batch=4, quant="4bit"))
    assert 1.9 < s2.activations / s1.activations < 2.2


def test_cost_plan_and_validation():
    c = plan_cost(books=10_000, tokens_per_book=36_000, epochs=2, gpus=8, tokens_per_s=5000,
                  price_per_gpu_hour=2.5, scaling_efficiency=0.9)
    assert c.tokens == 720_000_000
    assert c.wall_hours == pytest.approx(720e6 / (5000 * 8 * 0.9) / 3600)
    assert c.cost == pytest.approx(c.wall_hours * 8 * 2.5)
    with pytest.raises(ConfigError):
        plan_cost(books=0, tokens_per_book=1, tokens_per_s=1)
    with pytest.raises(ConfigError, match="quant"):
        PlanConfig("x", quant="8bit")
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        arch_from_config({"hidden_size": 8})


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq_len,ckpt", [(8, 128, False), (4, 256, False)])
def test_plan_matches_measured_peak_memory_on_cpu(batch, seq_len, ckpt):
    measured = _measure(backbone="all-minilm-l6-v2", lora_r=8, ckpt=ckpt, batch=batch,
                        seq_len=seq_len)
    planned = plan_memory(load_arch("all-minilm-l6-v2"), PlanConfig(
        "all-minilm-l6-v2", seq_len=seq_len, batch=batch, lora_r=8,
        gradient_checkpointing=ckpt, dtype="float32", device="cpu")).total
    assert abs(planned / measured - 1) < 0.15, (planned / 2**20, measured / 2**20)


# ---- position limits and suggestions -----------------------------------------------------------
def test_a_window_beyond_the_position_limit_is_refused_naming_the_limit():
    with pytest.raises(ConfigError, match=r"seq-len 65,536 .*position limit of 32,768"):
        plan_memory(arch_from_config(MISTRAL), PlanConfig("mistral", seq_len=65536))
    plan_memory(arch_from_config(MISTRAL), PlanConfig("mistral", seq_len=32768, batch=1))
    minilm = load_arch("all-minilm-l6-v2")
    assert minilm.position_limit == 512
    with pytest.raises(ConfigError, match=r"32,768 .*all-minilm-l6-v2.*limit of 512 "):
        plan_memory(minilm, PlanConfig("all-minilm-l6-v2", seq_len=32768))
    # no cap in the config: not refused
    free = arch_from_config(NO_CAP)
    assert free.position_limit is None
    assert plan_memory(free, PlanConfig("x", seq_len=65536, batch=1)).total > 0
    # RoBERTa numbers positions after the padding index: 514 rows, 512 tokens
    roberta = arch_from_config({**LLAMA_7B, "model_type": "roberta",
                                "max_position_embeddings": 514})
    assert roberta.position_limit == 512
    # BERT without the field: transformers' default of 512
    assert arch_from_config({**NO_CAP, "model_type": "bert"}).position_limit == 512


@pytest.mark.parametrize("arch,cfg,device_gib", [
    (arch_from_config(LLAMA_7B), PlanConfig("llama", seq_len=2048, batch=4), 24),
    (arch_from_config(MISTRAL), PlanConfig("mistral", seq_len=8192, batch=8), 40),
    (arch_from_config(LLAMA_7B), PlanConfig("llama", seq_len=4096, batch=16,
                                            gradient_checkpointing=True), 24),
    ("all-minilm-l6-v2", PlanConfig("all-minilm-l6-v2", seq_len=128, batch=8, dtype="float32",
                                    device="cpu"), 0.15),
    ("all-minilm-l6-v2", PlanConfig("all-minilm-l6-v2", seq_len=512, batch=32), 1.5),
])
def test_suggestions_for_a_config_that_does_not_fit_fit_when_planned_again(arch, cfg,
                                                                           device_gib):
    from dataclasses import replace

    from train.plan import suggest

    arch = load_arch(arch) if isinstance(arch, str) else arch
    device = int(device_gib * GiB)
    assert not plan_memory(arch, cfg).fits(device)
    found = suggest(arch, cfg, device)
    assert found
    for x in found:
        again = plan_memory(arch, x.config)
        assert again.fits(device) and again.total == x.peak, x
        changed = {k for k, v in vars(x.config).items() if getattr(cfg, k) != v}
        assert changed <= {"gradient_checkpointing", "quant", "batch"} and changed, x
        if "batch" in changed:
            # the largest batch that fits with the other changes, never more than asked
            assert x.config.batch < cfg.batch
            assert not plan_memory(arch, replace(x.config, batch=x.config.batch + 1)).fits(
                device) or x.config.batch + 1 == cfg.batch
            # with more GPUs the windows per step are kept; the peak per device is the same
            assert x.gpus == 1 or x.gpus * x.config.batch >= cfg.batch
        else:
            assert x.gpus == 1
    # no line repeats a smaller one: a set of switches that fits is not listed with more
    switches = [frozenset(k for k in ("gradient_checkpointing", "quant")
                          if getattr(x.config, k) != getattr(cfg, k))
                for x in found if x.config.batch == cfg.batch]
    assert all(not (a < b) for a in switches for b in switches)
    # the GPU line says what more GPUs do not do
    assert all("would not lower the peak per device" in x.note for x in found if x.gpus > 1)


def test_each_switch_is_suggested_where_it_is_what_helps():
    from train.plan import suggest

    arch = arch_from_config(LLAMA_7B)
    # the weights are what does not fit: 4-bit, and a smaller batch cannot help
    weights = PlanConfig("llama", seq_len=512, batch=2, gradient_checkpointing=True)
    assert [x.options for x in suggest(arch, weights, 12 * GiB)] == ["--quant 4bit"]
    # activations are: checkpointing alone, or 4-bit with a smaller batch (and more GPUs)
    acts = [x.options for x in suggest(arch, PlanConfig("llama", seq_len=2048, batch=4),
                                       24 * GiB, gpus=2)]
    assert acts == ["--grad-ckpt", "--quant 4bit --batch 2", "--quant 4bit --batch 2 --gpus 4"]
    # on a CPU there is no 4-bit to suggest
    cpu = PlanConfig("llama", seq_len=512, batch=2, gradient_checkpointing=True,
                     device="cpu", dtype="float32")
    assert suggest(arch, cpu, 20 * GiB) == []


def test_no_suggestions_when_it_fits_or_nothing_does():
    from train.plan import plan_report, suggest

    arch = arch_from_config(LLAMA_7B)
    small = PlanConfig("llama", seq_len=512, batch=2)
    assert plan_memory(arch, small).fits(24 * GiB) and suggest(arch, small, 24 * GiB) == []
    # 7B on a 4 GiB device: even 4-bit, checkpointed, batch 1 does not fit
    report = plan_report(arch, small, plan_memory(arch, small), device_gb=4)
    assert report["fits"] is False and report["suggestions"] == []
    assert report["smallest_peak_gib"] > 3.6
    # the JSON form of a non-fitting plan lists its suggestions
    report = plan_report(arch, PlanConfig("llama", seq_len=2048, batch=4),
                         plan_memory(arch, PlanConfig("llama", seq_len=2048, batch=4)),
                         device_gb=24, gpus=2)
    assert report["suggestions"] and all(s["fits"] and s["peak_gib"] < 0.9 * 24
                                         for s in report["suggestions"])
    assert json.loads(json.dumps(report)) == report
