"""The noise stage: align a raw text with its edited text, mine OCR artifacts, write noisy
variants and evaluate them against real OCR."""

from __future__ import annotations

import json

import click

from catalog import CorpusError
from catalog.rules import OCR, parse_text_ref
from corpus.commands.common import (
    AT_LEAST_0,
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    WORKERS,
    OutFile,
    books_option,
    command,
    console,
    err_console,
    executor_options,
    group,
    lakehouse,
    stage_workers,
)


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
    book, variant = parse_text_ref(ref)
    if ":" not in ref or not book or not ref.partition(":")[2]:
        raise CorpusError(f"{ref!r} is neither a file nor a book variant BOOK_ID:VARIANT "
                          "(e.g. 9781038783486:ocr).")
    import pyarrow.dataset as pads

    lh = lakehouse(ctx)
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


@command()
@click.argument("reference", metavar="REFERENCE")
@click.argument("hypothesis", metavar="HYPOTHESIS")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
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

    Example: corpus align 9781038783486:edited 9781038783486:ocr --html diff.html
    """
    from noise.align import align as align_texts
    from noise.align import normalize, to_html, top_edits

    ref_text, ref_label = _align_input(ctx, reference, texts_version)
    hyp_text, hyp_label = _align_input(ctx, hypothesis, texts_version)
    if norms:
        ref_text, hyp_text = normalize(ref_text, norms), normalize(hyp_text, norms)
    a = align_texts(ref_text, hyp_text)
    edits = top_edits(ref_text, hyp_text, a, top)
    if html_out:
        from pathlib import Path

        Path(html_out).write_text(to_html(ref_text, hyp_text, a,
                                          title=f"{ref_label} vs {hyp_label}"),
                                  encoding="utf-8")
    if fmt == "json":
        click.echo(json.dumps({"reference": ref_label, "hypothesis": hyp_label,
                               "normalize": list(norms), **a.to_dict(),
                               "top_edits": edits, "html": html_out},
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
    if edits:
        e = Table(title="most frequent edits")
        for col in ("reference", "hypothesis", "count"):
            e.add_column(col, justify="right" if col == "count" else "left")
        for row in edits:
            e.add_row(repr(row["reference"]), repr(row["hypothesis"]), str(row["count"]))
        console.print(e)
    if html_out:
        console.print(f"side-by-side diff written to {html_out}", highlight=False)


@command()
@click.option("--variant", default=OCR, show_default=True,
              help="The raw variant to mine against each book's edited text.")
@click.option("--workers", type=WORKERS, default=None,
              help="Processes aligning books in parallel (default 1; with --executor ray, "
                   "one per CPU of the cluster).")
@executor_options
@click.option("--show", type=AT_LEAST_0, default=10, show_default=True,
              help="How many of the most frequent confusions to list.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def mine(ctx: click.Context, variant: str, workers: int | None, executor: str,
         ray_address: str | None, show: int, fmt: str) -> None:
    """Align every book that has an edited and a raw variant; mine the OCR artifacts.

    Writes `alignments` (per book CER, WER, edit counts, body CER) and `artifacts` (every
    pattern with its kind, raw and edited forms, context, count, probability per opportunity
    and number of books; see noise/mine.py), replacing the rows of this variant; both
    commits record the texts version they came from.

    Example: corpus mine --variant ocr --workers 2
    """
    from noise.mine import MineConfig, run_mine

    if executor == "local" and workers is None:
        workers = 1  # alignment is memory-bound: one process unless asked
    r = run_mine(lakehouse(ctx), config=MineConfig(raw_variant=variant, workers=workers,
                                                   executor=executor, ray_address=ray_address))
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
    for book, reason in r.failed.items():
        err_console.print(f"  failed {book}: {reason}", markup=False, highlight=False)


@group(invoke_without_command=True)
@click.option("--recipe", type=click.Choice(["mined", "uniform"]), default="mined",
              show_default=True, help="mined: the patterns of `corpus mine`; uniform: a "
              "baseline of uniform random character noise at the real mean CER.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Same seed and inputs give byte-identical variants.")
@books_option("every edited book")
@click.option("--per-book", type=AT_LEAST_1, default=1, show_default=True,
              help="Variants per book (seeds SEED .. SEED+K-1).")
@click.option("--cer-scale", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Multiply every book's drawn character error level.")
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores; with --executor ray, one per CPU "
                   "of the cluster).")
@executor_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def noise(ctx: click.Context, recipe: str, seed: int, books: tuple[str, ...], per_book: int,
          cer_scale: float, workers: int | None, executor: str, ray_address: str | None,
          fmt: str) -> None:
    """Write noisy variants of edited books (texts variant noisy/<recipe>-v<N>/<seed>).

    The variants of the whole run are one texts commit. `corpus noise evaluate` compares
    such variants with real OCR instead.

    Example: corpus noise --recipe mined --seed 0 --books "clear-*"
    """
    if ctx.invoked_subcommand is not None:
        return
    from noise.generate import NoiseConfig, run_noise

    config = NoiseConfig(recipe=recipe, seed=seed, per_book=per_book, cer_scale=cer_scale,
                         books=books, workers=stage_workers(workers, executor),
                         executor=executor, ray_address=ray_address)
    r = run_noise(lakehouse(ctx), config=config)
    if fmt == "json":
        click.echo(json.dumps(r.__dict__, indent=2, default=str))
        return
    console.print(f"{r.rows} variant(s) of {r.books} book(s) in {r.seconds:.1f} s "
                  f"({r.chars_in:,} characters in, {r.chars_out:,} out): "
                  + ", ".join(r.variants))
    for key, reason in r.failed.items():
        err_console.print(f"  failed {key}: {reason}", markup=False, highlight=False)


@noise.command("evaluate")
@click.option("--holdout", type=FRACTION, default=0.3, show_default=True,
              help="Share of the scanned books held out from mining.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Seed of the held-out split and of the noise.")
@click.option("--cer-scale", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Multiply every book's drawn character error level.")
@click.option("--workers", type=WORKERS, default=None,
              help="Worker processes (default: all cores).")
@click.option("--nlpaug-python", default=None, metavar="PATH",
              help="A Python with nlpaug for its OCR baseline (default: this one, if nlpaug "
              "imports).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def noise_evaluate(ctx: click.Context, holdout: float, seed: int, cer_scale: float,
                   workers: int | None, nlpaug_python: str | None, fmt: str) -> None:
    """Compare synthetic variants (mined, uniform, nlpaug) with real OCR on held-out books.

    Example: corpus noise evaluate --holdout 0.3 --format json
    """
    from catalog.workers import default_workers
    from noise.evaluate import NoiseEvalConfig, format_report, run_evaluate

    econf = NoiseEvalConfig(holdout=holdout, seed=seed, cer_scale=cer_scale,
                            workers=default_workers(workers), nlpaug_python=nlpaug_python)
    result = run_evaluate(lakehouse(ctx), config=econf)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(format_report(result), markup=False, highlight=False)


COMMANDS = [align, mine, noise]
