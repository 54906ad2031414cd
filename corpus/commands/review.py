"""The editors' desk: the scan queue, flags, promotion of corrected text, the review page."""

from __future__ import annotations

import click

from corpus.commands.common import (
    PORT,
    command,
    console,
    group,
    lakehouse,
    write_table,
)


@command()
@click.option("--status", type=click.Choice(["new", "ocr_done", "flagged", "accepted", "failed"]),
              default=None, help="Only scans in this state.")
@click.option("--ready", is_flag=True,
              help="Only scans that can be scored without editing: the newest finished run's "
                   "prediction on their OCR text is stable over its windows (standard error "
                   "<= 0.10; see catalog/readiness.py), with that prediction.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def scans(ctx: click.Context, status: str | None, ready: bool, fmt: str) -> None:
    """The scans queue, in the review page's order (the share's).

    Example: corpus scans --status ocr_done --format csv
    """
    from sql import SqlSession
    from sql.output import write_result

    if ready:
        import pyarrow as pa

        from ingest.review_queue import ready_scans

        rows = [r for r in ready_scans(lakehouse(ctx)) if status is None or r["status"] == status]
        schema = pa.schema([("scan_id", pa.string()), ("book_id", pa.string()),
                            ("status", pa.string()), ("run_id", pa.string()),
                            ("target", pa.string()), ("prediction", pa.float64()),
                            ("n_windows", pa.int32()), ("std_error", pa.float64())])
        t = pa.Table.from_pylist(rows, schema=schema)
        write_table(t, fmt=fmt)
        return
    from ingest.review_queue import queue_sql

    with SqlSession(lakehouse(ctx)) as s:
        write_result(s.batches(queue_sql(status)), fmt=fmt)


@command()
@click.argument("scan_id")
@click.option("--as", "flag", required=True,
              type=click.Choice(["rescan", "wrong_book", "needs_edit", "ok"]),
              help="What is wrong: rescan (a bad scan), wrong_book, needs_edit; ok accepts it.")
@click.option("--note", default=None, help="What is wrong, for whoever fixes it.")
@click.option("--by", "editor", required=True, metavar="NAME", help="Your name.")
@click.pass_context
def flag(ctx: click.Context, scan_id: str, flag: str, note: str | None, editor: str) -> None:
    """Flag a scan (or accept it with --as ok).

    Example: corpus flag 9781234567897-scan --as rescan --note "pages 3-4 cut off" --by ann
    """
    from ingest.flags import add_flag

    flag_id = add_flag(lakehouse(ctx), scan_id, flag=flag, editor=editor, note=note)
    console.print(f"flag {flag_id}: {scan_id} {flag} by {editor}")


@command()
@click.argument("scan_id")
@click.option("--by", "editor", required=True, metavar="NAME", help="Your name.")
@click.pass_context
def promote(ctx: click.Context, scan_id: str, editor: str) -> None:
    """Make a fully corrected scan's text its book's edited text (recorded in promotions).

    Example: corpus promote 9781234567897-scan --by ann
    """
    from ingest.corrections import promote as promote_scan

    done = promote_scan(lakehouse(ctx), scan_id, editor=editor)
    console.print(f"promotion {done.promotion_id}: book {done.book_id} edited from scan "
                  f"{scan_id} ({done.n_pages} corrected pages, {done.n_chars} chars) by {editor}")


@group(invoke_without_command=True)
@click.option("--open", "open_only", is_flag=True, help="Only unresolved flags.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def flags(ctx: click.Context, open_only: bool, fmt: str) -> None:
    """List editors' flags (newest first); `corpus flags resolve ID` closes one.

    Example: corpus flags --open
    """
    if ctx.invoked_subcommand is not None:
        return

    from ingest.flags import list_flags

    t = list_flags(lakehouse(ctx), open_only=open_only)
    write_table(t, fmt=fmt)


@flags.command("resolve")
@click.argument("flag_id")
@click.option("--by", "editor", default=None, metavar="NAME", help="Who resolved it.")
@click.pass_context
def flags_resolve(ctx: click.Context, flag_id: str, editor: str | None) -> None:
    """Mark flag FLAG_ID resolved.

    Example: corpus flags resolve 3f2a9c --by bob
    """
    from ingest.flags import resolve_flag

    resolve_flag(lakehouse(ctx), flag_id, editor=editor)
    console.print(f"flag {flag_id} resolved")


@command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (keep the default unless a proxy guards the page); "
                   "requests must name it or localhost, with the port, in their Host header.")
@click.option("--port", type=PORT, default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.pass_context
def review(ctx: click.Context, host: str, port: int) -> None:
    """Serve the editors' review page: the scan queue, pages beside OCR text, flags.

    Example: corpus review --port 8765
    """
    from ingest.review import make_server

    lh = lakehouse(ctx)
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


COMMANDS = [scans, flag, promote, flags, review]
