"""`corpus sql`: DuckDB SQL over every catalog table, read-only, pinned to versions."""

from __future__ import annotations

import sys

import click

from corpus.commands.common import (
    AT_LEAST_0,
    OutFile,
    command,
    err_console,
    lakehouse,
)


@command()
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
    corpus_commits lists every commit with its lineage. SHOW TABLES, DESCRIBE TABLE and
    information_schema.columns (each column's meaning in COLUMN_COMMENT) list the catalog.

    Example: corpus sql "SELECT * FROM current_scores LIMIT 5"
    """
    from sql import SqlSession, parse_as_of
    from sql.output import write_csv, write_result

    if query == "-":
        query = sys.stdin.read()
    with SqlSession(lakehouse(ctx), as_of=parse_as_of(list(as_of)),
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


COMMANDS = [sql]
