"""The ingest stage: import labelled passages, migrate a share, OCR its scans."""

from __future__ import annotations

import click

from corpus.commands.common import (
    AT_LEAST_0,
    WORKERS,
    command,
    console,
    err_console,
    executor_options,
    lakehouse,
    stage_workers,
)


@command("import")
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
    """Import labelled passages (CSV/TSV/Parquet) as books, edited texts and scores.

    Example: corpus import clear.csv --id ID --text Excerpt --score bt_easiness=BT_easiness
    """
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
    result = run_import(lakehouse(ctx), file, config=config)
    console.print(f"imported {result.books.num_rows} passages and {result.scores.num_rows} "
                  f"scores from {file}; {len(result.rejected)} row(s) rejected")
    for r in result.rejected:
        err_console.print(f"  rejected {file} row {r.row} (id {r.passage_id}): {r.reason}",
                          highlight=False, markup=False)


@command()
@click.argument("share", type=click.Path(file_okay=False))
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores; with --executor ray, one per CPU "
                   "of the cluster).")
@executor_options
@click.option("--dry-run", is_flag=True, help="Inspect and report; store and write nothing.")
@click.option("--full", is_flag=True,
              help="Read and hash every file again, even those unchanged (path, size, mtime) "
                   "since the last ingest.")
@click.option("--show", type=AT_LEAST_0, default=20, show_default=True,
              help="How many quarantined files and rejected score rows to list.")
@click.pass_context
def ingest(ctx: click.Context, share: str, workers: int | None, executor: str,
           ray_address: str | None, dry_run: bool, full: bool, show: int) -> None:
    """Migrate an editorial SHARE into the lakehouse: every file accounted for.

    With --executor ray, every node of the cluster must see SHARE at the same path (a shared
    file system); the file records stream back and this process commits.

    Example: corpus ingest /mnt/share --workers 8
    """
    from ingest.driver import run_ingest

    r = run_ingest(lakehouse(ctx), share, workers=workers, dry_run=dry_run, full=full,
                   executor=executor, ray_address=ray_address)
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


@command()
@click.option("--scan", "scan_ids", multiple=True, metavar="ID",
              help="Only these scans (repeatable; also retries a failed scan).")
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores).")
@click.option("--lang", default="eng", show_default=True, help="Tesseract language(s).")
@click.option("--page-foot/--no-page-foot", default=True, show_default=True,
              help="Read each page's bottom strip again for a page number that layout "
                   "analysis dropped (~20% more Tesseract time).")
@executor_options
@click.pass_context
def ocr(ctx: click.Context, scan_ids: tuple[str, ...], workers: int | None, lang: str,
        page_foot: bool, executor: str, ray_address: str | None) -> None:
    """OCR every registered scan not yet done (resumable: reruns do only what is missing).

    Example: corpus ocr --workers 4 --lang eng
    """
    from ingest.ocr import OcrConfig, run_ocr

    config = OcrConfig(lang=lang, page_foot=page_foot, workers=stage_workers(workers, executor),
                       executor=executor, ray_address=ray_address)
    r = run_ocr(lakehouse(ctx), config=config, scan_ids=scan_ids or None)
    console.print(f"{r.pages_done} page(s) recognised ({r.pages_skipped} already done) in "
                  f"{r.seconds:.1f} s; {r.scans_done} scan(s) done, "
                  f"{len(r.scans_failed or {})} failed")
    for sid, reason in (r.scans_failed or {}).items():
        err_console.print(f"  failed {sid}: {reason}", markup=False, highlight=False)


COMMANDS = [import_, ingest, ocr]
