"""`corpus plan`: the memory per device, time and cost of a training, before any weights load."""

from __future__ import annotations

import json

import click

from catalog.rules import DEFAULT_SEQ_LEN
from corpus.commands.common import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    command,
    console,
    lakehouse,
)
from corpus.commands.train import lora_rank, model_options, shards_manifest


@command("plan")
@click.option("--shards", "shards_ref", metavar="DATASET[@VERSION]",
              help="Plan for these shards: their window length, books and tokens per book.")
@model_options
@click.option("--seq-len", type=AT_LEAST_1, default=None,
              help=f"Window length (default: the shards'; else {DEFAULT_SEQ_LEN}).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="The device to plan for.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
              help="Compute dtype (default bfloat16 on cuda, float32 on cpu).")
@click.option("--device-mem", type=POSITIVE, default=None, metavar="GIB",
              help="Memory of one device: whether it fits, and if not, the smallest "
              "changes that would.")
@click.option("--limit", "books", type=AT_LEAST_1, default=None, metavar="N",
              help="Plan for N books (default: the shards').")
@click.option("--tokens-per-book", type=AT_LEAST_1, default=None,
              help="Tokens per book (default: the shards' mean, else seq-len).")
@click.option("--gpus", type=AT_LEAST_1, default=1, show_default=True, help="Devices.")
@click.option("--price", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Price per GPU-hour.")
@click.option("--tokens-per-s", type=POSITIVE, default=None,
              help="Measured throughput of one device (tokens/s).")
@click.option("--from-run", default=None, metavar="RUN_ID",
              help="Take tokens/s per device from a recorded run.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def plan(ctx: click.Context, shards_ref: str | None, backbone: str, head: str, quant: str,
         lora_r: int | None, full: bool, layer: int | None, dropout: float,
         layer_mix: bool, epochs: int,
         batch: int, grad_ckpt: bool, seq_len: int | None,
         device: str, dtype: str | None, device_mem: float | None, books: int | None,
         tokens_per_book: int | None, gpus: int, price: float, tokens_per_s: float | None,
         from_run: str | None, fmt: str) -> None:
    """Expected memory per device, time and cost of a training; trains nothing.

    A --seq-len beyond the backbone's positions is refused. With --device-mem, a plan that
    does not fit lists the smallest changes that would (checkpointing, a smaller batch,
    4-bit, more GPUs), each with its planned peak.

    Example: corpus plan --backbone smollm2-135m --quant 4bit --seq-len 2048
    --device-mem 16 --shards clear --from-run RUN
    """
    from train.plan import (
        PlanConfig,
        load_arch,
        manifest_defaults,
        plan_cost,
        plan_memory,
        plan_report,
        round_gib,
        run_tokens_per_s,
    )

    lh = lakehouse(ctx)
    _, _, manifest = shards_manifest(lh, shards_ref)
    seq_len, books, tokens_per_book = manifest_defaults(
        manifest, seq_len=seq_len, books=books, tokens_per_book=tokens_per_book)
    seq_len = seq_len or DEFAULT_SEQ_LEN
    lora_r = lora_rank(lora_r, full)
    cfg = PlanConfig(backbone, seq_len=seq_len, batch=batch, lora_r=lora_r, quant=quant,
                     full=full, layer=layer, dropout=dropout,
                     gradient_checkpointing=grad_ckpt, head=head, device=device,
                     dtype=dtype or ("bfloat16" if device == "cuda" else "float32"))
    arch = load_arch(backbone)
    mem = plan_memory(arch, cfg)
    if from_run:
        tokens_per_s = run_tokens_per_s(lh.read("runs").to_pylist(), from_run)
    cost = None
    if tokens_per_s and books:
        cost = plan_cost(books=books, tokens_per_book=tokens_per_book or seq_len, epochs=epochs,
                         gpus=gpus, tokens_per_s=tokens_per_s, price_per_gpu_hour=price)
    report = plan_report(arch, cfg, mem, device_gb=device_mem, cost=cost, gpus=gpus)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"plan: {backbone} ({arch.model_type}, {mem.params / 1e6:.0f}M params, "
                    f"{mem.trainable_params / 1e6:.2f}M trainable), seq {seq_len} x batch "
                    f"{batch}, {quant}, "
                    + ("full fine-tuning" if full else f"LoRA r={lora_r}")
                    + (", gradient checkpointing" if grad_ckpt else "") + f", {cfg.dtype}")
    t.add_column("memory per device")
    t.add_column("GiB", justify="right")
    for k, v in report["memory_gib"].items():
        t.add_row(k, round_gib(v))
    console.print(t)
    if device_mem is not None:
        verdict = "fits" if report["fits"] else "does NOT fit"
        console.print(f"{verdict} in {device_mem:g} GiB (90% usable)")
        _print_suggestions(report, device_mem)
    if cost is not None:
        console.print(f"{cost.tokens:,} tokens ({books:,} books x {epochs} epoch(s)) at "
                      f"{cost.tokens_per_s:,.0f} tokens/s on {gpus} device(s): "
                      f"{cost.wall_hours:.2f} h wall, {cost.gpu_hours:.1f} GPU-h, "
                      f"cost {cost.cost:,.2f}")
    else:
        console.print("time and cost: give --tokens-per-s or --from-run, and --limit or "
                      "--shards", style="dim")


def _print_suggestions(report: dict, device_mem: float) -> None:
    """What would make a plan fit (``report["suggestions"]``), or that nothing here does."""
    from train.plan import round_gib

    if report["suggestions"]:
        console.print("it would fit with any of:")
        for x in report["suggestions"]:
            console.print(f"  {x['options']:<34} peak {round_gib(x['peak_gib'])} GiB  "
                          f"{x['change']}: {x['note']}", highlight=False, markup=False)
    elif not report["fits"]:
        console.print(f"nothing planned here makes it fit: with gradient checkpointing, batch "
                      f"1 and 4-bit weights (where they apply) the peak is still "
                      f"{round_gib(report['smallest_peak_gib'])} GiB; more GPUs do not lower "
                      "the peak per device (data parallel, nothing sharded): a shorter "
                      "--seq-len, a smaller backbone or a device with more memory would.",
                      highlight=False)


COMMANDS = [plan]
