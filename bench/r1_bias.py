"""Where R1's systematic bias comes from (BENCHMARKS.md, "R1 bias").

Trains the R1 recipe (all-MiniLM-L6-v2, LoRA r=16, attention head, lr 1e-3, batch 8 x 2
ranks) for a few epochs on the shards dataset ``clear`` of an R1 lakehouse, then measures the
mean signed error and RMSE of the saved model on every training and held-out window, with the
backbone's dropout off (evaluation mode, as ``corpus eval`` runs) and on (training mode, as
the head saw the states while it was fitted).

Variants (comma-separated, second argument):
    raw   the head on the raw target, the backbone's own dropout (the recipe before the fix)
    std   standardised targets, the backbone's own dropout
    std0  standardised targets, no backbone dropout (``corpus train``'s default now)

Usage: CORPUS_ROOT=LAKEHOUSE python bench/r1_bias.py [EPOCHS] [VARIANTS]; writes
``bias-e<EPOCHS>.json`` and trains into ``runs/bias-<variant>-e<EPOCHS>`` (reused if there).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from catalog import Lakehouse
from train.data import ShardStream
from train.launch import LaunchConfig, run_training
from train.model import ModelConfig, load_model
from train.recipe import TrainConfig


def bias_and_rmse(model, lh: Lakehouse, split: str, *, dropout_on: bool) -> tuple[float, float]:
    """Mean signed error and RMSE of ``model`` over every window of ``split``."""
    model.train(dropout_on)
    torch.manual_seed(0)
    stream = ShardStream(lh, "clear", split=split, shuffle=False, rank=0, world_size=1)
    d = sq = 0.0
    n = 0
    with torch.no_grad():
        for b in stream.loader(32):
            err = model(b["input_ids"], b["attention_mask"]) - b["targets"]
            d, sq, n = d + float(err.sum()), sq + float((err ** 2).sum()), n + len(err)
    return d / n, (sq / n) ** 0.5


def main() -> int:
    lh = Lakehouse(os.environ["CORPUS_ROOT"])
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    variants = sys.argv[2].split(",") if len(sys.argv) > 2 else ["raw", "std", "std0"]
    out = {}
    for name in variants:
        mcfg = ModelConfig("all-minilm-l6-v2", head="attention", lora_r=16,
                           dropout=0.0 if name == "std0" else None)
        cfg = TrainConfig(root=lh.root, dataset="clear", shards_version=lh.version("shards"),
                          model=mcfg.to_dict(), epochs=epochs, batch=8, lr=1e-3,
                          ckpt_every=10**6, seed=0, standardize=(name != "raw"))
        run_dir = Path(f"runs/bias-{name}-e{epochs}")
        t0 = time.time()
        if (run_dir / "result.json").exists():
            ckpt = json.loads((run_dir / "result.json").read_text())["checkpoint"]
        else:
            ckpt = run_training(lh, cfg, LaunchConfig(nproc=2), run_dir=run_dir
                                ).metrics["checkpoint"]
        model = load_model(ckpt)
        row = {"train_s": time.time() - t0, "target_mean": model.cfg.target_mean}
        for split in ("train", "validation"):
            for on in (False, True):
                b, r = bias_and_rmse(model, lh, split, dropout_on=on)
                mode = "dropout_on" if on else "dropout_off"
                row[f"{split}_{mode}_bias"], row[f"{split}_{mode}_rmse"] = b, r
        out[name] = row
        print(name, json.dumps(row), flush=True)
    Path(f"bias-e{epochs}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
