"""Token shards: build a versioned dataset, list datasets, show a manifest, export one."""

from __future__ import annotations

from pathlib import Path

import click

from catalog.rules import DEFAULT_SEQ_LEN, EDITED
from corpus.commands.common import (
    AT_LEAST_0,
    AT_LEAST_1,
    POSITIVE,
    WORKERS,
    books_option,
    console,
    err_console,
    executor_options,
    group,
    lakehouse,
    stage_workers,
    write_table,
)


@group()
def shards() -> None:
    """Token shards: build a versioned dataset, list datasets, show a manifest, export.

    Example: corpus shards list
    """


def hold_out_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--hold-out`` values as patterns: comma-separated items, ``@FILE`` read one per line
    (blank lines and ``#`` comments skipped)."""
    from catalog import ConfigError

    out: list[str] = []
    for item in (p.strip() for v in values for p in v.split(",")):
        if item.startswith("@"):
            path = Path(item[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"--hold-out {item}: cannot read {path} ({e.strerror}); "
                                  "give a text file with one book id or pattern per line."
                                  ) from None
            out += [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]
        elif item:
            out.append(item)
    return tuple(out)


@shards.command("build")
@click.option("--name", "dataset", required=True, help="Dataset name (a rebuild = new version).")
@click.option("--tokenizer", required=True, metavar="NAME_OR_PATH",
              help="Tokenizer alias (e.g. all-minilm-l6-v2) or local folder.")
@click.option("--seq-len", type=click.IntRange(min=8), default=DEFAULT_SEQ_LEN, show_default=True,
              help="Max tokens per sample, special tokens included.")
@click.option("--window", type=click.Choice(["first", "chunks", "overlap"]), default="first",
              show_default=True, help="First window, consecutive chunks, or overlapping.")
@click.option("--stride", type=AT_LEAST_1, default=None, help="Window step for --window overlap.")
@click.option("--target", default="bt_easiness", show_default=True, help="Score metric.")
@click.option("--variants", default=EDITED, show_default=True,
              help="Comma-separated text variants; globs allowed (edited,ocr,noisy/*).")
@click.option("--val-frac", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fraction of books held out for validation.")
@click.option("--seed", type=AT_LEAST_0, default=0, show_default=True,
              help="Seed of the book split.")
@books_option("every book with the target score")
@click.option("--split-by", type=click.Choice(["book", "work"]), default="book",
              show_default=True, help="work: books with the same author and title (passages "
              "of one source volume) share a split.")
@click.option("--hold-out", "hold_out", multiple=True, metavar="ID|PATTERN|@FILE",
              callback=lambda _c, _p, v: hold_out_patterns(v),
              help="Books always held out for validation (their works too with --split-by "
              "work): ids or shell patterns, repeatable or comma-separated, or @FILE with one "
              "per line; --val-frac of the other books are held out besides.")
@click.option("--workers", type=WORKERS, default=None,
              help="Tokenizer processes (default: cores; with --executor ray, one per CPU of "
                   "the cluster).")
@executor_options
@click.option("--shard-mb", type=POSITIVE, default=32.0, show_default=True,
              help="Target shard size (MiB, before compression).")
@click.option("--shard-samples", type=AT_LEAST_1, default=None, help="Cap on samples per shard.")
@click.pass_context
def shards_build(ctx: click.Context, dataset: str, tokenizer: str, seq_len: int, window: str,
                 stride: int | None, target: str, variants: str, val_frac: float, seed: int,
                 books: tuple[str, ...], split_by: str, hold_out: tuple[str, ...],
                 workers: int | None, executor: str,
                 ray_address: str | None, shard_mb: float, shard_samples: int | None) -> None:
    """Tokenise pinned texts into shard files and a new `shards` table version.

    Each worker tokenises groups of texts and writes their shard files itself; the manifest
    is one commit.

    Example: corpus shards build --name clear --tokenizer all-minilm-l6-v2 --seq-len 256
    --window chunks --variants edited,ocr,noisy/*
    """
    from train.shards import ShardsConfig, build_shards

    config = ShardsConfig(
        dataset=dataset, tokenizer=tokenizer, seq_len=seq_len, window=window, stride=stride,
        target=target, variants=tuple(variants.split(",")), val_frac=val_frac, seed=seed,
        split_by=split_by, books=books, hold_out=hold_out,
        workers=stage_workers(workers, executor), executor=executor, ray_address=ray_address,
        shard_mb=shard_mb, shard_samples=shard_samples,
    )
    r = build_shards(lakehouse(ctx), config=config)
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
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def shards_list(ctx: click.Context, version: int | None, fmt: str) -> None:
    """Datasets in the shards table (at a version), with samples and tokens per split.

    Example: corpus shards list --format json
    """
    from train.shards import manifest_summary

    t = lakehouse(ctx).read("shards", version=version)
    write_table(manifest_summary(t), fmt=fmt)


@shards.command("show")
@click.argument("ref", metavar="DATASET[@VERSION]")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def shards_show(ctx: click.Context, ref: str, fmt: str) -> None:
    """The manifest of DATASET at a shards table version: one row per shard file.

    Example: corpus shards show clear@3
    """

    from train.shards import read_manifest

    name, at, version = ref.partition("@")[0], "@" in ref, ref.partition("@")[2]
    if at and not version.isdigit():
        from catalog import ConfigError

        raise ConfigError(f"{ref!r}: expected DATASET or DATASET@VERSION (an integer).")
    rows, resolved = read_manifest(lakehouse(ctx), name,
                                   version=int(version) if at else None)
    cols = ["split", "shard_index", "n_samples", "n_tokens", "n_books", "size_bytes", "sha256",
            "shard_uri"]
    rows = rows.select(cols)
    if fmt == "table":
        err_console.print(f"{name} at shards@{resolved}")
    write_table(rows, fmt=fmt)


@shards.command("export")
@click.argument("ref", metavar="DATASET[@VERSION]")
@click.option("--to", "dest", required=True, metavar="DIR",
              type=click.Path(file_okay=False, writable=True),
              help="Folder to write <split>.parquet and README.md into (new or empty).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty folder (files of the same name are replaced).")
@click.pass_context
def shards_export(ctx: click.Context, ref: str, dest: str, force: bool) -> None:
    """Export DATASET (at a shards table version, default the latest) as plain Parquet, one
    file per split (sample_id, book_id, variant, window, input_ids, label), with a dataset
    card (README.md: tokenizer, window, metric, splits, sources, license).

    Example: corpus shards export clear@7 --to exports/clear
    """
    from train.dataset import ShardDataset, export_dataset

    ds = ShardDataset.from_ref(lakehouse(ctx), ref)
    r = export_dataset(ds, dest, force=force)
    console.print(f"{ds.ref} -> {r.folder}", highlight=False)
    for split, st in r.stats.items():
        console.print(f"  {r.files[split].name}: {st.samples:,} samples, {st.tokens:,} "
                      f"tokens, {st.books:,} books", highlight=False)
    console.print(f"  {r.folder / 'README.md'}: the dataset card", highlight=False)


COMMANDS = [shards]
