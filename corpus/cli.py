"""The `corpus` command line: one entry point, subcommands that call stage drivers."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from catalog import CorpusError, Lakehouse, LakehouseConfig, parse_table_ref
from catalog.log import output_width, setup_logging
from catalog.version import code_version

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


class _KnowsItsCommand:
    """click raises some parse errors (an option without its value) without a context; give
    them the command's, so that the error line can say whose --help to read."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            e.ctx = e.ctx or ctx
            raise


class CorpusCommand(_KnowsItsCommand, click.Command):
    """A `corpus` subcommand."""


class CorpusGroup(_KnowsItsCommand, click.Group):
    """The `corpus` group: whatever a user gets wrong ends as one `error:` line, exit 2.

    click's usage errors (missing option, bad value, unknown option, a folder given for a
    file), :class:`CorpusError` (what stages raise on purpose) and OS errors (a path, an S3
    endpoint that does not answer) are printed as one line without a traceback. Anything else is
    a bug: one line too, exit 1, and ``-vv`` shows the traceback.
    """

    command_class = CorpusCommand
    group_class = type  # subgroups (flags, shards) are CorpusGroups too

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
    # A callback, not click.version_option(code_version()): asking git costs ~80 ms, and
    # every command would pay it at import time.
    click.echo(f"corpus {code_version()}")
    ctx.exit()


def _lakehouse(ctx: click.Context) -> Lakehouse:
    lh = ctx.obj["lakehouse"]
    if lh.config.is_s3 and not ctx.obj.get("reachable"):
        # A quick TCP check first: an endpoint that does not answer is one line in seconds,
        # not a page of retries and credential probes from deltalake.
        from catalog.endpoint import check_reachable

        check_reachable(lh.config)
        ctx.obj["reachable"] = True
    return lh


@click.group("corpus", cls=CorpusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="CORPUS_ROOT", default=None, metavar="PATH|s3://BUCKET/PREFIX",
              help="Lakehouse root (default ./lakehouse; env CORPUS_ROOT).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _p, v: _print_version(ctx) if v else None,
              help="Show the code version and exit.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, verbose: int) -> None:
    """Corpus: a publisher's book archive as versioned training data for reading-level models."""
    setup_logging(verbose)
    ctx.ensure_object(dict)
    ctx.obj["lakehouse"] = Lakehouse(LakehouseConfig.resolve(root))


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create every catalog table (empty) that does not exist yet."""
    lh = _lakehouse(ctx)
    created = lh.init()
    console.print(f"lakehouse at {lh.root}: created {len(created)} table(s)"
                  + (f": {', '.join(created)}" if created else ""))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def tables(ctx: click.Context, fmt: str) -> None:
    """List tables with version, rows, data files and bytes."""
    lh = _lakehouse(ctx)
    stats = [lh.stats(n) for n in lh.list_tables()]
    if fmt == "json":
        click.echo(json.dumps([s.__dict__ for s in stats], indent=2))
        return
    from rich.table import Table

    t = Table(title=f"tables in {lh.root}")
    for col in ("table", "version", "rows", "files", "bytes", "description"):
        t.add_column(col, justify="right" if col in ("version", "rows", "files", "bytes")
                     else "left")
    for s in stats:
        t.add_row(s.name, str(s.version), f"{s.rows:,}", str(s.files), f"{s.bytes:,}",
                  s.description)
    console.print(t)
    if not stats:
        console.print("no tables yet: run `corpus init` or a pipeline stage", style="dim")


@cli.command()
@click.argument("table")
@click.option("--limit", type=AT_LEAST_1, default=None, help="Only the newest N commits.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, table: str, limit: int | None, fmt: str) -> None:
    """Show the commits of TABLE with their operation, inputs and code version."""
    from datetime import UTC, datetime

    commits = _lakehouse(ctx).history(table, limit)
    if fmt == "json":
        click.echo(json.dumps([c.__dict__ for c in commits], indent=2, default=str))
        return
    from rich.table import Table

    t = Table(title=f"history of {table}")
    for col in ("version", "committed (UTC)", "operation", "inputs", "rows added", "code"):
        t.add_column(col)
    for c in commits:
        when = datetime.fromtimestamp(c.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        inputs = ", ".join(f"{k}@{v}" for k, v in sorted(c.inputs.items())) or "-"
        added = c.metrics.get("num_added_rows", c.metrics.get("num_target_rows_inserted", ""))
        t.add_row(str(c.version), when, c.operation, inputs, str(added), c.code_version or "-")
    console.print(t)


@cli.command()
@click.argument("ref", metavar="TABLE[@VERSION|@TIMESTAMP]")
@click.option("--format", "fmt", type=click.Choice(["tree", "json"]), default="tree")
@click.pass_context
def lineage(ctx: click.Context, ref: str, fmt: str) -> None:
    """Walk what TABLE (at a version) was derived from, transitively."""
    name, version = parse_table_ref(ref)
    root = _lakehouse(ctx).lineage(name, version)
    if fmt == "json":
        click.echo(json.dumps(root.to_dict(), indent=2))
        return
    seen: set[tuple[str, int]] = set()

    from rich.tree import Tree

    def add(tree: Tree, node) -> None:
        ops = ", ".join(sorted({c.operation for c in node.commits if c.operation != "create"}))
        label = f"[bold]{node.table}@{node.version}[/]" + (f"  [dim]{ops}[/]" if ops else "")
        branch = tree.add(label)
        key = (node.table, node.version)
        if key in seen:
            branch.label = f"{label} [dim](see above)[/]"
            return
        seen.add(key)
        for src in node.sources:
            branch.add(f"[cyan]source[/] {src}")
        for parent in node.parents:
            add(branch, parent)

    top = Tree(f"lineage of {ref}")
    add(top, root)
    console.print(top)


@cli.command()
@click.argument("query", required=False)
@click.option("--as-of", "as_of", multiple=True, metavar="TABLE=VERSION",
              help="Pin a table to a version or ISO timestamp (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", help="Output format (parquet needs --out).")
@click.option("--out", type=OutFile(), default=None,
              help="Write the result to this file instead of stdout.")
@click.option("--allow-files", is_flag=True,
              help="Let queries read local files (read_csv) and COPY ... TO a file outside "
                   "the lakehouse.")
@click.option("--max-rows", type=AT_LEAST_0, default=1000, show_default=True,
              help="Rows shown by --format table.")
@click.pass_context
def sql(ctx: click.Context, query: str | None, as_of: tuple[str, ...], fmt: str,
        out: str | None, allow_files: bool, max_rows: int) -> None:
    """Query every catalog table with DuckDB SQL (no QUERY: an interactive shell).

    Read-only: queries cannot change lakehouse tables, nor touch local files unless
    --allow-files is given (reads, and COPY ... TO a file outside the lakehouse). The view
    corpus_commits lists every commit with its lineage.
    """
    from sql import SqlSession, parse_as_of
    from sql.output import write_csv, write_result

    if query == "-":
        query = sys.stdin.read()
    with SqlSession(_lakehouse(ctx), as_of=parse_as_of(list(as_of)),
                    allow_files=allow_files) as session:
        if query is None:
            from sql.shell import run_shell

            run_shell(session, fmt="table" if fmt == "parquet" else fmt)
            return
        if fmt == "csv":  # DuckDB writes it: no Arrow conversion, no pyarrow import
            n = write_csv(session, query, out=out)
        else:
            n = write_result(session.batches(query), fmt=fmt, out=out, max_rows=max_rows)
        if out:
            err_console.print(f"wrote {n} rows to {out}")


@cli.command()
@click.argument("table")
@click.pass_context
def optimize(ctx: click.Context, table: str) -> None:
    """Compact TABLE's small files (a new version with the same data)."""
    m = _lakehouse(ctx).optimize(table)
    console.print(f"{table}: {m.get('numFilesRemoved', 0)} files compacted into "
                  f"{m.get('numFilesAdded', 0)}")


@cli.command()
@click.argument("table")
@click.option("--retention-hours", type=AT_LEAST_0, default=168, show_default=True)
@click.option("--apply", is_flag=True, help="Delete the files (default: list them only).")
@click.pass_context
def vacuum(ctx: click.Context, table: str, retention_hours: int, apply: bool) -> None:
    """Remove data files no longer referenced by versions inside the retention window."""
    files = _lakehouse(ctx).vacuum(table, retention_hours=retention_hours, dry_run=not apply)
    verb = "deleted" if apply else "would delete (pass --apply)"
    console.print(f"{table}: {verb} {len(files)} file(s)")
    for f in files:
        console.print(f"  {f}", style="dim")


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--id", "id_col", required=True, metavar="COL", help="Column with unique ids.")
@click.option("--text", "text_col", required=True, metavar="COL", help="Column with the text.")
@click.option("--title", "title_col", metavar="COL", help="Column with a title.")
@click.option("--author", "author_col", metavar="COL", help="Column with an author.")
@click.option("--score", "score_cols", multiple=True, metavar="METRIC=COL",
              help="A score column, e.g. --score bt_easiness=BT_easiness (repeatable).")
@click.option("--id-prefix", default="", help="Prefix for every id (keeps them apart from ISBNs).")
@click.pass_context
def import_(ctx: click.Context, file: str, id_col: str, text_col: str, title_col: str | None,
            author_col: str | None, score_cols: tuple[str, ...], id_prefix: str) -> None:
    """Import labelled passages (CSV/TSV/Parquet) as books, edited texts and scores."""
    from catalog import ConfigError
    from ingest.passages import ImportConfig, run_import

    scores = {}
    for item in score_cols:
        metric, sep, col = item.partition("=")
        if not sep:
            raise ConfigError(f"--score {item!r}: expected METRIC=COLUMN, e.g. "
                              "--score bt_easiness=BT_easiness.")
        scores[metric.strip()] = col.strip()
    config = ImportConfig(id_col=id_col, text_col=text_col, title_col=title_col,
                          author_col=author_col, scores=scores, id_prefix=id_prefix)
    result = run_import(_lakehouse(ctx), file, config=config)
    console.print(f"imported {result.books.num_rows} passages and {result.scores.num_rows} "
                  f"scores from {file}; {len(result.rejected)} row(s) rejected")
    for r in result.rejected:
        err_console.print(f"  rejected {file} row {r.row} (id {r.passage_id}): {r.reason}",
                          highlight=False, markup=False)


@cli.command()
@click.argument("share", type=click.Path(file_okay=False))
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores).")
@click.option("--dry-run", is_flag=True, help="Inspect and report; store and write nothing.")
@click.option("--full", is_flag=True,
              help="Read and hash every file again, even those unchanged (path, size, mtime) "
                   "since the last ingest.")
@click.option("--show", type=AT_LEAST_0, default=20, show_default=True,
              help="How many quarantined files and rejected score rows to list.")
@click.pass_context
def ingest(ctx: click.Context, share: str, workers: int | None, dry_run: bool, full: bool,
           show: int) -> None:
    """Migrate an editorial SHARE into the lakehouse: every file accounted for."""
    from ingest.driver import run_ingest

    r = run_ingest(_lakehouse(ctx), share, workers=workers, dry_run=dry_run, full=full)
    console.print(f"{r.n_files} files in {r.share} ({r.seconds:.1f} s; {r.n_read} read, "
                  f"{r.n_files - r.n_read} unchanged since the last ingest): "
                  + ", ".join(f"{n} {k}" for k, n in sorted(r.by_status.items())))
    console.print("kinds: " + ", ".join(f"{n} {k}" for k, n in sorted(r.by_kind.items())))
    if dry_run:
        console.print("dry run: nothing stored or written")
    else:
        console.print("written: " + ", ".join(
            f"{t} {n} row(s) (now @{r.versions[t]})" for t, n in r.written.items()))
    for path, reason in r.quarantined[:show]:
        err_console.print(f"  quarantined {path}: {reason}", markup=False, highlight=False)
    for rej in r.score_rejects[:show]:
        err_console.print(f"  score row rejected {rej.source_file} row {rej.source_row}: "
                          f"{rej.reason}", markup=False, highlight=False)
    hidden = max(0, len(r.quarantined) - show) + max(0, len(r.score_rejects) - show)
    if hidden:
        err_console.print(f"  ... and {hidden} more: corpus sql \"SELECT path, reason FROM "
                          "files WHERE status = 'quarantined'\"", markup=False)


@cli.command()
@click.option("--scan", "scan_ids", multiple=True, metavar="ID",
              help="Only these scans (repeatable; also retries a failed scan).")
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language(s).")
@click.option("--page-foot/--no-page-foot", default=True, show_default=True,
              help="Read each page's bottom strip again for a page number that layout "
                   "analysis dropped (~20% more Tesseract time).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Process pool here, or a Ray cluster.")
@click.option("--ray-address", default=None, help="Ray cluster address (default: local Ray).")
@click.pass_context
def ocr(ctx: click.Context, scan_ids: tuple[str, ...], workers: int | None, lang: str,
        page_foot: bool, executor: str, ray_address: str | None) -> None:
    """OCR every registered scan not yet done (resumable: reruns do only what is missing)."""
    import os

    from ingest.ocr import OcrConfig, run_ocr

    config = OcrConfig(lang=lang, page_foot=page_foot, workers=workers or os.cpu_count() or 1,
                       executor=executor, ray_address=ray_address)
    r = run_ocr(_lakehouse(ctx), config=config, scan_ids=scan_ids or None)
    console.print(f"{r.pages_done} page(s) recognised ({r.pages_skipped} already done) in "
                  f"{r.seconds:.1f} s; {r.scans_done} scan(s) done, "
                  f"{len(r.scans_failed or {})} failed")
    for sid, reason in (r.scans_failed or {}).items():
        err_console.print(f"  failed {sid}: {reason}", markup=False, highlight=False)


@cli.command()
@click.option("--status", type=click.Choice(["new", "ocr_done", "flagged", "accepted", "failed"]),
              default=None, help="Only scans in this state.")
@click.option("--ready", is_flag=True,
              help="Only scans that can be scored without editing: the newest finished run's "
                   "prediction on their OCR text is stable over its windows (standard error "
                   "<= 0.10; see catalog/readiness.py), with that prediction.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def scans(ctx: click.Context, status: str | None, ready: bool, fmt: str) -> None:
    """The scans queue, in the review page's order (the share's)."""
    from sql import SqlSession
    from sql.output import write_result

    if ready:
        import pyarrow as pa

        from ingest.review_queue import ready_scans

        rows = [r for r in ready_scans(_lakehouse(ctx)) if status is None or r["status"] == status]
        schema = pa.schema([("scan_id", pa.string()), ("book_id", pa.string()),
                            ("status", pa.string()), ("run_id", pa.string()),
                            ("target", pa.string()), ("prediction", pa.float64()),
                            ("n_windows", pa.int32()), ("std_error", pa.float64())])
        t = pa.Table.from_pylist(rows, schema=schema)
        write_result(pa.RecordBatchReader.from_batches(t.schema, t.to_batches()), fmt=fmt)
        return
    from ingest.review_queue import queue_sql

    with SqlSession(_lakehouse(ctx)) as s:
        write_result(s.batches(queue_sql(status)), fmt=fmt)


@cli.command()
@click.argument("scan_id")
@click.option("--as", "flag", required=True,
              type=click.Choice(["rescan", "wrong_book", "needs_edit", "ok"]))
@click.option("--note", default=None, help="What is wrong, for whoever fixes it.")
@click.option("--by", "editor", required=True, metavar="NAME", help="Your name.")
@click.pass_context
def flag(ctx: click.Context, scan_id: str, flag: str, note: str | None, editor: str) -> None:
    """Flag a scan (or accept it with --as ok)."""
    from ingest.flags import add_flag

    flag_id = add_flag(_lakehouse(ctx), scan_id, flag=flag, editor=editor, note=note)
    console.print(f"flag {flag_id}: {scan_id} {flag} by {editor}")


@cli.command()
@click.argument("scan_id")
@click.option("--by", "editor", required=True, metavar="NAME", help="Your name.")
@click.pass_context
def promote(ctx: click.Context, scan_id: str, editor: str) -> None:
    """Make a fully corrected scan's text its book's edited text (recorded in promotions)."""
    from ingest.corrections import promote as promote_scan

    done = promote_scan(_lakehouse(ctx), scan_id, editor=editor)
    console.print(f"promotion {done.promotion_id}: book {done.book_id} edited from scan "
                  f"{scan_id} ({done.n_pages} corrected pages, {done.n_chars} chars) by {editor}")


@cli.group(invoke_without_command=True)
@click.option("--open", "open_only", is_flag=True, help="Only unresolved flags.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def flags(ctx: click.Context, open_only: bool, fmt: str) -> None:
    """List editors' flags (newest first); `corpus flags resolve ID` closes one."""
    if ctx.invoked_subcommand is not None:
        return
    import pyarrow as pa

    from ingest.flags import list_flags
    from sql.output import write_result

    t = list_flags(_lakehouse(ctx), open_only=open_only)
    write_result(pa.RecordBatchReader.from_batches(t.schema, t.to_batches()), fmt=fmt)


@flags.command("resolve")
@click.argument("flag_id")
@click.option("--by", "editor", default=None, metavar="NAME", help="Who resolved it.")
@click.pass_context
def flags_resolve(ctx: click.Context, flag_id: str, editor: str | None) -> None:
    """Mark flag FLAG_ID resolved."""
    from ingest.flags import resolve_flag

    resolve_flag(_lakehouse(ctx), flag_id, editor=editor)
    console.print(f"flag {flag_id} resolved")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (keep the default unless a proxy guards the page); "
                   "requests must name it or localhost, with the port, in their Host header.")
@click.option("--port", type=PORT, default=8765, show_default=True)
@click.pass_context
def review(ctx: click.Context, host: str, port: int) -> None:
    """Serve the editors' review page: the scan queue, pages beside OCR text, flags."""
    from ingest.review import make_server

    lh = _lakehouse(ctx)
    try:
        server = make_server(lh, host, port)
    except OSError as e:
        from catalog import ConfigError

        raise ConfigError(f"Cannot listen on {host}:{port}: {e.strerror}. "
                          "Pick another --port.") from None
    console.print(f"review page on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


@cli.group()
def shards() -> None:
    """Token shards: build a versioned dataset, list datasets, show a manifest."""


@shards.command("build")
@click.option("--name", "dataset", required=True, help="Dataset name (a rebuild = new version).")
@click.option("--tokenizer", required=True, metavar="NAME_OR_PATH",
              help="Tokenizer alias (e.g. all-minilm-l6-v2) or local folder.")
@click.option("--seq-len", type=click.IntRange(min=8), default=512, show_default=True,
              help="Max tokens per sample, special tokens included.")
@click.option("--window", type=click.Choice(["first", "chunks", "overlap"]), default="first",
              show_default=True, help="First window, consecutive chunks, or overlapping.")
@click.option("--stride", type=AT_LEAST_1, default=None, help="Window step for --window overlap.")
@click.option("--target", default="bt_easiness", show_default=True, help="Score metric.")
@click.option("--variants", default="edited", show_default=True,
              help="Comma-separated text variants; globs allowed (edited,ocr,noisy/*).")
@click.option("--val-frac", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fraction of books held out for validation.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Seed of the book split.")
@click.option("--books", "book_patterns", default="", metavar="PATTERN,...",
              help="Only books whose id matches (shell patterns, e.g. clear-*).")
@click.option("--split-by", type=click.Choice(["book", "work"]), default="book",
              show_default=True, help="work: books with the same author and title (passages "
              "of one source volume) share a split.")
@click.option("--workers", type=WORKERS, default=None, help="Tokenizer processes (default: cores).")
@click.option("--shard-mb", type=POSITIVE, default=32.0, show_default=True,
              help="Target shard size (MiB, before compression).")
@click.option("--shard-samples", type=AT_LEAST_1, default=None, help="Cap on samples per shard.")
@click.pass_context
def shards_build(ctx: click.Context, dataset: str, tokenizer: str, seq_len: int, window: str,
                 stride: int | None, target: str, variants: str, val_frac: float, seed: int,
                 book_patterns: str, split_by: str, workers: int | None, shard_mb: float,
                 shard_samples: int | None) -> None:
    """Tokenise pinned texts into shard files and a new `shards` table version."""
    import os

    from train.shards import ShardsConfig, build_shards

    config = ShardsConfig(
        dataset=dataset, tokenizer=tokenizer, seq_len=seq_len, window=window, stride=stride,
        target=target, variants=tuple(variants.split(",")), val_frac=val_frac, seed=seed,
        split_by=split_by, books=tuple(book_patterns.split(",")),
        workers=workers or os.cpu_count() or 1, shard_mb=shard_mb,
        shard_samples=shard_samples,
    )
    r = build_shards(_lakehouse(ctx), config=config)
    console.print(f"dataset {r.dataset} = shards@{r.version} (texts@{r.texts_version}, "
                  f"scores@{r.scores_version}) in {r.seconds:.1f} s; variants "
                  f"{', '.join(r.variants)}")
    for split in ("train", "validation"):
        console.print(f"  {split}: {r.samples[split]:,} samples, {r.tokens[split]:,} tokens, "
                      f"{r.books[split]} books, {r.shards[split]} shard file(s)")
    if r.excluded_no_target:
        err_console.print(f"  {r.excluded_no_target} book(s) left out: no {target} score, "
                          f"e.g. {', '.join(r.excluded_books[:5])}", markup=False,
                          highlight=False)
    if r.empty_texts:
        err_console.print(f"  {r.empty_texts} text(s) had no tokens", markup=False)


@shards.command("list")
@click.option("--version", "version", type=AT_LEAST_0, default=None, help="shards table version.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def shards_list(ctx: click.Context, version: int | None, fmt: str) -> None:
    """Datasets in the shards table (at a version), with samples and tokens per split."""
    import pyarrow as pa

    from sql.output import write_result

    t = _lakehouse(ctx).read("shards", version=version)
    agg = t.group_by(["dataset", "split", "tokenizer", "seq_len", "window", "target"]).aggregate(
        [("shard_uri", "count"), ("n_samples", "sum"), ("n_tokens", "sum")])
    agg = agg.rename_columns([{"shard_uri_count": "shards", "n_samples_sum": "samples",
                               "n_tokens_sum": "tokens"}.get(c, c) for c in agg.column_names])
    agg = agg.sort_by([("dataset", "ascending"), ("split", "ascending")])
    write_result(pa.RecordBatchReader.from_batches(agg.schema, agg.to_batches()), fmt=fmt)


@shards.command("show")
@click.argument("ref", metavar="DATASET[@VERSION]")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def shards_show(ctx: click.Context, ref: str, fmt: str) -> None:
    """The manifest of DATASET at a shards table version: one row per shard file."""
    import pyarrow as pa

    from sql.output import write_result
    from train.shards import read_manifest

    name, at, version = ref.partition("@")[0], "@" in ref, ref.partition("@")[2]
    if at and not version.isdigit():
        from catalog import ConfigError

        raise ConfigError(f"{ref!r}: expected DATASET or DATASET@VERSION (an integer).")
    rows, resolved = read_manifest(_lakehouse(ctx), name,
                                   version=int(version) if at else None)
    cols = ["split", "shard_index", "n_samples", "n_tokens", "n_books", "size_bytes", "sha256",
            "shard_uri"]
    rows = rows.select(cols)
    if fmt == "table":
        err_console.print(f"{name} at shards@{resolved}")
    write_result(pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches()), fmt=fmt)


def _align_input(ctx: click.Context, ref: str, texts_version: int | None) -> tuple[str, str]:
    """The text behind a `corpus align` argument and a label for it: a file, or a book
    variant ``BOOK_ID:VARIANT`` of the lakehouse's ``texts`` table."""
    from pathlib import Path

    from catalog import TableNotFoundError

    path = Path(ref)
    if path.is_file():
        from ingest.readers import DOCUMENT_SUFFIXES, TEXT_SUFFIXES, decode_text, read_document

        if path.suffix.lower() in DOCUMENT_SUFFIXES - TEXT_SUFFIXES:
            return read_document(path).text, path.name
        text, _ = decode_text(path.read_bytes(), name=str(path))
        return text.replace("\r\n", "\n").replace("\r", "\n"), path.name
    book, sep, variant = ref.partition(":")
    if not sep or not book or not variant:
        raise CorpusError(f"{ref!r} is neither a file nor a book variant BOOK_ID:VARIANT "
                          "(e.g. 9781038783486:ocr).")
    import pyarrow.dataset as pads

    lh = _lakehouse(ctx)
    try:
        rows = lh.read("texts", version=texts_version, columns=["book_id", "variant", "text"],
                       filter=pads.field("book_id") == book).to_pylist()
    except TableNotFoundError:
        raise CorpusError("No texts yet: run `corpus ingest SHARE` (and `corpus ocr`).") \
            from None
    found = {r["variant"]: r["text"] for r in rows}
    if variant not in found:
        have = ", ".join(sorted(found)) or "none: unknown book"
        raise CorpusError(f"Book {book} has no {variant!r} text (variants: {have}).")
    return found[variant], ref


@cli.command()
@click.argument("reference", metavar="REFERENCE")
@click.argument("hypothesis", metavar="HYPOTHESIS")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--html", "html_out", type=OutFile(), default=None,
              metavar="OUT.html", help="Also write a side-by-side diff page.")
@click.option("--texts-version", type=AT_LEAST_0, default=None, metavar="N",
              help="Read BOOK_ID:VARIANT arguments from this texts version (default latest).")
@click.option("--top", type=AT_LEAST_0, default=10, show_default=True,
              help="How many of the most frequent edits to list.")
@click.option("--normalize", "norms", multiple=True,
              type=click.Choice(["nfc", "whitespace", "case"]),
              help="Compare normalised texts (repeatable): nfc (Unicode composition), "
              "whitespace (runs of spaces/line breaks count as one space), case.")
@click.pass_context
def align(ctx: click.Context, reference: str, hypothesis: str, fmt: str,
          html_out: str | None, texts_version: int | None, top: int,
          norms: tuple[str, ...]) -> None:
    """CER and WER of a raw text (HYPOTHESIS) against its edited text (REFERENCE).

    Each argument is a file (.txt in any encoding, taken as it is; .docx .html .epub .pdf
    through the ingest readers) or a book variant of the lakehouse, BOOK_ID:VARIANT, e.g.
    9781038783486:edited 9781038783486:ocr (an existing file of that name wins). CER =
    character edit distance / reference characters, WER = word edit distance / reference
    words (whitespace-separated), both exact, computed at book length by anchored alignment.
    """
    from collections import Counter

    from noise.align import align as align_texts
    from noise.align import normalize, to_html

    ref_text, ref_label = _align_input(ctx, reference, texts_version)
    hyp_text, hyp_label = _align_input(ctx, hypothesis, texts_version)
    if norms:
        ref_text, hyp_text = normalize(ref_text, norms), normalize(hyp_text, norms)
    a = align_texts(ref_text, hyp_text)
    edits: Counter = Counter()
    for b in a.blocks():
        r, h = ref_text[b.ref_start:b.ref_end], hyp_text[b.hyp_start:b.hyp_end]
        if b.tag != "equal" and max(len(r), len(h)) <= 3:
            edits[(r, h)] += 1
    top_edits = [{"reference": r, "hypothesis": h, "count": n}
                 for (r, h), n in edits.most_common(top)]
    if html_out:
        from pathlib import Path

        Path(html_out).write_text(to_html(ref_text, hyp_text, a,
                                          title=f"{ref_label} vs {hyp_label}"),
                                  encoding="utf-8")
    if fmt == "json":
        click.echo(json.dumps({"reference": ref_label, "hypothesis": hyp_label,
                               "normalize": list(norms), **a.to_dict(),
                               "top_edits": top_edits, "html": html_out},
                              indent=2, ensure_ascii=False))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{escape(ref_label)} (reference) vs {escape(hyp_label)} (hypothesis)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("CER", f"{a.cer:.2%}")
    t.add_row("WER", f"{a.wer:.2%}")
    t.add_row("character edits", f"{a.distance:,}")
    for k in ("replace", "insert", "delete"):
        t.add_row(f"  {k}", f"{a.count(k):,}")
    t.add_row("reference / hypothesis chars", f"{a.ref_len:,} / {a.hyp_len:,}")
    t.add_row("word edits / reference words", f"{a.word_distance:,} / {a.ref_words:,}")
    console.print(t)
    if top_edits:
        e = Table(title="most frequent edits")
        for col in ("reference", "hypothesis", "count"):
            e.add_column(col, justify="right" if col == "count" else "left")
        for row in top_edits:
            e.add_row(repr(row["reference"]), repr(row["hypothesis"]), str(row["count"]))
        console.print(e)
    if html_out:
        console.print(f"side-by-side diff written to {html_out}", highlight=False)


@cli.command()
@click.option("--variant", default="ocr", show_default=True,
              help="The raw variant to mine against each book's edited text.")
@click.option("--workers", type=WORKERS, default=1, show_default=True,
              help="Processes aligning books in parallel.")
@click.option("--show", type=AT_LEAST_0, default=10, show_default=True,
              help="How many of the most frequent confusions to list.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def mine(ctx: click.Context, variant: str, workers: int, show: int, fmt: str) -> None:
    """Align every book that has an edited and a raw variant; mine the OCR artifacts.

    Writes `alignments` (per book CER, WER, edit counts, body CER) and `artifacts` (every
    pattern with its kind, raw and edited forms, context, count, probability per opportunity
    and number of books; see noise/mine.py), replacing the rows of this variant; both
    commits record the texts version they came from.
    """
    from noise.mine import MineConfig, run_mine

    r = run_mine(_lakehouse(ctx), config=MineConfig(variant=variant, workers=workers))
    if fmt == "json":
        click.echo(json.dumps(r.__dict__, indent=2, default=str, ensure_ascii=False))
        return
    inputs = ", ".join(f"{k}@{v}" for k, v in sorted(r.inputs.items()))
    console.print(f"{r.books} book(s) mined against {variant} in {r.seconds:.1f} s from "
                  f"{inputs}: CER {r.cer:.2%} (text alone {r.body_cer:.2%}), WER {r.wer:.2%}; "
                  f"written alignments@{r.versions['alignments']}, "
                  f"artifacts@{r.versions['artifacts']}", highlight=False)
    from rich.table import Table

    t = Table(title="artifacts by kind")
    t.add_column("kind")
    t.add_column("seen", justify="right")
    for k, n in sorted(r.kinds.items(), key=lambda kv: -kv[1]):
        t.add_row(k, f"{n:,}")
    console.print(t)
    if r.top and show:
        c = Table(title="most frequent confusions (all contexts)")
        for col in ("kind", "edited", "raw", "count", "per occurrence", "books"):
            c.add_column(col, justify="right" if col in ("count", "per occurrence", "books")
                         else "left")
        for a in r.top[:show]:
            c.add_row(a["kind"], repr(a["edited"]), repr(a["raw"]), str(a["count"]),
                      f"{a['probability']:.4f}", str(a["n_books"]))
        console.print(c)


@cli.command()
@click.option("--recipe", type=click.Choice(["mined", "uniform"]), default="mined",
              show_default=True, help="mined: the patterns of `corpus mine`; uniform: a "
              "baseline of uniform random character noise at the real mean CER.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Same seed and inputs give byte-identical variants.")
@click.option("--books", "book_ids", multiple=True, metavar="ID",
              help="Only these books (repeatable; default every edited book).")
@click.option("--per-book", type=AT_LEAST_1, default=1, show_default=True,
              help="Variants per book (seeds SEED .. SEED+K-1).")
@click.option("--cer-scale", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Multiply every book's drawn character error level.")
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores).")
@click.option("--evaluate", is_flag=True,
              help="Instead: compare synthetic variants with real OCR on held-out books.")
@click.option("--holdout", type=FRACTION, default=0.3, show_default=True,
              help="With --evaluate: share of the scanned books held out from mining.")
@click.option("--nlpaug-python", default=None, metavar="PATH",
              help="With --evaluate: a Python with nlpaug for its OCR baseline "
              "(default: this one, if nlpaug imports).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def noise(ctx: click.Context, recipe: str, seed: int, book_ids: tuple[str, ...], per_book: int,
          cer_scale: float, workers: int | None, evaluate: bool, holdout: float,
          nlpaug_python: str | None, fmt: str) -> None:
    """Write noisy variants of edited books (texts variant noisy/<recipe>-v<N>/<seed>)."""
    import os

    if evaluate:
        from noise.evaluate import EvalConfig, format_report, run_evaluate

        econf = EvalConfig(holdout=holdout, seed=seed, cer_scale=cer_scale,
                           workers=workers or os.cpu_count() or 1,
                           nlpaug_python=nlpaug_python)
        result = run_evaluate(_lakehouse(ctx), config=econf)
        if fmt == "json":
            click.echo(json.dumps(result.to_dict(), indent=2))
        else:
            console.print(format_report(result), markup=False, highlight=False)
        return
    from noise.generate import NoiseConfig, run_noise

    config = NoiseConfig(recipe=recipe, seed=seed, per_book=per_book, cer_scale=cer_scale,
                         books=tuple(book_ids), workers=workers or os.cpu_count() or 1)
    r = run_noise(_lakehouse(ctx), config=config)
    if fmt == "json":
        click.echo(json.dumps(r.__dict__, indent=2, default=str))
        return
    console.print(f"{r.rows} variant(s) of {r.books} book(s) in {r.seconds:.1f} s "
                  f"({r.chars_in:,} characters in, {r.chars_out:,} out): "
                  + ", ".join(r.variants))


@cli.command("eval")
@click.argument("run_id", required=False, metavar="[RUN]")
@click.option("--variants", default="", metavar="V1,V2,...",
              help="Variants of the held-out books to score (edited,ocr,noisy/*; default all).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default reports/<run>).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def eval_(ctx: click.Context, run_id: str | None, variants: str, out: str | None,
          fmt: str) -> None:
    """Evaluate RUN (default: the newest finished run) on its held-out books.

    Writes `predictions` and a report folder: RMSE, MAE, Spearman and bias per variant for the
    model and for readability formulas fit on the training split, the worst books, the shift
    between clean and noisy/OCR twins, and PNG plots.
    """
    from train.evaluate import EvalConfig, run_eval

    r = run_eval(_lakehouse(ctx), run_id,
                 config=EvalConfig(variants=tuple(variants.split(",")), out=out))
    if fmt == "json":
        click.echo(json.dumps({"run_id": r.run_id, "report": str(r.report_dir),
                               **r.summary}, indent=2, default=float))
        return
    from rich.table import Table

    t = Table(title=f"run {r.run_id}: held-out books ({r.summary['target']})")
    for col in ("variant", "predictor", "n", "RMSE", "MAE", "Spearman", "bias"):
        t.add_column(col, justify="left" if col in ("variant", "predictor") else "right")
    for fam, entry in r.summary["variants"].items():
        best = entry.get("best_formula")
        for name in ("model", *([best] if best else [])):
            m = entry[name]
            t.add_row(fam, name if name == "model" else f"{name} (best formula)", str(m["n"]),
                      f"{m['rmse']:.3f}", f"{m['mae']:.3f}", f"{m['spearman']:.3f}",
                      f"{m['bias']:+.3f}")
    console.print(t)
    console.print(f"{r.n_predictions} predictions (predictions@{r.predictions_version}); "
                  f"report: {r.report_dir / 'report.md'}")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE_OR_FOLDER_OR_BOOK...")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="A saved model folder (train.model.save_model or a checkpoint).")
@click.option("--run", "run_id", default=None,
              help="A training run from the runs table (default: the newest finished run).")
@click.option("--seq-len", type=click.IntRange(min=8), default=None,
              help="Window length in tokens (default: the run's; 256 with --model).")
@click.option("--stride", type=AT_LEAST_0, default=0, show_default=True,
              help="Tokens shared by consecutive windows of a long text.")
@click.option("--batch", type=AT_LEAST_1, default=16, show_default=True,
              help="Texts read and predicted together (memory holds one batch).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language for scans.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              help="csv and json (one object per line) stream rows as they are scored.")
@click.option("--save", is_flag=True,
              help="Write each scored catalog book (BOOK_ID[:VARIANT]) to predictions under "
                   "the run, with its window count and spread (one commit); needs a run "
                   "(--run or the newest), not --model. Files given by path are scored "
                   "but not saved: they are not catalog books.")
@click.pass_context
def score(ctx: click.Context, inputs: tuple[str, ...], model_dir: str | None,
          run_id: str | None, seq_len: int | None, stride: int, batch: int, lang: str,
          fmt: str, save: bool) -> None:
    """Predict the reading level of files, folders of files, scans and catalog books.

    An input is a file (txt, docx, html, epub, pdf; a PDF without a text layer or a page
    image is OCR'd), a folder (every such file under it) or a catalog book as BOOK_ID or
    BOOK_ID:VARIANT (e.g. 9781234567897:ocr). Inputs that cannot be read are reported as
    rows with their error and the rest is scored; the exit status is then 1. Each row
    gives the number of windows the text was cut into and the spread of their predictions.
    """
    from catalog import ConfigError, TableNotFoundError
    from corpus.score import (
        find_scoring_run,
        iter_items,
        load_scorer,
        save_predictions,
        score_stream,
        write_rows,
    )

    lh = _lakehouse(ctx)
    run = None
    if model_dir is None:
        run = find_scoring_run(lh, run_id)
        model_dir, seq_len = run["model_dir"], seq_len or run["seq_len"]
    elif run_id is not None:
        raise ConfigError("give either --model or --run, not both.")
    elif save:
        raise ConfigError("--save writes predictions under a training run: use --run RUN "
                          "(or neither, for the newest run) instead of --model.")
    texts_version = None
    if save:
        try:
            texts_version = lh.version("texts")  # pinned for the whole call, and recorded
        except TableNotFoundError:
            texts_version = None
    scorer = load_scorer(model_dir=model_dir, seq_len=seq_len or 256, stride=stride)
    rows = score_stream(iter_items(inputs, lakehouse=lh, lang=lang, texts_version=texts_version),
                        scorer.windows, batch=batch)
    kept: list[dict] = []
    if save:
        def _tee(rows):
            for r in rows:
                if r["error"] is None and r["source"].startswith("catalog:"):
                    kept.append(r)
                yield r
        rows = _tee(rows)
    done, failed = write_rows(rows, fmt=fmt, stream=sys.stdout)
    err_console.print(f"{done} scored, {failed} failed (model {scorer.label})")
    if save and run is not None:
        n, version = save_predictions(lh, kept, run_id=run["run_id"], target=run["target"],
                                      texts_version=texts_version)
        err_console.print(f"{n} prediction(s) saved under run {run['run_id']}"
                          + (f" (predictions@{version})" if version is not None else
                             ": no catalog book was scored"))
    if failed:
        sys.exit(1)


@cli.command("train")
@click.option("--shards", "shards_ref", metavar="DATASET[@VERSION]",
              help="Token shards to train on (default version: the latest).")
@click.option("--backbone", default="all-minilm-l6-v2", show_default=True,
              metavar="NAME_OR_PATH", help="Backbone alias (smollm2-135m, ...) or local folder.")
@click.option("--head", type=click.Choice(["attention", "dense"]), default="attention",
              show_default=True)
@click.option("--quant", type=click.Choice(["none", "4bit"]), default="none", show_default=True)
@click.option("--lora-r", type=AT_LEAST_0, default=8, show_default=True,
              help="LoRA rank (0: head only).")
@click.option("--epochs", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--batch", type=AT_LEAST_1, default=8, show_default=True,
              help="Windows per rank per step.")
@click.option("--grad-accum", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--lr", type=POSITIVE, default=2e-4, show_default=True)
@click.option("--max-steps", type=AT_LEAST_0, default=0, help="Stop after N optimizer steps.")
@click.option("--grad-ckpt", is_flag=True, help="Gradient checkpointing (less memory).")
@click.option("--ckpt-every", type=AT_LEAST_1, default=50, show_default=True,
              help="Checkpoint every N steps.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True)
@click.option("--nproc", type=AT_LEAST_1, default=1, show_default=True, help="Ranks per node.")
@click.option("--nnodes", type=AT_LEAST_1, default=1, show_default=True)
@click.option("--rdzv", default=None, metavar="HOST:PORT", help="Rendezvous of a multi-node job.")
@click.option("--node-rank", type=AT_LEAST_0, default=0, show_default=True)
@click.option("--max-restarts", type=AT_LEAST_0, default=3, show_default=True)
@click.option("--hang-timeout", type=POSITIVE, default=300.0, show_default=True,
              help="Seconds without progress before a rank counts as hung.")
@click.option("--run-dir", default=None, help="Run folder (default ./runs/<run id>); an "
              "existing one resumes from its newest checkpoint.")
@click.option("--plan", is_flag=True, help="Print expected memory, time and cost; train nothing.")
@click.option("--seq-len", type=AT_LEAST_1, default=None,
              help="Plan: window length (default: shards').")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="Plan: the device to plan for.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
              help="Plan: compute dtype (default bfloat16 on cuda, float32 on cpu).")
@click.option("--device-mem", type=POSITIVE, default=None, metavar="GIB",
              help="Plan: memory of one device, to say whether it fits.")
@click.option("--books", type=AT_LEAST_1, default=None, help="Plan: books (default: the shards').")
@click.option("--tokens-per-book", type=AT_LEAST_1, default=None,
              help="Plan: tokens per book (default: the shards' mean, else seq-len).")
@click.option("--gpus", type=AT_LEAST_1, default=1, show_default=True, help="Plan: devices.")
@click.option("--price", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Plan: price per GPU-hour.")
@click.option("--tokens-per-s", type=POSITIVE, default=None,
              help="Plan: measured throughput of one device (tokens/s).")
@click.option("--from-run", default=None, metavar="RUN_ID",
              help="Plan: take tokens/s per device from a recorded run.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def train_(ctx: click.Context, shards_ref: str | None, backbone: str, head: str, quant: str,
           lora_r: int, epochs: int, batch: int, grad_accum: int, lr: float, max_steps: int,
           grad_ckpt: bool, ckpt_every: int, seed: int, nproc: int, nnodes: int,
           rdzv: str | None, node_rank: int, max_restarts: int, hang_timeout: float,
           run_dir: str | None, plan: bool, seq_len: int | None, device: str,
           dtype: str | None, device_mem: float | None, books: int | None,
           tokens_per_book: int | None, gpus: int, price: float, tokens_per_s: float | None,
           from_run: str | None, fmt: str) -> None:
    """Train the reading-level model under torchrun (or --plan it: memory, time, cost)."""
    from catalog import ConfigError

    lh = _lakehouse(ctx)
    manifest = None
    dataset, version = None, None
    if shards_ref:
        from train.shards import read_manifest

        dataset, version = parse_table_ref(shards_ref)
        if version is not None and not isinstance(version, int):
            raise ConfigError(f"--shards {shards_ref}: expected DATASET or DATASET@VERSION "
                              "(an integer shards table version).")
        manifest, version = read_manifest(lh, dataset, version=version, split="train")
    if plan:
        _print_plan(lh, manifest, backbone=backbone, head=head, quant=quant, lora_r=lora_r,
                    epochs=epochs, batch=batch, grad_ckpt=grad_ckpt, seq_len=seq_len,
                    device=device, dtype=dtype, device_mem=device_mem, books=books,
                    tokens_per_book=tokens_per_book, gpus=gpus, price=price,
                    tokens_per_s=tokens_per_s, from_run=from_run, fmt=fmt)
        return
    if manifest is None:
        raise ConfigError("corpus train needs --shards DATASET[@VERSION] (build them with "
                          "corpus shards build), or --plan.")
    from train.backbones import resolve_backbone
    from train.launch import LaunchConfig, run_training
    from train.model import ModelConfig
    from train.recipe import TrainConfig

    shard_tok = str(manifest.column("tokenizer")[0].as_py())
    if resolve_backbone(shard_tok) != resolve_backbone(backbone):
        raise ConfigError(
            f"shards {dataset}@{version} were tokenised with {shard_tok!r}, but the backbone "
            f"is {backbone!r}: token ids would mean nothing to it. Train with --backbone "
            f"{shard_tok}, or build shards with --tokenizer {backbone}.")
    mcfg = ModelConfig(backbone, head=head, quant=quant, lora_r=lora_r,
                       gradient_checkpointing=grad_ckpt)
    cfg = TrainConfig(root=lh.root, dataset=dataset, shards_version=version,
                      model=mcfg.to_dict(), epochs=epochs, batch=batch, grad_accum=grad_accum,
                      lr=lr, max_steps=max_steps, ckpt_every=ckpt_every, seed=seed,
                      seq_len=int(manifest.column("seq_len")[0].as_py()))
    launch = LaunchConfig(nproc=nproc, nnodes=nnodes, rdzv=rdzv, node_rank=node_rank,
                          max_restarts=max_restarts, hang_timeout=hang_timeout)
    res = run_training(lh, cfg, launch, run_dir=run_dir)
    m = res.metrics
    console.print(f"run {res.run_id}: {res.status} after {res.attempts} attempt(s), "
                  f"{m.get('steps', 0)} steps; loss {m.get('first_loss', float('nan')):.4f} -> "
                  f"{m.get('last_loss', float('nan')):.4f}; validation book MAE "
                  f"{m.get('val_book_mae', float('nan')):.4f}; "
                  f"{m.get('tokens_per_s', 0):.0f} tokens/s")
    if res.skipped:
        err_console.print(f"skipped {len(res.skipped)} sample(s) that crashed the job twice: "
                          f"{', '.join(res.skipped)}", markup=False)
    console.print(f"run folder {res.run_dir}; model {res.checkpoint_uri}", highlight=False)


def _print_plan(lh: Lakehouse, manifest, *, backbone: str, head: str, quant: str, lora_r: int,
                epochs: int, batch: int, grad_ckpt: bool, seq_len: int | None, device: str,
                dtype: str | None, device_mem: float | None, books: int | None,
                tokens_per_book: int | None, gpus: int, price: float,
                tokens_per_s: float | None, from_run: str | None, fmt: str) -> None:
    from catalog import ConfigError
    from train.plan import PlanConfig, load_arch, plan_cost, plan_memory, plan_report, round_gib

    if manifest is not None:
        seq_len = seq_len or int(manifest.column("seq_len")[0].as_py())
        n_books = sum(manifest.column("n_books").to_pylist())
        books = books or n_books
        if tokens_per_book is None and n_books:
            tokens_per_book = -(-sum(manifest.column("n_samples").to_pylist()) * seq_len
                                // n_books)
    seq_len = seq_len or 512
    cfg = PlanConfig(backbone, seq_len=seq_len, batch=batch, lora_r=lora_r, quant=quant,
                     gradient_checkpointing=grad_ckpt, head=head, device=device,
                     dtype=dtype or ("bfloat16" if device == "cuda" else "float32"))
    arch = load_arch(backbone)
    mem = plan_memory(arch, cfg)
    if from_run:
        rows = [r for r in lh.read("runs").to_pylist() if r["run_id"] == from_run]
        if not rows:
            raise ConfigError(f"no run {from_run!r} in the runs table.")
        m = json.loads(rows[0]["metrics"] or "{}")
        if not m.get("tokens_per_s"):
            raise ConfigError(f"run {from_run} recorded no tokens_per_s.")
        tokens_per_s = m["tokens_per_s"] / max(1, int(m.get("world_size") or 1))
    cost = None
    if tokens_per_s and books:
        cost = plan_cost(books=books, tokens_per_book=tokens_per_book or seq_len, epochs=epochs,
                         gpus=gpus, tokens_per_s=tokens_per_s, price_per_gpu_hour=price)
    report = plan_report(arch, cfg, mem, device_gb=device_mem, cost=cost)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"plan: {backbone} ({arch.model_type}, {mem.params / 1e6:.0f}M params, "
                    f"{mem.trainable_params / 1e6:.2f}M trainable), seq {seq_len} x batch "
                    f"{batch}, {quant}, LoRA r={lora_r}"
                    + (", gradient checkpointing" if grad_ckpt else "") + f", {cfg.dtype}")
    t.add_column("memory per device")
    t.add_column("GiB", justify="right")
    for k, v in report["memory_gib"].items():
        t.add_row(k, round_gib(v))
    console.print(t)
    if device_mem is not None:
        verdict = "fits" if report["fits"] else "does NOT fit"
        console.print(f"{verdict} in {device_mem:g} GiB (90% usable)")
    if cost is not None:
        console.print(f"{cost.tokens:,} tokens ({books:,} books x {epochs} epoch(s)) at "
                      f"{cost.tokens_per_s:,.0f} tokens/s on {gpus} device(s): "
                      f"{cost.wall_hours:.2f} h wall, {cost.gpu_hours:.1f} GPU-h, "
                      f"cost {cost.cost:,.2f}")
    else:
        console.print("time and cost: give --tokens-per-s or --from-run, and --books or "
                      "--shards", style="dim")


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the pipeline on the bundled sample in the lakehouse (default ./lakehouse)."""
    from corpus.demo import run_demo

    run_demo(_lakehouse(ctx), console)


def main() -> None:
    """Console-script entry point."""
    cli(obj={}, prog_name="corpus")


if __name__ == "__main__":
    main()
