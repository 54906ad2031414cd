"""The `corpus` command line: the group, its global options and its error handling.

Every command lives in corpus/commands/<stage>.py and calls its stage's driver; this module
registers them, and turns whatever a user gets wrong into one `error:` line.
"""

from __future__ import annotations

import logging
import sys

import click

from catalog import CorpusError, Lakehouse, LakehouseConfig
from catalog.log import setup_logging
from catalog.version import version_line
from corpus.commands import (
    demo,
    ingest,
    lakehouse,
    noise,
    plan,
    probe,
    review,
    score,
    shards,
    sql,
    train,
)
from corpus.commands.common import CommandGroup, err_console

# Old spellings kept as aliases: (command, flag) -> the command path that replaced them.
ALIASES = {("train", "--plan"): ["plan"], ("noise", "--evaluate"): ["noise", "evaluate"]}
# options renamed on the way (the count of books a plan is for is now --limit)
RENAMED = {("train", "--plan"): {"--books": "--limit"}}


def _fail(message: str, status: int = 2) -> None:
    """Print one `error:` line (the message's own line breaks aside) and exit."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(status)


def _usage_line(e: click.ClickException) -> str:
    """click's error message on one line, with the hint how to get help."""
    message = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


class CorpusGroup(CommandGroup):
    """The `corpus` group: whatever a user gets wrong ends as one `error:` line, exit 2.

    click's usage errors (missing option, bad value, unknown option, a folder given for a
    file), :class:`CorpusError` (what stages raise on purpose) and OS errors (a path, an S3
    endpoint that does not answer) are printed as one line without a traceback. Anything else is
    a bug: one line too, exit 1, and ``-vv`` shows the traceback.
    """

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # `corpus train --plan ...` runs `corpus plan ...`, `corpus noise --evaluate ...` runs
        # `corpus noise evaluate ...`: scripts written for the old spellings keep working.
        for (name, flag), target in ALIASES.items():
            if args and args[0] == name and flag in args[1:]:
                rest = [a for a in args[1:] if a != flag]
                renamed = RENAMED.get((name, flag), {})
                rest = [renamed.get(a, a) for a in rest]
                if sys.stderr.isatty():  # for the person typing it; scripts stay quiet
                    err_console.print(f"note: `corpus {name} {flag}` is now "
                                      f"`corpus {' '.join(target)}`", highlight=False)
                args = [*target, *rest]
                break
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CorpusError, click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            # deltalake reports an S3 failure as a page of nested causes: one line instead.
            from catalog.endpoint import s3_failure

            lh = (ctx.obj or {}).get("lakehouse")
            failure = s3_failure(lh.config, e) if lh is not None else None
            if failure is None:
                raise
            raise failure from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `corpus` alone: its help, as click
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _fail(_usage_line(e))
        except CorpusError as e:
            _fail(str(e))
        except (click.Abort, KeyboardInterrupt):
            err_console.print("interrupted")
            sys.exit(130)
        except OSError as e:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            _fail(f"{e.strerror or e}{where}")
        except Exception as e:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            _fail(f"unexpected {type(e).__name__}: {' '.join(str(e).split())} (a bug: please "
                  "report it; run again with -vv to see where it happened)", status=1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _print_version(ctx: click.Context) -> None:
    # A callback, not click.version_option(version_line()): asking git costs ~80 ms, and
    # every command would pay it at import time.
    click.echo(version_line())
    ctx.exit()


@click.group("corpus", cls=CorpusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="CORPUS_ROOT", default=None, metavar="PATH|s3://BUCKET/PREFIX",
              help="Lakehouse root (default ./lakehouse; env CORPUS_ROOT).")
@click.option("-v", "--verbose", count=True,
              help="More output: -v info logging plus other libraries' warnings, banners and "
                   "weight-loading bars (off by default), -vv debug.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _p, v: _print_version(ctx) if v else None,
              help="Show the package version and the code version lineage records, and exit.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, verbose: int) -> None:
    """Corpus: a publisher's book archive as versioned training data for reading-level models.

    Example: corpus --root ./lakehouse -v score new_books/ --format csv
    """
    setup_logging(verbose)
    ctx.ensure_object(dict)
    ctx.obj["lakehouse"] = Lakehouse(LakehouseConfig.resolve(root))


for _module in (lakehouse, sql, ingest, review, noise, shards, train, plan, probe, score, demo):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(obj={}, prog_name="corpus")


if __name__ == "__main__":
    main()
