"""What every command module shares: consoles, option types, the lakehouse of the call, and
the command classes that give click's parse errors their command (for the `error:` line).

The error handling itself is the group's (corpus/cli.py): commands raise ``CorpusError`` or
let click raise, and never print tracebacks or exit on their own for a user mistake.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from catalog import Lakehouse
from catalog.log import output_width

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console made on first use: commands that print through DuckDB or click alone
    (`corpus sql --format csv`) skip rich's import (~20 ms)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(stderr=self._stderr, soft_wrap=True,
                                    width=output_width(stream))
        return getattr(self._console, name)


console = _LazyConsole()
err_console = _LazyConsole(stderr=True)

# Ranges of numeric options: click refuses a value outside them before any work starts.
WORKERS = click.IntRange(min=1)
AT_LEAST_1 = click.IntRange(min=1)
AT_LEAST_0 = click.IntRange(min=0)
PORT = click.IntRange(0, 65535)
FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)
POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)


class OutFile(click.Path):
    """A file the command writes: not a folder, and its folder must exist."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        folder = Path(path).parent
        if not folder.is_dir():
            self.fail(f"the folder {folder} does not exist; create it first or write "
                      "somewhere else.", param, ctx)
        return path


def books_option(what: str):
    """``--books``, the same everywhere: book ids or shell patterns (``clear-*``), repeatable
    and comma-separated; the command gets a tuple of patterns (empty: every book)."""
    return click.option(
        "--books", "books", multiple=True, metavar="ID|PATTERN",
        callback=lambda _c, _p, v: tuple(p.strip() for item in v for p in item.split(",")
                                         if p.strip()),
        help=f"Only these books: ids or shell patterns such as clear-*, repeatable or "
             f"comma-separated (default: {what}).")


def executor_options(fn):
    """``--executor local|ray`` and ``--ray-address``, the same on every stage that maps
    work over workers (catalog/executor.py)."""
    fn = click.option(
        "--ray-address", default=None, metavar="ADDR", envvar="CORPUS_RAY_ADDRESS",
        help="The Ray cluster to run on with --executor ray, e.g. 10.0.0.5:6379 or "
             "ray://head:10001 (or CORPUS_RAY_ADDRESS; default: start Ray on this machine, "
             "bound to 127.0.0.1).")(fn)
    return click.option(
        "--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
        help="Where the work runs: local (a process pool here) or ray (a Ray cluster; "
             "--workers then counts Ray workers, default one per CPU of the cluster). The "
             "tables and lineage are the same either way.")(fn)


def stage_workers(workers: int | None, executor: str) -> int | None:
    """The ``workers`` a stage config gets: every core here by default on ``local``; on
    ``ray`` None (one per CPU of the cluster) unless ``--workers`` was given."""
    from catalog.workers import default_workers

    return default_workers(workers) if executor == "local" else workers


def format_option(*choices: str, default: str = "table"):
    """``--format`` with the given choices."""
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True, help="Output format.")


def lakehouse(ctx: click.Context) -> Lakehouse:
    """The lakehouse of this call (``--root``); an S3 endpoint is checked once to answer."""
    obj = ctx.find_root().obj
    lh = obj["lakehouse"]
    if lh.config.is_s3 and not obj.get("reachable"):
        # A quick TCP check first: an endpoint that does not answer is one line in seconds,
        # not a page of retries and credential probes from deltalake.
        from catalog.endpoint import check_reachable

        check_reachable(lh.config)
        obj["reachable"] = True
    return lh


def write_table(table: Any, *, fmt: str, **kw: Any) -> int:
    """Print an Arrow table in ``fmt`` (table, csv, json) through the SQL output writer."""
    import pyarrow as pa

    from sql.output import write_result

    return write_result(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
                        fmt=fmt, **kw)


class _KnowsItsCommand:
    """click raises some parse errors (an option without its value) without a context; give
    them the command's, so that the error line can say whose --help to read."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.ctx = e.ctx or ctx
            raise


class _ExampleLast:
    """The ``Example: ...`` paragraph a command's docstring ends with is printed last, after
    the options (click's epilog), where a reader of ``--help`` looks for it."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        text = self.help or ""
        at = text.rfind("Example:")
        if at > 0 and not self.epilog:
            self.help, self.epilog = text[:at].rstrip(), " ".join(text[at:].split())


class CorpusCommand(_ExampleLast, _KnowsItsCommand, click.Command):
    """A `corpus` subcommand."""


class CommandGroup(_ExampleLast, _KnowsItsCommand, click.Group):
    """A `corpus` group of subcommands (shards, flags, noise)."""

    command_class = CorpusCommand
    group_class = type  # its subgroups are of its class


def command(name: str | None = None, **kw: Any):
    """``click.command`` making a :class:`CorpusCommand`."""
    return click.command(name, cls=CorpusCommand, **kw)


def group(name: str | None = None, **kw: Any):
    """``click.group`` making a :class:`CommandGroup`."""
    return click.group(name, cls=CommandGroup, **kw)
