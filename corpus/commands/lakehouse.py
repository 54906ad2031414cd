"""The lakehouse itself: create and list tables, their history and lineage, compaction and
vacuum."""

from __future__ import annotations

import json

import click

from catalog import parse_table_ref
from corpus.commands.common import (
    AT_LEAST_0,
    AT_LEAST_1,
    command,
    console,
    lakehouse,
)


@command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create every catalog table (empty) that does not exist yet, and write the declared
    table and column descriptions into the Delta metadata of tables that lack them.

    Example: corpus --root ./lakehouse init
    """
    lh = lakehouse(ctx)
    existing = lh.list_tables()
    created = lh.init()
    # tables made by an older version: one commit per column whose description differs
    described = [n for n in existing if lh.write_descriptions(n)]
    console.print(f"lakehouse at {lh.root}: created {len(created)} table(s)"
                  + (f": {', '.join(created)}" if created else ""))
    if described:
        console.print(f"wrote the column descriptions into {len(described)} existing "
                      f"table(s): {', '.join(described)}")


@command()
@click.argument("table", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def describe(table: str | None, fmt: str) -> None:
    """What the catalog holds: every table with its description, or with TABLE every
    column with its type, whether it may be null, whether it is a key and what it means.

    The descriptions are declared beside the schemas (catalog/schemas.py). `corpus sql`
    shows them as column comments (information_schema.columns, duckdb_columns()), and every
    Delta table carries them as its columns' comments for other Delta readers.

    Example: corpus describe scores --format json
    """
    from catalog.schemas import TABLES, spec

    if table is None:
        specs = list(TABLES.values())
        if fmt == "json":
            click.echo(json.dumps([{"table": s.name, "description": s.description,
                                    "keys": list(s.keys)} for s in specs], indent=2))
            return
        from rich.markup import escape
        from rich.table import Table

        t = Table(title="catalog tables")
        for col in ("table", "keys", "description"):
            t.add_column(col)
        for s in specs:
            t.add_row(s.name, ", ".join(s.keys), escape(s.description))
        console.print(t)
        console.print("`corpus describe TABLE` for its columns; in `corpus sql` also the views "
                      "current_scores, current_texts and corpus_commits", style="dim")
        return
    s = spec(table)
    if fmt == "json":
        click.echo(json.dumps({"table": s.name, "description": s.description,
                               "keys": list(s.keys),
                               "columns": [c.__dict__ for c in s.columns]}, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{s.name}: {s.description}"))
    for col in ("column", "type", "null", "key", "description"):
        t.add_column(col)
    for c in s.columns:  # types and descriptions hold brackets: not rich markup
        t.add_row(c.name, escape(c.type), "yes" if c.nullable else "no",
                  "key" if c.key else "", escape(c.description))
    console.print(t)


@command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def tables(ctx: click.Context, fmt: str) -> None:
    """List tables with version, rows, data files and bytes.

    Example: corpus tables --format json
    """
    lh = lakehouse(ctx)
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


@command()
@click.argument("table")
@click.option("--limit", type=AT_LEAST_1, default=None, help="Only the newest N commits.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def history(ctx: click.Context, table: str, limit: int | None, fmt: str) -> None:
    """Show the commits of TABLE with their operation, inputs and code version.

    Example: corpus history texts --limit 5
    """
    from datetime import UTC, datetime

    commits = lakehouse(ctx).history(table, limit)
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


@command()
@click.argument("ref", metavar="TABLE[@VERSION|@TIMESTAMP]")
@click.option("--format", "fmt", type=click.Choice(["tree", "json"]), default="tree",
              show_default=True, help="Output format.")
@click.pass_context
def lineage(ctx: click.Context, ref: str, fmt: str) -> None:
    """Walk what TABLE (at a version) was derived from, transitively.

    Example: corpus lineage shards@3
    """
    name, version = parse_table_ref(ref)
    root = lakehouse(ctx).lineage(name, version)
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


@command()
@click.argument("table")
@click.pass_context
def optimize(ctx: click.Context, table: str) -> None:
    """Compact TABLE's small files (a new version with the same data).

    Example: corpus optimize ocr_pages
    """
    m = lakehouse(ctx).optimize(table)
    console.print(f"{table}: {m.get('numFilesRemoved', 0)} files compacted into "
                  f"{m.get('numFilesAdded', 0)}")


@command()
@click.argument("table")
@click.option("--retention-hours", type=AT_LEAST_0, default=168, show_default=True,
              help="Keep files that versions of the last N hours still read (time travel).")
@click.option("--apply", is_flag=True, help="Delete the files (default: list them only).")
@click.pass_context
def vacuum(ctx: click.Context, table: str, retention_hours: int, apply: bool) -> None:
    """Remove data files no longer referenced by versions inside the retention window, and
    files no commit references (a job that stopped before its commit) once older than it;
    for `shards`, also shard files no version of the manifest references.

    Example: corpus vacuum texts --retention-hours 24 --apply
    """
    lh = lakehouse(ctx)
    files = []
    if table != "shards" or lh.exists(table):  # a first build that stopped left no table
        files = lh.vacuum(table, retention_hours=retention_hours, dry_run=not apply)
    if table == "shards":
        from train.shards import orphan_shard_files

        orphans = orphan_shard_files(lh, retention_hours=retention_hours)
        if apply:
            for key in orphans:
                lh.store.delete(key)
        files = [*files, *(lh.store.uri(k) for k in orphans)]
    verb = "deleted" if apply else "would delete (pass --apply)"
    console.print(f"{table}: {verb} {len(files)} file(s)")
    for f in files:
        console.print(f"  {f}", style="dim")


COMMANDS = [init, tables, describe, history, lineage, optimize, vacuum]
