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
    """Create every catalog table (empty) that does not exist yet."""
    lh = lakehouse(ctx)
    created = lh.init()
    console.print(f"lakehouse at {lh.root}: created {len(created)} table(s)"
                  + (f": {', '.join(created)}" if created else ""))


@command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def tables(ctx: click.Context, fmt: str) -> None:
    """List tables with version, rows, data files and bytes."""
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
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, table: str, limit: int | None, fmt: str) -> None:
    """Show the commits of TABLE with their operation, inputs and code version."""
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
@click.option("--format", "fmt", type=click.Choice(["tree", "json"]), default="tree")
@click.pass_context
def lineage(ctx: click.Context, ref: str, fmt: str) -> None:
    """Walk what TABLE (at a version) was derived from, transitively."""
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
    """Compact TABLE's small files (a new version with the same data)."""
    m = lakehouse(ctx).optimize(table)
    console.print(f"{table}: {m.get('numFilesRemoved', 0)} files compacted into "
                  f"{m.get('numFilesAdded', 0)}")


@command()
@click.argument("table")
@click.option("--retention-hours", type=AT_LEAST_0, default=168, show_default=True)
@click.option("--apply", is_flag=True, help="Delete the files (default: list them only).")
@click.pass_context
def vacuum(ctx: click.Context, table: str, retention_hours: int, apply: bool) -> None:
    """Remove data files no longer referenced by versions inside the retention window, and
    files no commit references (a job that stopped before its commit) once older than it;
    for `shards`, also shard files no version of the manifest references.

    \b
    Example: corpus vacuum texts --retention-hours 0 --apply
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


COMMANDS = [init, tables, history, lineage, optimize, vacuum]
