"""`corpus demo`: the whole pipeline on the bundled sample."""

from __future__ import annotations

import click

from corpus.commands.common import (
    command,
    console,
    lakehouse,
)


@command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the pipeline on the bundled sample in the lakehouse (default ./lakehouse).

    Ingest, OCR, mining, the sample passages, noisy variants (of the passages too), shards,
    a short 2-rank training, the evaluation report and scoring with grade bands. Run again
    on the same lakehouse it changes no data: each step works only when what it reads
    changed, and reuses its earlier result (patterns, noisy variants, shards, the trained
    run) otherwise. Library warnings and loading bars show with -v.

    Example: corpus --root ./lakehouse demo
    """
    from corpus.demo import run_demo

    run_demo(lakehouse(ctx), console)


COMMANDS = [demo]
