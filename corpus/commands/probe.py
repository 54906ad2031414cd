"""`corpus probe`: how well each frozen layer of a backbone predicts the target, before any
fine-tuning."""

from __future__ import annotations

import json
import math

import click

from corpus.commands.common import AT_LEAST_1, command, console, format_option, lakehouse
from corpus.commands.train import shards_manifest


def _layers(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...]:
    """``--layers 0,3,6`` as a tuple of ints (empty: every layer)."""
    if not value:
        return ()
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected layer numbers separated by commas, "
                                 "e.g. 0,3,6 (0 is the embeddings).") from None


def _json_safe(x):
    """NaN (a Spearman on a constant side) as null: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


@command("probe")
@click.option("--shards", "shards_ref", required=True, metavar="DATASET[@VERSION]",
              help="Token shards to probe on (default version: the latest); they need a "
              "validation split, whose books are the held-out ones.")
@click.option("--backbone", default="all-minilm-l6-v2", show_default=True,
              metavar="NAME_OR_PATH",
              help="Backbone alias (smollm2-135m, ...) or local folder; the shards' tokenizer "
              "must be its own.")
@click.option("--layers", callback=_layers, default=None, metavar="L1,L2,...",
              help="Layers to probe: 0 is the embeddings, i the output of block i "
              "(default: all).")
@click.option("--max-windows", type=AT_LEAST_1, default=8, show_default=True, metavar="N",
              help="The first N windows of each book go through the model (the cost is "
              "linear in N).")
@click.option("--batch", type=AT_LEAST_1, default=16, show_default=True,
              help="Windows per forward pass.")
@click.option("--threads", type=AT_LEAST_1, default=None,
              help="CPU threads for torch (default: torch's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the cross-validation folds that choose the ridge penalty.")
@format_option("table", "json")
@click.pass_context
def probe(ctx: click.Context, shards_ref: str, backbone: str, layers: tuple[int, ...],
          max_windows: int, batch: int, threads: int | None, seed: int, fmt: str) -> None:
    """How well each frozen layer of a backbone predicts the target; trains no model.

    Runs the frozen backbone over each book's first windows, mean-pools every layer per book
    and fits a ridge regression per layer on the training books (penalty chosen by
    cross-validation on the training books only), then scores it on the held-out
    (validation) books. The best layer is the one with the lowest cross-validated RMSE, so
    its held-out numbers are a fair estimate. Writes no table.

    Example: corpus probe --shards clear@3 --backbone all-minilm-l6-v2 --layers 0,3,6
    """
    from train.probe import ProbeConfig, run_probe

    lh = lakehouse(ctx)
    dataset, version, _ = shards_manifest(lh, shards_ref)
    cfg = ProbeConfig(backbone, layers=layers, max_windows_per_book=max_windows, batch=batch,
                      threads=threads, seed=seed)
    r = run_probe(lh, dataset=dataset, version=version, config=cfg)
    if fmt == "json":
        click.echo(json.dumps(_json_safe(r.to_dict()), indent=2))
        return
    from rich.table import Table

    t = Table(title=f"probe: {backbone} on shards {r.shards_ref} ({r.target}), "
                    f"held-out books")
    for col in ("layer", "RMSE", "MAE", "bias", "alpha", "CV RMSE (train)", ""):
        t.add_column(col, justify="left" if col in ("layer", "") else "right")
    for s in r.scores:
        t.add_row(f"{s.layer}" + (" (embeddings)" if s.layer == 0 else ""), f"{s.rmse:.3f}",
                  f"{s.mae:.3f}", f"{s.bias:+.3f}", f"{s.alpha:g}", f"{s.cv_rmse:.3f}",
                  "<- best" if s.layer == r.best_layer else "")
    console.print(t)
    console.print(f"books: {r.n_train_books} train / {r.n_held_out_books} held-out "
                  f"(windows {r.n_train_windows} / {r.n_held_out_windows}, at most "
                  f"{max_windows} per book); predicting the training mean: held-out RMSE "
                  f"{r.baseline['rmse']:.3f}; {r.seconds:.1f} s", highlight=False)
    console.print("best: the lowest cross-validated RMSE on the training books (the "
                  "held-out books chose nothing)", style="dim")


COMMANDS = [probe]
