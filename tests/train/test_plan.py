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

# Llama-2-7B's config.json (public numbers), for planning without any weights
LLAMA_7B = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
            "vocab_size": 32000, "max_position_embeddings": 4096}


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
