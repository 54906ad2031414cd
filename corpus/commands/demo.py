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
    """Run the pipeline on the bundled sample in the lakehouse (default ./lakehouse)."""
    from corpus.demo import run_demo

    run_demo(lakehouse(ctx), console)


COMMANDS = [demo]
