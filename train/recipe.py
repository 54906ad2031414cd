"""The training recipe, run by torchrun on every rank: setup, train, save_checkpoint, cleanup.

One readable file, no trainer class. ``python -m train.recipe RUN_DIR`` reads
``RUN_DIR/config.json`` (written by :mod:`train.launch`), joins the process group
(:mod:`train.dist`), builds the model (DDP over ranks), streams the pinned shards
(:class:`train.data.ShardStream`) and trains. It resumes from the newest checkpoint in
``RUN_DIR/checkpoints`` at the exact next sample, with optimizer, scheduler and RNG states.

Files in the run folder (rank 0 writes everything shared; each rank writes only its own
in-flight record):

* ``inflight/rank-<r>.json``: before each micro-batch, the sample ids this rank is about to
  train on (``state: running``), ``sync`` once it may wait for its peers, then ``done``.
  After a crash the launcher reads them to learn which samples were in flight; their
  modification time is the rank's heartbeat.
* ``metrics.jsonl``: per logged step, loss, step time, tokens/s, peak host RSS and device memory;
  per validation a row with ``"split": "validation"`` (validation loss, book-level MAE and
  RMSE, whether it is the best so far). :func:`read_metrics` reads both kinds back.
* ``samples.jsonl``: per step, the sample ids every rank trained on (for audits and tests).
* ``checkpoints/step-N/``: atomic checkpoints (:mod:`train.checkpoint`).
* ``best/step-N/``: with early stopping, the best model by validation book MAE.
* ``tensorboard/``: TensorBoard event files, with ``tensorboard`` set.
* ``result.json``: final metrics: the saved model's validation metrics, the best step.

Validation. Every ``eval_every`` steps, at each epoch's end and at the end of training the
model scores the validation split (:func:`evaluate`). Every rank scores its own share of the
windows and the predictions are gathered to *every* rank, so every rank computes the same
metrics and takes the same early-stopping decision without another message (evaluating on
rank 0 alone would leave the other ranks idle and need the decision broadcast). Validation
runs with the RNG states saved and restored around it, so it never changes what training
draws: a run trains the same with any ``eval_every``. Its state (:class:`Validation`: last
and best results, validations since the best) is saved with every checkpoint, and a
validation at a checkpoint's step is done before that checkpoint: a resumed run validates
and stops exactly where the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catalog.errors import ConfigError
from catalog.log import setup_logging

log = logging.getLogger(__name__)

# test hook: JSON {"crash_at_step" | "hang_at_step": K, "rank": R, "attempt": A} or
# {"poison": SAMPLE_ID} (exits whichever rank trains on it)
FAULT_ENV = "CORPUS_TRAIN_FAULT"
ATTEMPT_ENV = "CORPUS_TRAIN_ATTEMPT"  # set by the launcher: 0 for the first attempt
POISON_EXIT = 13


@dataclass(frozen=True)
class TrainConfig:
    """The resolved configuration of one run (saved as ``config.json`` and in ``runs``).

    Attributes:
        root: Lakehouse root (storage options come from the environment).
        dataset: Shards dataset name.
        shards_version: Pinned ``shards`` table version.
        model: :class:`train.model.ModelConfig` as a dict.
        epochs: Passes over the training split.
        batch: Windows per rank per micro-step.
        grad_accum: Micro-steps per optimizer step.
        lr: Peak learning rate (linear warm-up, then linear decay to 10%).
        weight_decay: AdamW weight decay.
        warmup_frac: Fraction of steps spent warming up.
        max_steps: Stop after this many optimizer steps (0: all epochs).
        ckpt_every: Checkpoint every N optimizer steps (and at each epoch's end).
        keep_ckpts: Checkpoints kept.
        log_every: Log metrics every N steps.
        seed: Seed of the sample order and of the initialisation.
        block_shards: Loader shuffle block (see :mod:`train.data`).
        num_workers: DataLoader workers per rank.
        max_grad_norm: Gradient clipping.
        seq_len: Window length of the shards (recorded for scoring; 0 if unknown).
        eval_every: Validate every N optimizer steps, besides each epoch's end (0: only at
            epoch ends).
        early_stop: Stop when the validation book MAE has not improved for this many
            validations, and save the best model instead of the last (0: train on).
        tensorboard: Also write TensorBoard event files under ``RUN_DIR/tensorboard``.
        lr_decay: Layer-wise learning-rate decay: each transformer layer below the last
            trains at this fraction of the one above (1: one learning rate;
            :func:`train.model.param_groups`).
        standardize: Train the head in standardised units: the model's ``target_mean`` and
            ``target_scale`` are set to the training split's target mean and deviation
            (:meth:`train.data.ShardStream.target_stats`) unless the model config sets
            other values than 0 and 1.
        extra: Free-form notes recorded with the run.
    """

    root: str
    dataset: str
    shards_version: int
    model: dict[str, Any]
    epochs: int = 1
    batch: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    max_steps: int = 0
    ckpt_every: int = 50
    keep_ckpts: int = 2
    log_every: int = 1
    seed: int = 0
    block_shards: int = 8
    num_workers: int = 0
    max_grad_norm: float = 1.0
    seq_len: int = 0
    eval_every: int = 0
    early_stop: int = 0
    tensorboard: bool = False
    lr_decay: float = 1.0
    standardize: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch", "grad_accum", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}.")
        for name in ("eval_every", "early_stop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, found {getattr(self, name)}.")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"lr_decay must be in (0, 1], found {self.lr_decay}; 1 trains "
                              "every layer at the same learning rate.")
        if self.lr <= 0 or not 0 <= self.warmup_frac < 1 or self.max_steps < 0:
            raise ConfigError(f"lr must be > 0, warmup_frac in [0, 1), max_steps >= 0; found "
                              f"{self.lr}, {self.warmup_frac}, {self.max_steps}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# small helpers


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp + rename): a reader never sees half a record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class InFlight:
    """This rank's in-flight record and heartbeat: ``inflight/rank-<r>.json``."""

    def __init__(self, run_dir: Path, rank: int):
        self.path = run_dir / "inflight" / f"rank-{rank}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.record: dict[str, Any] = {}

    def mark(self, state: str, **extra: Any) -> None:
        self.record = {**self.record, **extra, "state": state, "rank": self.rank,
                       "pid": os.getpid(), "time": time.time()}
        _write_json(self.path, self.record)


def _is_comm_error(e: BaseException) -> bool:
    """An error raised because another rank went away (this rank is a victim, not a cause)."""
    import torch.distributed as tdist

    if isinstance(e, getattr(tdist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("gloo", "connection closed", "connection reset", "nccl",
                            "broken pipe"))


def _fault() -> dict[str, Any]:
    raw = os.environ.get(FAULT_ENV, "")
    return json.loads(raw) if raw else {}


def read_metrics(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(training rows, validation rows)`` of a run's ``metrics.jsonl``, by step.

    Steps replayed after a resume were logged twice; the last record of a step is kept.
    """
    path = Path(run_dir) / "metrics.jsonl"
    train: dict[int, dict[str, Any]] = {}
    val: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                (val if rec.get("split") == "validation" else train)[rec["step"]] = rec
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


# ---------------------------------------------------------------------------------------------
# validation and early stopping

VAL_METRIC = "val_book_mae"  # what "best" means: lower is better


@dataclass
class Validation:
    """Validation results of a run so far and the early-stopping count (saved with every
    checkpoint).

    Attributes:
        patience: Validations without improvement that stop training (0: never stop).
        step: Step of the last validation (-1: none yet).
        last: Metrics of the last validation.
        best_step: Step of the best validation (lowest :data:`VAL_METRIC`; -1: none yet).
        best: Metrics of the best validation.
        since_best: Validations since the best one.
        count: Validations so far.
        stopped: Training stopped early.
    """

    patience: int = 0
    step: int = -1
    last: dict[str, Any] = field(default_factory=dict)
    best_step: int = -1
    best: dict[str, Any] = field(default_factory=dict)
    since_best: int = 0
    count: int = 0
    stopped: bool = False

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Record a validation at ``step``; True when it is the best so far.

        A NaN metric (a diverged model) is never an improvement.
        """
        self.step, self.last, self.count = step, dict(metrics), self.count + 1
        value = float(metrics[VAL_METRIC])
        improved = math.isfinite(value) and (not self.best or value < self.best[VAL_METRIC])
        if improved:
            self.best_step, self.best, self.since_best = step, dict(metrics), 0
        else:
            self.since_best += 1
        if self.patience and self.since_best >= self.patience:
            self.stopped = True
        return improved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], patience: int) -> Validation:
        """A saved state; ``patience`` is the run's (its config may say otherwise now)."""
        return cls(**{**d, "patience": patience})


# ---------------------------------------------------------------------------------------------
# the recipe


@dataclass
class State:
    """Everything the training loop changes (one per rank)."""

    cfg: TrainConfig
    run_dir: Path
    info: Any
    model: Any  # the ReadingLevelModel (unwrapped)
    ddp: Any  # what forward is called on (DDP-wrapped when world > 1)
    optimizer: Any
    scheduler: Any
    stream: Any
    inflight: InFlight
    total_steps: int
    step: int = 0
    epoch: int = 0
    resumed_from: str | None = None
    suspects: set[str] = field(default_factory=set)
    saved_step: int = -1
    validation: Validation = field(default_factory=Validation)
    val_stream: Any = None  # the validation split (None: not opened yet; False: none)
    tb: Any = None  # rank 0's TensorBoard SummaryWriter, with cfg.tensorboard


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return max(0.1, 1.0 - 0.9 * frac)
    return f


def setup(run_dir: Path) -> State:
    """Join the group, build model/optimizer/scheduler/loader, resume from the newest checkpoint."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from catalog import LakehouseConfig
    from train import dist
    from train.checkpoint import latest_checkpoint, load_train_state, set_rng_state
    from train.data import ShardStream
    from train.model import CONFIG_FILE, ModelConfig, build_model, param_groups

    cfg = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    info = dist.init_distributed()
    inflight = InFlight(run_dir, info.rank)
    inflight.mark("setup")
    torch.manual_seed(cfg.seed)
    skip = json.loads((run_dir / "skip.json").read_text()) if (run_dir / "skip.json").exists() \
        else []
    stream = ShardStream(LakehouseConfig.resolve(cfg.root), cfg.dataset,
                         version=cfg.shards_version, split="train", rank=info.rank,
                         world_size=info.world_size, seed=cfg.seed, skip=skip,
                         block_shards=cfg.block_shards, drop_last=True)
    ckpt = latest_checkpoint(run_dir)
    mcfg = ModelConfig.from_dict(cfg.model)
    if ckpt is not None and (ckpt / CONFIG_FILE).exists():
        # resume as the checkpoint was trained, even by older code: one saved before these
        # options trained with the backbone's own dropout and an unscaled target
        mcfg = ModelConfig.from_dict({"dropout": None,
                                      **json.loads((ckpt / CONFIG_FILE).read_text())})
    elif cfg.standardize and (mcfg.target_mean, mcfg.target_scale) == (0.0, 1.0):
        # the same pinned shards on every rank: the same numbers
        mean, scale = stream.target_stats()
        mcfg = dataclasses.replace(mcfg, target_mean=mean, target_scale=scale)
    model = build_model(mcfg, device=info.device, seed=cfg.seed)
    model.train()
    per_epoch = math.ceil(math.ceil(len(stream) / cfg.batch) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    optimizer = torch.optim.AdamW(param_groups(model, lr=cfg.lr, decay=cfg.lr_decay,
                                               weight_decay=cfg.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(max(1, total), max(1, int(cfg.warmup_frac * total))))
    ddp = model
    if info.world_size > 1:
        # LoRA leaves most parameters frozen; DDP only reduces the trainable ones.
        # No buffer broadcast: the backbone's buffers (position ids) never change, and a
        # collective in forward would make a rank waiting for a hung peer look hung itself.
        import inspect

        sync_kw = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(DDP.__init__).parameters else "broadcast_buffers")
        ddp = DDP(model, device_ids=[info.local_rank] if info.device.startswith("cuda")
                  else None, **{sync_kw: False})
    state = State(cfg=cfg, run_dir=run_dir, info=info, model=model, ddp=ddp,
                  optimizer=optimizer, scheduler=scheduler, stream=stream, inflight=inflight,
                  total_steps=total, validation=Validation(patience=cfg.early_stop))
    if ckpt is not None:
        from train.model import read_trainable

        model.load_trainable_state_dict(read_trainable(ckpt))
        ts = load_train_state(ckpt)
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        stream.load_state_dict(ts["loader"])
        rngs = ts.get("rng") or []
        if len(rngs) == info.world_size:  # same world: every rank continues its own stream
            set_rng_state(rngs[info.rank])
        state.step, state.epoch = int(ts["step"]), int(ts["epoch"])
        state.saved_step = state.step
        if ts.get("validation"):  # checkpoints written before validation state have none
            state.validation = Validation.from_dict(ts["validation"], cfg.early_stop)
        state.resumed_from = ckpt.name
        dist.print0(f"resumed from {ckpt.name}: step {state.step}, epoch {state.epoch}, "
                    f"{stream.consumed()} samples of the epoch consumed")
    crashes = run_dir / "crashes.json"
    state.suspects = set(json.loads(crashes.read_text())) - set(skip) if crashes.exists() \
        else set()
    for sid in skip:  # samples the launcher found crashing the job twice
        stream.skip_sample(sid)
    if skip:
        dist.print0(f"skipping {len(skip)} sample(s) that crashed the job twice: {skip}")
    if dist.is_main():
        if cfg.early_stop:
            from train.checkpoint import prune_best

            # best models saved after the resumed checkpoint are from steps to be replayed
            prune_best(run_dir, state.validation.best_step)
        if cfg.tensorboard:
            state.tb = tensorboard_writer(run_dir, resumed_at=state.step if ckpt else None)
    return state


def tensorboard_writer(run_dir: Path, *, resumed_at: int | None = None) -> Any:
    """A SummaryWriter on ``RUN_DIR/tensorboard``; after a resume at step N, the events of
    steps after N that an earlier attempt wrote are hidden (they are about to be replayed).

    Raises:
        ConfigError: the tensorboard package is not installed.
    """
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    purge = resumed_at + 1 if resumed_at is not None else None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)


def require_tensorboard() -> None:
    """Raise a ConfigError naming the extra to install when tensorboard is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: install the extra "
                          "(pip install 'corpus[tensorboard]') or train without "
                          "--tensorboard (metrics.jsonl has the same numbers).") from None


def save_checkpoint(state: State) -> None:
    """Every rank hands its RNG state to rank 0, which writes the checkpoint atomically."""
    import torch.distributed as tdist

    from train import checkpoint, dist

    rng = checkpoint.rng_state()
    if state.info.world_size > 1:
        rngs: list[Any] = [None] * state.info.world_size
        tdist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    state.saved_step = state.step
    if dist.is_main():
        checkpoint.save_checkpoint(
            state.run_dir, step=state.step, model=state.model, keep=state.cfg.keep_ckpts,
            train_state={"optimizer": state.optimizer.state_dict(),
                         "scheduler": state.scheduler.state_dict(),
                         "loader": state.stream.state_dict(), "rng": rngs,
                         "step": state.step, "epoch": state.epoch,
                         "validation": state.validation.to_dict()})
        if state.cfg.early_stop:  # this checkpoint names its best: older best folders go
            checkpoint.prune_best(state.run_dir, state.validation.best_step)
    dist.barrier()


def _all_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64)
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(t)
    return t.tolist()


def _gather(obj: Any, world: int) -> list[Any]:
    import torch.distributed as tdist

    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    tdist.all_gather_object(out, obj)
    return out


def _isolate(group: list[dict[str, Any]], suspects: set[str]) -> list[dict[str, Any]]:
    """Split micro-batches so that every suspect sample is a micro-batch of its own."""
    import torch

    def take(b: dict[str, Any], rows: list[int]) -> dict[str, Any]:
        idx = torch.tensor(rows)
        return {k: (v[idx] if isinstance(v, torch.Tensor) else [v[r] for r in rows])
                for k, v in b.items()}

    out = []
    for b in group:
        clean = [r for r, s in enumerate(b["sample_ids"]) if s not in suspects]
        if clean:
            out.append(take(b, clean))
        out += [take(b, [r]) for r, s in enumerate(b["sample_ids"]) if s in suspects]
    return out


def train(state: State) -> None:
    """The loop: micro-batches, gradient accumulation, logging, validation and early stopping,
    checkpoints, test faults."""
    import torch

    from train import dist

    cfg, info = state.cfg, state.info
    fault = _fault()
    attempt = int(os.environ.get(ATTEMPT_ENV, "0"))
    metrics = state.run_dir / "metrics.jsonl"
    samples_log = state.run_dir / "samples.jsonl"
    device = torch.device(info.device)
    for epoch in range(state.epoch, cfg.epochs):
        if state.validation.stopped:  # resumed from the checkpoint saved when it stopped
            break
        state.epoch = epoch
        state.stream.set_epoch(epoch)
        batches = iter(state.stream.loader(cfg.batch, num_workers=cfg.num_workers))
        while not (cfg.max_steps and state.step >= cfg.max_steps):
            group = [b for _, b in zip(range(cfg.grad_accum), batches, strict=False)]
            if not group:
                break
            ids = [s for b in group for s in b["sample_ids"]]
            if state.suspects & set(ids):
                # a sample here was in flight at an earlier crash: run the suspects one by
                # one, so that a second crash names the one sample that causes it
                group = _isolate(group, state.suspects)
            if (fault.get("crash_at_step") == state.step + 1 and fault.get("rank") == info.rank
                    and fault.get("attempt", 0) == attempt):
                state.inflight.mark("running", step=state.step + 1, sample_ids=ids,
                                    attempt=attempt)
                os._exit(POISON_EXIT)
            if (fault.get("hang_at_step") == state.step + 1 and fault.get("rank") == info.rank
                    and fault.get("attempt", 0) == attempt):
                state.inflight.mark("running", step=state.step + 1, sample_ids=ids,
                                    attempt=attempt)
                time.sleep(3600)  # a rank stuck in a kernel or a deadlock
            t0 = time.perf_counter()
            loss_sum, n, tokens = 0.0, 0, 0
            n_group = len(ids)
            for i, b in enumerate(group):
                state.inflight.mark("running", step=state.step + 1, sample_ids=b["sample_ids"],
                                    attempt=attempt)
                if fault.get("poison") in b["sample_ids"]:
                    os._exit(POISON_EXIT)  # a sample that kills the process (a bad kernel...)
                sync = i == len(group) - 1 or info.world_size == 1
                ctx = contextlib.nullcontext() if sync else state.ddp.no_sync()
                with ctx:
                    pred = state.ddp(b["input_ids"].to(device), b["attention_mask"].to(device))
                    loss = state.model.loss(pred, b["targets"].to(device))
                    if sync and info.world_size > 1:
                        # from here this rank may wait for its peers (gradient all-reduce):
                        # stuck here, it is more likely a victim than the cause
                        state.inflight.mark("sync")
                    # weighted by samples: the step's loss is the mean over all its samples
                    (loss * (len(b["sample_ids"]) / n_group)).backward()
                # logged in the target's own units, like the validation loss
                loss_sum += (float(loss.detach()) * state.model.cfg.target_scale ** 2
                             * len(b["sample_ids"]))
                n += len(b["sample_ids"])
                tokens += int(b["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(
                [p for p in state.model.parameters() if p.requires_grad], cfg.max_grad_norm)
            state.optimizer.step()
            state.scheduler.step()
            state.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            step_time = time.perf_counter() - t0
            g_loss, g_n, g_tokens = _all_sum([loss_sum, n, tokens])
            all_ids = _gather(ids, info.world_size)
            state.inflight.mark("done")
            if dist.is_main():
                with samples_log.open("a") as f:
                    f.write(json.dumps({"step": state.step, "epoch": epoch,
                                        "sample_ids": all_ids}) + "\n")
                if state.step % cfg.log_every == 0:
                    rec = {"step": state.step, "epoch": epoch, "loss": g_loss / max(1, g_n),
                           "lr": state.scheduler.get_last_lr()[0], "step_time_s": step_time,
                           "tokens": int(g_tokens), "tokens_per_s": g_tokens / step_time,
                           "peak_rss_bytes": peak_rss_bytes(),
                           "peak_device_bytes": (torch.cuda.max_memory_allocated()
                                                 if device.type == "cuda" else None),
                           "time": time.time()}
                    with metrics.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
                    if state.tb is not None:
                        state.tb.add_scalar("train/loss", rec["loss"], state.step)
                        state.tb.add_scalar("train/lr", rec["lr"], state.step)
                    dist.print0(f"step {state.step}/{state.total_steps} loss {rec['loss']:.4f} "
                                f"{rec['tokens_per_s']:.0f} tok/s "
                                f"rss {rec['peak_rss_bytes'] / 2**20:.0f} MiB")
            # validate before checkpointing: the checkpoint holds this validation's outcome,
            # so a run resumed from it neither repeats nor misses it
            if cfg.eval_every and state.step % cfg.eval_every == 0:
                validate(state)
            if state.step % cfg.ckpt_every == 0:
                save_checkpoint(state)
            if state.validation.stopped:
                break
        if state.validation.stopped or (cfg.max_steps and state.step >= cfg.max_steps):
            break
        if state.stream.consumed() >= state.stream.total:
            validate(state)  # the epoch's end
            if state.validation.stopped:
                break
            if epoch + 1 < cfg.epochs:
                state.epoch = epoch + 1  # the checkpoint says: next epoch, from its start
                state.stream.set_epoch(epoch + 1)
                save_checkpoint(state)


def validate(state: State) -> dict[str, Any]:
    """Score the validation split now (once per step: a second call at the same step does
    nothing) and act on it: log it (rank 0), keep the best model when early stopping, decide
    whether to stop. Every rank calls it at the same steps and gets the same metrics.

    Returns:
        The validation's metrics (``{}`` when skipped or the dataset has no validation split).
    """
    from train import checkpoint, dist

    v = state.validation
    if v.step == state.step:
        return {}
    rng = checkpoint.rng_state()
    try:  # validation must not change what training draws next (dropout, order)
        metrics = evaluate(state)
    finally:
        checkpoint.set_rng_state(rng)
    if not metrics:
        return {}
    metrics["val_loss"] = metrics["val_window_mse"]  # the training loss, on validation windows
    improved = v.update(state.step, metrics)
    if dist.is_main():
        rec = {"split": "validation", "step": state.step, "epoch": state.epoch, **metrics,
               "best": improved, "since_best": v.since_best, "time": time.time()}
        with (state.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if state.tb is not None:
            for tag, key in (("validation/loss", "val_loss"),
                             ("validation/book_mae", "val_book_mae"),
                             ("validation/book_rmse", "val_book_rmse")):
                state.tb.add_scalar(tag, metrics[key], state.step)
            state.tb.flush()
        if improved and state.cfg.early_stop:
            checkpoint.save_best(state.run_dir, step=state.step, model=state.model,
                                 metrics=metrics)
        dist.print0(f"validation at step {state.step}: loss {metrics['val_loss']:.4f}, book "
                    f"MAE {metrics['val_book_mae']:.4f}"
                    + (" (best so far)" if improved else
                       f" (best {v.best.get(VAL_METRIC, float('nan')):.4f} at step "
                       f"{v.best_step})")
                    + (f"; no improvement for {v.since_best} validation(s): stopping"
                       if v.stopped else ""))
    return metrics


def final_result(state: State) -> dict[str, Any]:
    """What ``result.json`` says (rank 0): the saved model and its validation metrics.

    The saved model is the best one by validation book MAE when early stopping (its folder
    under ``best/``), else the last checkpoint.
    """
    from train.checkpoint import best_checkpoint, latest_checkpoint

    v, cfg = state.validation, state.cfg
    best = best_checkpoint(state.run_dir, v.best_step) if cfg.early_stop and v.best else None
    folder, model_step, metrics = ((best, v.best_step, v.best) if best is not None else
                                   (latest_checkpoint(state.run_dir), state.step, v.last))
    out: dict[str, Any] = {k: metrics[k] for k in metrics if k.startswith("val_")}
    out.update({"model_step": model_step, "checkpoint": str(folder), "validations": v.count,
                "stopped_early": v.stopped, "steps": state.step, "epochs": state.epoch + 1,
                "world_size": state.info.world_size, "device": state.info.device,
                "resumed_from": state.resumed_from, "skipped": state.stream.skip})
    if v.best:
        out.update({"best_step": v.best_step,
                    **{f"best_{k}": v.best[k] for k in ("val_book_mae", "val_book_rmse",
                                                        "val_loss")}})
    return out


def evaluate(state: State) -> dict[str, Any]:
    """Validation window MSE and book-level MAE and RMSE (windows averaged per book).

    Each rank scores its share of the validation windows; the predictions are gathered to
    every rank, so all return the same numbers.
    """
    import torch

    from catalog import LakehouseConfig
    from train.data import ShardStream
    from train.model import aggregate_windows

    cfg, info = state.cfg, state.info
    if state.val_stream is None:  # opened once: the manifest is read once per run
        try:
            state.val_stream = ShardStream(
                LakehouseConfig.resolve(cfg.root), cfg.dataset, version=cfg.shards_version,
                split="validation", rank=info.rank, world_size=info.world_size, shuffle=False)
        except ConfigError:
            state.val_stream = False
    val = state.val_stream
    if val is False:
        return {}
    val.set_epoch(val.epoch + 1)  # from the start again (unshuffled: the same order)
    state.model.eval()
    rows: list[tuple[str, float, float]] = []
    with torch.no_grad():
        for b in val.loader(cfg.batch):
            state.inflight.mark("eval")
            pred = state.model(b["input_ids"].to(info.device),
                               b["attention_mask"].to(info.device)).float().cpu().tolist()
            rows += list(zip(b["book_ids"], pred, b["targets"].tolist(), strict=True))
    state.model.train()
    rows = [r for part in _gather(rows, info.world_size) for r in part]
    if not rows:
        return {}
    window_mse = sum((p - t) ** 2 for _, p, t in rows) / len(rows)
    by_book = aggregate_windows([r[0] for r in rows], [r[1] for r in rows])
    truth = {r[0]: r[2] for r in rows}
    mae = sum(abs(by_book[k] - truth[k]) for k in by_book) / len(by_book)
    rmse = math.sqrt(sum((by_book[k] - truth[k]) ** 2 for k in by_book) / len(by_book))
    return {"val_window_mse": window_mse, "val_book_mae": mae, "val_book_rmse": rmse,
            "val_books": len(by_book), "val_windows": len(rows)}


def cleanup(state: State | None) -> None:
    """Close the TensorBoard writer, leave the process group."""
    from train import dist

    if state is not None and state.tb is not None:
        state.tb.close()
    dist.cleanup()


def _rank_logging(run_dir: Path) -> None:
    """The console (torchrun tees our stderr to it) as quiet as the `corpus` call that
    started this rank; every INFO record of ours also goes to the rank's own log file,
    ``logs/attempt-<N>/rank-<R>.info.log``, at any verbosity."""
    setup_logging()  # the verbosity the `corpus` call recorded in the environment
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(root.level)
    folder = run_dir / "logs" / f"attempt-{os.environ.get(ATTEMPT_ENV, '0')}"
    folder.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(folder / f"rank-{os.environ.get('RANK', '0')}.info.log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)
    root.addHandler(to_file)
    root.setLevel(min(root.level, logging.INFO))


def main(argv: list[str] | None = None) -> int:
    """Entry point of every rank: ``python -m train.recipe RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m train.recipe RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    _rank_logging(run_dir)
    state: State | None = None
    inflight: InFlight | None = None

    def on_term(signum, _frame):  # torchrun or the watchdog stops us: we are not the cause
        if inflight is not None:
            inflight.mark("terminated")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        state = setup(run_dir)
        inflight = state.inflight
        train(state)
        validate(state)  # the final model (unless this step was validated already)
        if state.saved_step != state.step:  # the same decision on every rank
            save_checkpoint(state)
        from train import dist

        if dist.is_main():
            _write_json(run_dir / "result.json", final_result(state))
        state.inflight.mark("finished")
    except BaseException as e:
        if inflight is not None:
            inflight.mark("peer_failure" if _is_comm_error(e) else "error", error=repr(e)[:500])
        raise
    finally:
        cleanup(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
