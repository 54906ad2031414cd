"""The `corpus` command line: one entry point, subcommands that call stage drivers."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from catalog import CorpusError, Lakehouse, LakehouseConfig, parse_table_ref
from catalog.log import setup_logging
from catalog.version import code_version

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class CorpusGroup(click.Group):
    """Turns every :class:`CorpusError` (a user mistake) into a one-line message, exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CorpusError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)


def _print_version(ctx: click.Context) -> None:
    # A callback, not click.version_option(code_version()): asking git costs ~80 ms, and
    # every command would pay it at import time.
    click.echo(f"corpus {code_version()}")
    ctx.exit()


def _lakehouse(ctx: click.Context) -> Lakehouse:
    return ctx.obj["lakehouse"]


@click.group(cls=CorpusGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--limit", type=int, default=None, help="Only the newest N commits.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, table: str, limit: int | None, fmt: str) -> None:
    """Show the commits of TABLE with their operation, inputs and code version."""
    from datetime import UTC, datetime

    commits = _lakehouse(ctx).history(table, limit)
    if fmt == "json":
        click.echo(json.dumps([c.__dict__ for c in commits], indent=2, default=str))
        return
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
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the result to this file instead of stdout.")
@click.option("--allow-files", is_flag=True,
              help="Let queries read/write local files (read_csv, COPY ... TO).")
@click.option("--max-rows", type=int, default=1000, show_default=True,
              help="Rows shown by --format table.")
@click.pass_context
def sql(ctx: click.Context, query: str | None, as_of: tuple[str, ...], fmt: str,
        out: str | None, allow_files: bool, max_rows: int) -> None:
    """Query every catalog table with DuckDB SQL (no QUERY: an interactive shell).

    Read-only: queries cannot change lakehouse tables or touch local files unless
    --allow-files is given. The view corpus_commits lists every commit with its lineage.
    """
    from sql import SqlSession, parse_as_of
    from sql.output import write_result
    from sql.shell import run_shell

    if query == "-":
        query = sys.stdin.read()
    with SqlSession(_lakehouse(ctx), as_of=parse_as_of(list(as_of)),
                    allow_files=allow_files) as session:
        if query is None:
            run_shell(session, fmt="table" if fmt == "parquet" else fmt)
            return
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
@click.option("--retention-hours", type=int, default=168, show_default=True)
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
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--dry-run", is_flag=True, help="Inspect and report; store and write nothing.")
@click.option("--full", is_flag=True,
              help="Read and hash every file again, even those unchanged (path, size, mtime) "
                   "since the last ingest.")
@click.option("--show", type=int, default=20, show_default=True,
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
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language(s).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Process pool here, or a Ray cluster.")
@click.option("--ray-address", default=None, help="Ray cluster address (default: local Ray).")
@click.pass_context
def ocr(ctx: click.Context, scan_ids: tuple[str, ...], workers: int | None, lang: str,
        executor: str, ray_address: str | None) -> None:
    """OCR every registered scan not yet done (resumable: reruns do only what is missing)."""
    import os

    from ingest.ocr import OcrConfig, run_ocr

    config = OcrConfig(lang=lang, workers=workers or os.cpu_count() or 1, executor=executor,
                       ray_address=ray_address)
    r = run_ocr(_lakehouse(ctx), config=config, scan_ids=scan_ids or None)
    console.print(f"{r.pages_done} page(s) recognised ({r.pages_skipped} already done) in "
                  f"{r.seconds:.1f} s; {r.scans_done} scan(s) done, "
                  f"{len(r.scans_failed or {})} failed")
    for sid, reason in (r.scans_failed or {}).items():
        err_console.print(f"  failed {sid}: {reason}", markup=False, highlight=False)


@cli.command()
@click.option("--status", type=click.Choice(["new", "ocr_done", "flagged", "accepted", "failed"]),
              default=None, help="Only scans in this state.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def scans(ctx: click.Context, status: str | None, fmt: str) -> None:
    """The scans queue: new first, then lowest OCR confidence first."""
    from sql import SqlSession
    from sql.output import write_result

    where = f"WHERE status = '{status}'" if status else ""
    with SqlSession(_lakehouse(ctx)) as s:
        write_result(s.batches(
            "SELECT scan_id, book_id, status, n_pages, pages_done, "
            "round(mean_confidence, 1) AS confidence, reason, source FROM scans "
            f"{where} ORDER BY status <> 'new', mean_confidence NULLS FIRST, scan_id"), fmt=fmt)


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
@click.pass_context
def flags_resolve(ctx: click.Context, flag_id: str) -> None:
    """Mark flag FLAG_ID resolved."""
    from ingest.flags import resolve_flag

    resolve_flag(_lakehouse(ctx), flag_id)
    console.print(f"flag {flag_id} resolved")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (keep the default unless a proxy guards the page).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.pass_context
def review(ctx: click.Context, host: str, port: int) -> None:
    """Serve the editors' review page: the scan queue, pages beside OCR text, flags."""
    from ingest.review import make_server

    try:
        server = make_server(_lakehouse(ctx), host, port)
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
@click.option("--seq-len", type=int, default=512, show_default=True,
              help="Max tokens per sample, special tokens included.")
@click.option("--window", type=click.Choice(["first", "chunks", "overlap"]), default="first",
              show_default=True, help="First window, consecutive chunks, or overlapping.")
@click.option("--stride", type=int, default=None, help="Window step for --window overlap.")
@click.option("--target", default="bt_easiness", show_default=True, help="Score metric.")
@click.option("--variants", default="edited", show_default=True,
              help="Comma-separated text variants; globs allowed (edited,ocr,noisy/*).")
@click.option("--val-frac", type=float, default=0.1, show_default=True,
              help="Fraction of books held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the book split.")
@click.option("--workers", type=int, default=None, help="Tokenizer processes (default: cores).")
@click.option("--shard-mb", type=float, default=32.0, show_default=True,
              help="Target shard size (MiB, before compression).")
@click.option("--shard-samples", type=int, default=None, help="Cap on samples per shard.")
@click.pass_context
def shards_build(ctx: click.Context, dataset: str, tokenizer: str, seq_len: int, window: str,
                 stride: int | None, target: str, variants: str, val_frac: float, seed: int,
                 workers: int | None, shard_mb: float, shard_samples: int | None) -> None:
    """Tokenise pinned texts into shard files and a new `shards` table version."""
    import os

    from train.shards import ShardsConfig, build_shards

    config = ShardsConfig(
        dataset=dataset, tokenizer=tokenizer, seq_len=seq_len, window=window, stride=stride,
        target=target, variants=tuple(variants.split(",")), val_frac=val_frac, seed=seed,
        workers=workers or os.cpu_count() or 1, shard_mb=shard_mb, shard_samples=shard_samples,
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
@click.option("--version", "version", type=int, default=None, help="shards table version.")
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


@cli.command()
@click.option("--recipe", type=click.Choice(["mined", "uniform"]), default="mined",
              show_default=True, help="mined: the patterns of `corpus mine`; uniform: a "
              "baseline of uniform random character noise at the real mean CER.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed and inputs give byte-identical variants.")
@click.option("--books", "book_ids", multiple=True, metavar="ID",
              help="Only these books (repeatable; default every edited book).")
@click.option("--per-book", type=int, default=1, show_default=True,
              help="Variants per book (seeds SEED .. SEED+K-1).")
@click.option("--cer-scale", type=float, default=1.0, show_default=True,
              help="Multiply every book's drawn character error level.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--evaluate", is_flag=True,
              help="Instead: compare synthetic variants with real OCR on held-out books.")
@click.option("--holdout", type=float, default=0.3, show_default=True,
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
    mb = r.chars_out / 1e6
    console.print(f"{r.rows} variant(s) of {r.books} book(s) in {r.seconds:.1f} s "
                  f"({mb:.1f} M characters out): " + ", ".join(r.variants))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE_OR_FOLDER_OR_BOOK...")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="A saved model folder (train.model.save_model or a checkpoint).")
@click.option("--run", "run_id", default=None,
              help="A training run from the runs table (default: the newest finished run).")
@click.option("--seq-len", type=int, default=None,
              help="Window length in tokens (default: the run's; 256 with --model).")
@click.option("--stride", type=int, default=0, show_default=True,
              help="Tokens shared by consecutive windows of a long text.")
@click.option("--batch", type=int, default=16, show_default=True,
              help="Texts read and predicted together (memory holds one batch).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language for scans.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              help="csv and json (one object per line) stream rows as they are scored.")
@click.pass_context
def score(ctx: click.Context, inputs: tuple[str, ...], model_dir: str | None,
          run_id: str | None, seq_len: int | None, stride: int, batch: int, lang: str,
          fmt: str) -> None:
    """Predict the reading level of files, folders of files, scans and catalog books.

    An input is a file (txt, docx, html, epub, pdf; a PDF without a text layer or a page
    image is OCR'd), a folder (every such file under it) or a catalog book as BOOK_ID or
    BOOK_ID:VARIANT (e.g. 9781234567897:ocr). Inputs that cannot be read are reported as
    rows with their error and the rest is scored; the exit status is then 1.
    """
    from corpus.score import iter_items, load_scorer, resolve_run, score_stream, write_rows

    lh = _lakehouse(ctx)
    if model_dir is None:
        model_dir, run_seq_len = resolve_run(lh, run_id)
        seq_len = seq_len or run_seq_len
    elif run_id is not None:
        from catalog import ConfigError

        raise ConfigError("give either --model or --run, not both.")
    scorer = load_scorer(model_dir=model_dir, seq_len=seq_len or 256, stride=stride)
    rows = score_stream(iter_items(inputs, lakehouse=lh, lang=lang), scorer, batch=batch)
    done, failed = write_rows(rows, fmt=fmt, stream=sys.stdout)
    err_console.print(f"{done} scored, {failed} failed (model {scorer.label})")
    if failed:
        sys.exit(1)


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the pipeline on the bundled sample in the lakehouse (default ./lakehouse)."""
    from corpus.demo import run_demo

    run_demo(_lakehouse(ctx), console)


def main() -> None:
    """Console-script entry point."""
    cli(obj={})


if __name__ == "__main__":
    main()
