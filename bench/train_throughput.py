"""P7: training tokens/s of our recipe vs the Hugging Face Trainer, same model and data.

Both train the same ReadingLevelModel (all-MiniLM-L6-v2 + LoRA r=8 on query/key/value +
attention-pooling head, fp32, CPU) with AdamW at the same learning rate, the same batch size
and the same windows (the bundled CLEAR sample as token shards, 128-token chunks), for the
same number of optimizer steps, in one process (world size 1). Each round runs both, the
order alternated (ours first in even rounds, the Trainer first in odd ones), so both see the
same machine noise.

* ours: ``train.recipe.setup`` + ``train.recipe.train`` on a run folder (the real code path:
  ShardStream, in-flight records, per-step metrics and sample logs; checkpoints only at the
  end, as the Trainer saves none).
* baseline: ``transformers.Trainer`` over a map-style dataset holding the training samples
  read from the same shards in the order our stream yields them for the same seed
  (``train_sampling_strategy="sequential"``), a padding collator, ``save_strategy="no"``,
  no evaluation. Both sides therefore train on the same samples; their non-padding token
  counts are asserted equal in every round.

Timing is the same on both sides: set-up included, i.e. everything from the run's config to
the last optimizer step (ours: ``setup`` builds the model, the stream, the optimizer;
baseline: reading the samples, building the model, the ``Trainer`` and ``train()``). The
process-wide imports and one untimed warm-up run of each come first. Tokens are the
non-padding tokens trained on. Raw timings go to bench/out/train_throughput.json.

Usage: .venv/bin/python bench/train_throughput.py [--rounds 5] [--steps 15] [--batch 8]
[--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BACKBONE = "all-minilm-l6-v2"


def build_data(work: Path, seq_len: int):
    from catalog import Lakehouse
    from ingest.passages import run_import
    from ingest.sample import SAMPLE_CONFIG, sample_passages
    from train.shards import ShardsConfig, build_shards

    lh = Lakehouse(str(work / "lakehouse"))
    run_import(lh, sample_passages(), config=SAMPLE_CONFIG)
    build_shards(lh, config=ShardsConfig(dataset="clear", tokenizer=BACKBONE, seq_len=seq_len,
                                         window="chunks", val_frac=0.1, seed=0, workers=1))
    return lh


def run_ours(lh, work: Path, *, steps: int, batch: int, lr: float, seed: int) -> dict:
    from train import recipe
    from train.model import ModelConfig

    run_dir = work / f"ours-{time.time_ns()}"
    run_dir.mkdir()
    cfg = recipe.TrainConfig(root=lh.root, dataset="clear", shards_version=lh.version("shards"),
                             model=ModelConfig(BACKBONE).to_dict(), epochs=100, batch=batch,
                             lr=lr, max_steps=steps, ckpt_every=10**9, seed=seed)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    t0 = time.perf_counter()
    state = recipe.setup(run_dir)
    recipe.train(state)
    seconds = time.perf_counter() - t0
    recs, _ = recipe.read_metrics(run_dir)  # training rows (validation rows have no tokens)
    shutil.rmtree(run_dir, ignore_errors=True)
    tokens = sum(r["tokens"] for r in recs)
    return {"tokens": tokens, "seconds": seconds, "steps": len(recs),
            "last_loss": recs[-1]["loss"]}


def run_hf(lh, work: Path, *, steps: int, batch: int, lr: float, seed: int) -> dict:
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    from train.data import ShardStream
    from train.model import ModelConfig, build_model

    t0 = time.perf_counter()
    # The training split in the order the recipe's stream yields it for this seed (rank 0
    # of 1, epoch 0): both sides then train on the same samples in the same order.
    stream = ShardStream(lh, "clear", version=lh.version("shards"), split="train", rank=0,
                         world_size=1, seed=seed, drop_last=True)
    samples = [{"input_ids": list(s["input_ids"]), "target": float(s["target"])}
               for s in stream]
    counted = {"tokens": 0}

    def collate(items):
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.zeros((len(items), width), dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, x in enumerate(items):
            ids[i, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
            mask[i, :len(x["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([x["target"] for x in items])}

    class Wrapped(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, labels=None):
            # counted here, not in the collator: the Trainer's loader collates a batch ahead
            if self.training:
                counted["tokens"] += int(attention_mask.sum())
            pred = self.model(input_ids, attention_mask)
            out = {"logits": pred}
            if labels is not None:
                out["loss"] = self.model.loss(pred, labels)
            return out

    model = Wrapped(build_model(ModelConfig(BACKBONE), seed=seed))
    args = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=batch, learning_rate=lr,
        max_steps=steps, warmup_steps=1, lr_scheduler_type="linear", weight_decay=0.0,
        max_grad_norm=1.0, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, seed=seed,
        remove_unused_columns=False, disable_tqdm=True, train_sampling_strategy="sequential")
    trainer = Trainer(model=model, args=args, train_dataset=samples, data_collator=collate)
    out = trainer.train()
    seconds = time.perf_counter() - t0
    return {"tokens": counted["tokens"], "seconds": seconds, "steps": out.global_step,
            "last_loss": out.training_loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (1: stable on a shared 2-core machine)")
    args = ap.parse_args()
    import logging

    import torch

    torch.set_num_threads(args.threads)

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="p7-"))
    try:
        lh = build_data(work, args.seq_len)
        # one untimed warm-up of each (first-touch of weights, kernel caches)
        run_ours(lh, work, steps=3, batch=args.batch, lr=args.lr, seed=0)
        run_hf(lh, work, steps=3, batch=args.batch, lr=args.lr, seed=0)
        raw: dict[str, list[dict]] = {"ours": [], "hf_trainer": []}
        if args.rounds < 5:
            raise SystemExit("--rounds must be at least 5 (the project's benchmark rule)")
        for r in range(args.rounds):
            sides = (("ours", run_ours), ("hf_trainer", run_hf))
            for name, fn in (sides if r % 2 == 0 else sides[::-1]):
                res = fn(lh, work, steps=args.steps, batch=args.batch, lr=args.lr, seed=r)
                res["tokens_per_s"] = res["tokens"] / res["seconds"]
                raw[name].append(res)
                print(f"round {r} {name:10s} {res['steps']} steps {res['tokens']} tokens "
                      f"{res['seconds']:.2f} s {res['tokens_per_s']:.0f} tokens/s", flush=True)
            if raw["ours"][-1]["tokens"] != raw["hf_trainer"][-1]["tokens"] or \
                    raw["ours"][-1]["steps"] != raw["hf_trainer"][-1]["steps"]:
                raise AssertionError(
                    f"round {r}: unequal work: ours {raw['ours'][-1]['steps']} steps "
                    f"{raw['ours'][-1]['tokens']} tokens, Trainer "
                    f"{raw['hf_trainer'][-1]['steps']} steps {raw['hf_trainer'][-1]['tokens']}")
        med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in raw.items()}
        ratio = med["ours"] / med["hf_trainer"]
        # paired: each round's two runs ran back to back under the same machine load
        paired = [o["tokens_per_s"] / h["tokens_per_s"]
                  for o, h in zip(raw["ours"], raw["hf_trainer"], strict=True)]
        print(f"median tokens/s: ours {med['ours']:.0f}, HF Trainer {med['hf_trainer']:.0f}, "
              f"ours/HF = {ratio:.2f}; per round {', '.join(f'{r:.2f}' for r in paired)} "
              f"(median {statistics.median(paired):.2f})")
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_throughput.json").write_text(json.dumps(
            {"args": vars(args), "raw": raw, "median_tokens_per_s": med, "ratio": ratio,
             "paired_ratios": paired},
            indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
