"""Training: plan it, train under torchrun, evaluate a run on its held-out books."""

from __future__ import annotations

import json

import click

from catalog import Lakehouse, parse_table_ref
from corpus.commands.common import (
    AT_LEAST_0,
    AT_LEAST_1,
    POSITIVE,
    command,
    console,
    err_console,
    lakehouse,
)


def shards_manifest(lh: Lakehouse, shards_ref: str | None):
    """``(dataset, version, train manifest)`` of ``--shards DATASET[@VERSION]``, or Nones."""
    if not shards_ref:
        return None, None, None
    from catalog import ConfigError
    from train.shards import read_manifest

    dataset, version = parse_table_ref(shards_ref)
    if version is not None and not isinstance(version, int):
        raise ConfigError(f"--shards {shards_ref}: expected DATASET or DATASET@VERSION "
                          "(an integer shards table version).")
    manifest, version = read_manifest(lh, dataset, version=version, split="train")
    return dataset, version, manifest


def lora_rank(lora_r: int | None, full: bool) -> int:
    """The LoRA rank of ``--lora-r`` (default 8, or 0 with ``--full``, which trains the
    backbone's own weights instead)."""
    if lora_r is None:
        return 0 if full else 8
    return lora_r


def model_options(f):
    """The options saying which model to train (or plan): backbone, head, adapters."""
    for option in reversed([
        click.option("--backbone", default="all-minilm-l6-v2", show_default=True,
                     metavar="NAME_OR_PATH",
                     help="Backbone alias (smollm2-135m, ...) or local folder."),
        click.option("--head", type=click.Choice(["attention", "dense"]), default="attention",
                     show_default=True, help="attention: learned queries pool the token "
                     "states; dense: mean pooling and an MLP."),
        click.option("--quant", type=click.Choice(["none", "4bit"]), default="none",
                     show_default=True, help="4bit: QLoRA (NF4 weights; CUDA only)."),
        click.option("--lora-r", type=AT_LEAST_0, default=None,
                     help="LoRA rank (0: head only)  [default: 8; 0 with --full]"),
        click.option("--full", is_flag=True,
                     help="Full fine-tuning: train every backbone weight (no LoRA, no 4-bit); "
                     "the saved model carries the backbone's weights."),
        click.option("--layer", type=AT_LEAST_1, default=None, metavar="K",
                     help="Pool the states after layer K (the backbone is cut there; "
                     "`corpus probe` finds a good one) instead of the last layer."),
        click.option("--dropout", type=click.FloatRange(min=0.0, max=1.0, max_open=True),
                     default=0.0, show_default=True,
                     help="Dropout inside the backbone while training. 0: a head trained on "
                     "dropped-out states reads the states of evaluation as shifted (a "
                     "systematic bias); BERT-style backbones come with 0.1."),
        click.option("--layer-mix", is_flag=True,
                     help="Pool a learned weighted mix of every layer's states (up to "
                     "--layer K with it)."),
        click.option("--epochs", type=AT_LEAST_1, default=1, show_default=True,
                     help="Passes over the training split."),
        click.option("--batch", type=AT_LEAST_1, default=8, show_default=True,
                     help="Windows per rank per step."),
        click.option("--grad-ckpt", is_flag=True, help="Gradient checkpointing (less memory)."),
    ]):
        f = option(f)
    return f


@command("train")
@click.option("--shards", "shards_ref", metavar="DATASET[@VERSION]",
              help="Token shards to train on (default version: the latest).")
@model_options
@click.option("--grad-accum", type=AT_LEAST_1, default=1, show_default=True,
              help="Steps whose gradients add up before the optimizer steps.")
@click.option("--lr", type=POSITIVE, default=2e-4, show_default=True, help="Learning rate.")
@click.option("--lr-decay", type=click.FloatRange(min=0.0, max=1.0, min_open=True),
              default=1.0, show_default=True,
              help="Layer-wise learning-rate decay: each layer trains at this fraction of "
              "the rate of the layer above (the head and last layer at --lr).")
@click.option("--max-steps", type=AT_LEAST_0, default=0, help="Stop after N optimizer steps.")
@click.option("--ckpt-every", type=AT_LEAST_1, default=50, show_default=True,
              help="Checkpoint every N steps.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Seed of the head, the adapters and the sample order.")
@click.option("--nproc", type=AT_LEAST_1, default=1, show_default=True, help="Ranks per node.")
@click.option("--nnodes", type=AT_LEAST_1, default=1, show_default=True,
              help="Machines in the job (each runs the same command with its --node-rank).")
@click.option("--rdzv", default=None, metavar="HOST:PORT", help="Rendezvous of a multi-node job.")
@click.option("--node-rank", type=AT_LEAST_0, default=0, show_default=True,
              help="This machine's rank among --nnodes (0 records the run).")
@click.option("--max-restarts", type=AT_LEAST_0, default=3, show_default=True,
              help="Restarts of the whole job after a rank fails or hangs.")
@click.option("--hang-timeout", type=POSITIVE, default=300.0, show_default=True,
              help="Seconds without progress before a rank counts as hung.")
@click.option("--run-dir", default=None, help="Run folder (default ./runs/<run id>); an "
              "existing one resumes from its newest checkpoint.")
@click.option("--eval-every", type=AT_LEAST_1, default=None, metavar="N",
              help="Validate every N steps as well (default: once per epoch, at its end). "
              "Validation rows go to metrics.jsonl with \"split\": \"validation\".")
@click.option("--early-stop", type=AT_LEAST_1, default=None, metavar="PATIENCE",
              help="Stop when the validation book MAE has not improved for PATIENCE "
              "validations; the saved model is then the best one, not the last.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard event files (training loss, lr, validation loss and "
              "MAE) to RUN_DIR/tensorboard; needs the tensorboard extra.")
@click.pass_context
def train_(ctx: click.Context, shards_ref: str | None, backbone: str, head: str, quant: str,
           lora_r: int | None, full: bool, layer: int | None, dropout: float,
           layer_mix: bool, epochs: int, batch: int, grad_ckpt: bool, grad_accum: int,
           lr: float, lr_decay: float,
           max_steps: int, ckpt_every: int, seed: int, nproc: int, nnodes: int,
           rdzv: str | None, node_rank: int, max_restarts: int, hang_timeout: float,
           run_dir: str | None, eval_every: int | None, early_stop: int | None,
           tensorboard: bool) -> None:
    """Train the reading-level model under torchrun (`corpus plan` first: memory, time, cost).

    The saved model folder holds a model card (README.md): backbone, data and its versions,
    validation metrics, limits; `corpus eval` adds the held-out results.

    Example: corpus train --shards clear --epochs 5 --eval-every 20 --early-stop 3 --tensorboard

    Example: corpus train --shards clear --full --layer 4 --lr 5e-5 --lr-decay 0.8
    """
    from catalog import ConfigError

    lh = lakehouse(ctx)
    dataset, version, manifest = shards_manifest(lh, shards_ref)
    if manifest is None:
        raise ConfigError("corpus train needs --shards DATASET[@VERSION] (build them with "
                          "corpus shards build); `corpus plan` plans a training.")
    from train.launch import LaunchConfig, run_training
    from train.model import ModelConfig
    from train.recipe import TrainConfig

    mcfg = ModelConfig(backbone, head=head, quant=quant, lora_r=lora_rank(lora_r, full),
                       full=full, layer=layer, layer_mix=layer_mix, dropout=dropout,
                       gradient_checkpointing=grad_ckpt)
    cfg = TrainConfig(root=lh.root, dataset=dataset, shards_version=version,
                      model=mcfg.to_dict(), epochs=epochs, batch=batch, grad_accum=grad_accum,
                      lr=lr, lr_decay=lr_decay, max_steps=max_steps, ckpt_every=ckpt_every,
                      seed=seed,
                      seq_len=int(manifest.column("seq_len")[0].as_py()),
                      eval_every=eval_every or 0, early_stop=early_stop or 0,
                      tensorboard=tensorboard)
    launch = LaunchConfig(nproc=nproc, nnodes=nnodes, rdzv=rdzv, node_rank=node_rank,
                          max_restarts=max_restarts, hang_timeout=hang_timeout)
    res = run_training(lh, cfg, launch, run_dir=run_dir)
    m = res.metrics
    console.print(f"run {res.run_id}: {res.status} after {res.attempts} attempt(s), "
                  f"{m.get('steps', 0)} steps; loss {m.get('first_loss', float('nan')):.4f} -> "
                  f"{m.get('last_loss', float('nan')):.4f}; validation book MAE "
                  f"{m.get('val_book_mae', float('nan')):.4f}; "
                  f"{m.get('tokens_per_s', 0):.0f} tokens/s")
    if m.get("best_step") is not None and early_stop:
        console.print(f"saved the best model: step {m['model_step']} (validation book MAE "
                      f"{m['best_val_book_mae']:.4f})"
                      + (f"; stopped early at step {m['steps']}" if m.get("stopped_early")
                         else ""), highlight=False)
    if res.skipped:
        err_console.print(f"skipped {len(res.skipped)} sample(s) that crashed the job twice: "
                          f"{', '.join(res.skipped)}", markup=False)
    console.print(f"run folder {res.run_dir}; model {res.checkpoint_uri}", highlight=False)


@command("eval")
@click.argument("run_ids", nargs=-1, metavar="[RUN]...")
@click.option("--run", "more_runs", multiple=True, metavar="RUN",
              help="A run to evaluate (repeatable, like RUN arguments); several runs are "
              "evaluated as an ensemble.")
@click.option("--variants", default="", metavar="V1,V2,...",
              help="Variants of the held-out books to score (edited,ocr,noisy/*; default all).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default reports/<run or ensemble id>).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def eval_(ctx: click.Context, run_ids: tuple[str, ...], more_runs: tuple[str, ...],
          variants: str, out: str | None, fmt: str) -> None:
    """Evaluate RUN (default: the newest finished run) on its held-out books.

    Writes `predictions` and a report folder: RMSE, MAE, Spearman and bias per variant for the
    model and for readability formulas fit on the training split, the worst books, the shift
    between clean and noisy/OCR twins, and PNG plots.

    Several runs are evaluated as an ensemble: they must have been trained on the same shards
    dataset for the same target and hold out the same books (backbones, tokenizers and window
    lengths may differ). Each run scores the held-out texts with its own model and keeps its
    rows in `predictions` under its run id; the ensemble's prediction for a book and variant
    is the plain mean of the runs' predictions, written under ensemble-<hash of the sorted
    run ids>. The report has a row per run and one for the ensemble; the runs' model cards
    are left as they are (`corpus eval RUN` alone writes a card's held-out section).

    Example: corpus eval clear-20261129-101500-a1b2c3 --run clear-20261130-091200-d4e5f6
    """
    from train.evaluate import EvalConfig, predictors, run_eval

    runs = [*run_ids, *more_runs]
    r = run_eval(lakehouse(ctx), runs or None,
                 config=EvalConfig(variants=tuple(variants.split(",")), out=out))
    if fmt == "json":
        click.echo(json.dumps({"run_id": r.run_id, "report": str(r.report_dir),
                               **r.summary}, indent=2, default=float))
        return
    from rich.table import Table

    what = (f"ensemble {r.run_id} of {', '.join(r.members)}" if r.members else
            f"run {r.run_id}")
    t = Table(title=f"{what}: held-out books ({r.summary['target']})")
    for col in ("variant", "predictor", "n", "RMSE", "MAE", "Spearman", "bias"):
        t.add_column(col, justify="left" if col in ("variant", "predictor") else "right")
    for fam, entry in r.summary["variants"].items():
        for name, m in predictors(entry, formulas="best"):
            t.add_row(fam, name, str(m["n"]), f"{m['rmse']:.3f}", f"{m['mae']:.3f}",
                      f"{m['spearman']:.3f}", f"{m['bias']:+.3f}")
    console.print(t)
    console.print(f"{r.n_predictions} predictions (predictions@{r.predictions_version}); "
                  f"report: {r.report_dir / 'report.md'}")


@command("calibrate")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
@click.pass_context
def calibrate(ctx: click.Context, run_ids: tuple[str, ...]) -> None:
    """Calibrate the model of RUN (trained before `corpus train` did it): shift its output
    so that its mean residual on a fixed sample of its own training windows is zero.

    A run ends with whatever constant offset its last steps left it, and its held-out bias
    follows that offset; no held-out text is read to remove it. The calibrated model is
    stored beside the old one and the run points to it. Evaluate the run again afterwards.
    A run whose model is calibrated already is left as it is.

    Example: corpus calibrate clear-lora-noisy-s0 clear-lora-noisy-s1
    """
    from train.calibrate import calibrate_run

    lh = lakehouse(ctx)
    for run_id in run_ids:
        rec = calibrate_run(lh, run_id)
        if rec is None:
            console.print(f"{run_id}: calibrated already, left as it is", highlight=False)
            continue
        console.print(f"{run_id}: output shifted by {-rec['offset']:+.4f} (mean residual "
                      f"{rec['offset']:+.4f} on {rec['windows']} training windows); model "
                      f"{rec['checkpoint_uri']}", highlight=False)


COMMANDS = [train_, eval_, calibrate]
