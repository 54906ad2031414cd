"""A pinned shard dataset for other tools: Arrow, pandas, Hugging Face ``datasets``, torch,
and a plain Parquet export with a dataset card.

:class:`ShardDataset` is one dataset (``corpus shards build --name``) at one ``shards`` table
version, read through :func:`train.shards.read_manifest`: later rebuilds never change what it
reads (shard files are content-addressed). It hands the samples over as

* an Arrow table (:meth:`ShardDataset.to_arrow`) or a pandas DataFrame
  (:meth:`ShardDataset.to_pandas`): one row per sample, in manifest order;
* a Hugging Face ``datasets.Dataset`` (:meth:`ShardDataset.to_hf`), built by
  ``Dataset.from_parquet`` over the shard files themselves (memory-mapped Arrow cache, so a
  split larger than memory works), in the same order;
* a torch ``IterableDataset`` (:meth:`ShardDataset.torch`): the trainer's own
  :class:`train.data.ShardStream`, so for a given seed, epoch, rank and world size it yields
  the samples the trainer sees, in its order, and resumes from a trainer checkpoint's loader
  state (``state=``).

Columns (the Arrow table, the DataFrame, the HF Dataset and an export's Parquet files):

=============  ==============  ==========================================================
column         type            meaning
=============  ==============  ==========================================================
sample_id      string          ``<book_id>|<variant>|<window>``: unique and stable
book_id        string          the book (all variants of a book are in one split)
variant        string          the text it was cut from: ``edited``, ``ocr``,
                               ``corrected``, ``noisy/<recipe>-v<N>/<seed>`` ...
window         int32           window number within the (book, variant) text
input_ids      list<int32>     token ids, special tokens included, at most ``seq_len``
label          float64         the book's current value of the dataset's metric
=============  ==============  ==========================================================

The torch stream's samples name the label ``target`` (see :mod:`train.data`); its value is
the same.

:func:`export_dataset` writes the dataset as ``<split>.parquet`` files (one per split, the
columns above, readable by any Parquet reader) and a ``README.md`` dataset card
(:func:`dataset_card`) into an empty folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog import ConfigError, Lakehouse, LakehouseConfig
from catalog.rules import CLEAR_ID_PREFIX, CLEAR_LICENSE, metric_direction
from train.shards import LABEL, SHARD_SCHEMA, SPLITS, label_column, read_manifest

if TYPE_CHECKING:
    import datasets
    import pandas as pd

    from train.data import ShardStream

CARD = "README.md"
WINDOW_TEXT = {
    "first": "the first window of each text",
    "chunks": "consecutive windows covering each text (the last one shorter)",
    "overlap": "overlapping windows every {stride} tokens, the last one ending at the "
               "text's end",
}
# the card's column table: (type, meaning); a "|" inside a cell is escaped for Markdown
COLUMN_DOCS = {
    "sample_id": ("string", "`<book_id>\\|<variant>\\|<window>`, unique and stable"),
    "book_id": ("string", "the book; every variant of a book is in the same split"),
    "variant": ("string", "the text the window was cut from: `edited`, `ocr`, `corrected`, "
                "`noisy/<recipe>-v<N>/<seed>`"),
    "window": ("int32", "window number within the (book, variant) text"),
    "input_ids": ("list<int32>", "token ids, special tokens included, at most seq_len of "
                  "them"),
    "label": ("float64", "the book's current value of the metric"),
}


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """``DATASET`` or ``DATASET@VERSION`` (an integer ``shards`` table version).

    Raises:
        ConfigError: the version is not an integer.
    """
    name, at, version = ref.partition("@")
    if not name or (at and not version.strip().isdigit()):
        raise ConfigError(f"{ref!r}: expected DATASET or DATASET@VERSION (an integer shards "
                          "table version).")
    return name, int(version) if at else None


@dataclass(frozen=True)
class SplitStats:
    """Size of one split: books, samples (windows) and tokens."""

    books: int
    samples: int
    tokens: int


class ShardDataset:
    """One shard dataset pinned at a ``shards`` table version (see the module docs).

    Args:
        lakehouse: The lakehouse (or its root / config) holding the ``shards`` table.
        dataset: Dataset name.
        version: ``shards`` table version; None pins the latest (see :attr:`version`).
        cache_dir: Where shard files of an ``s3://`` root are fetched to (default: the
            stream's cache in the temp folder); local roots read the files in place.

    Raises:
        ConfigError: the dataset has no shards at that version.
    """

    def __init__(self, lakehouse: Lakehouse | LakehouseConfig | str, dataset: str, *,
                 version: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(lakehouse, Lakehouse):
            lakehouse = Lakehouse(lakehouse)
        self.lakehouse = lakehouse
        self.dataset = dataset
        self.manifest, self.version = read_manifest(lakehouse, dataset, version=version)
        self.cache_dir = cache_dir
        first = self.manifest.slice(0, 1).to_pylist()[0]
        self.tokenizer: str = first["tokenizer"]
        self.seq_len: int = int(first["seq_len"])
        self.window: str = first["window"]
        self.stride: int | None = first["stride"]
        self.metric: str = first["target"]
        self.pad_id: int = int(first["pad_id"] or 0)
        self.texts_version: int | None = first["texts_version"]
        self.scores_version: int | None = first["scores_version"]
        self.build_id: str | None = first["build_id"]
        self.created_at = first["created_at"]

    @classmethod
    def from_ref(cls, lakehouse: Lakehouse | LakehouseConfig | str, ref: str,
                 **kw: Any) -> ShardDataset:
        """The dataset ``DATASET[@VERSION]`` (see :func:`parse_dataset_ref`)."""
        name, version = parse_dataset_ref(ref)
        return cls(lakehouse, name, version=version, **kw)

    def __repr__(self) -> str:
        return f"ShardDataset({self.dataset!r}, version={self.version})"

    @property
    def ref(self) -> str:
        """``DATASET@VERSION``: what to pin elsewhere (``corpus train --shards``)."""
        return f"{self.dataset}@{self.version}"

    @property
    def splits(self) -> list[str]:
        """The splits this dataset has, ``train`` first."""
        have = set(self.manifest.column("split").to_pylist())
        return [s for s in SPLITS if s in have]

    def variants(self) -> list[str]:
        """The text variants in the dataset (all splits), sorted."""
        return sorted({v for vs in self.manifest.column("variants").to_pylist() for v in vs})

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ConfigError(f"dataset {self.ref} has no {split!r} split; it has "
                              f"{', '.join(self.splits)}.")

    def _stream(self, split: str, **kw: Any) -> ShardStream:
        from train.data import ShardStream

        self._check_split(split)
        return ShardStream(self.lakehouse, self.dataset, version=self.version, split=split,
                           cache_dir=self.cache_dir, **kw)

    def files(self, split: str = "train") -> list[Path]:
        """Local paths of ``split``'s shard files, in manifest order (fetched from an
        ``s3://`` root and checked against their sha256)."""
        return self._stream(split, rank=0, world_size=1, shuffle=False).shard_files()

    # ---- tables --------------------------------------------------------------------------
    def batches(self, split: str = "train") -> Iterator[pa.Table]:
        """``split`` one shard file at a time, in manifest order, as tables of the module's
        columns (a shard written before the label rename has its column renamed)."""
        for path in self.files(split):
            t = pq.read_table(path)
            label = label_column(t.column_names)
            if label != LABEL:
                t = t.rename_columns([LABEL if c == label else c for c in t.column_names])
            yield t.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)

    def to_arrow(self, split: str = "train") -> pa.Table:
        """Every sample of ``split`` as one Arrow table (manifest order)."""
        return pa.concat_tables(list(self.batches(split)))

    def to_pandas(self, split: str = "train") -> pd.DataFrame:
        """Every sample of ``split`` as a pandas DataFrame (``input_ids`` as int32 arrays)."""
        return self.to_arrow(split).to_pandas()

    def to_hf(self, split: str = "train", *, cache_dir: str | os.PathLike[str] | None = None,
              keep_in_memory: bool = False) -> datasets.Dataset:
        """``split`` as a Hugging Face ``datasets.Dataset`` in manifest order.

        Built with ``Dataset.from_parquet`` over the shard files: the rows are converted
        once into an Arrow cache under ``cache_dir`` (default: the ``datasets`` cache) and
        memory-mapped from there, unless ``keep_in_memory``.
        """
        import datasets

        files = [str(p) for p in self.files(split)]
        ds = datasets.Dataset.from_parquet(files, split=split, keep_in_memory=keep_in_memory,
                                           cache_dir=None if cache_dir is None
                                           else str(cache_dir))
        label = label_column(ds.column_names)
        if label != LABEL:
            ds = ds.rename_column(label, LABEL)
        return ds.select_columns(SHARD_SCHEMA.names)

    # ---- torch ---------------------------------------------------------------------------
    def torch(self, split: str = "train", *, rank: int = 0, world_size: int = 1, seed: int = 0,
              epoch: int = 0, shuffle: bool = True, block_shards: int = 8,
              drop_last: bool = True, skip: Iterable[str] = (),
              state: dict[str, Any] | None = None) -> ShardStream:
        """``split`` as a torch ``IterableDataset``: the trainer's stream.

        The defaults are the trainer's (:class:`train.recipe.TrainConfig`: ``block_shards``
        8, ``drop_last`` for the training split), so with the run's seed, this rank and world
        size it yields the samples of each epoch that rank trains on, in order. ``state`` (a
        checkpoint's loader state, :meth:`ShardStream.state_dict`) continues at the next
        unseen sample, with any world size. Iterate it directly, through its ``loader()`` or a
        ``DataLoader(num_workers=0)`` (see :mod:`train.data`).

        Raises:
            ConfigError: a bad rank or world size, or a state of another dataset, version,
                split or order.
        """
        stream = self._stream(split, rank=rank, world_size=world_size, seed=seed,
                              epoch=epoch, shuffle=shuffle, block_shards=block_shards,
                              drop_last=drop_last, skip=skip)
        if state is not None:
            stream.load_state_dict(state)
        return stream


# ---- export ---------------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What :func:`export_dataset` wrote."""

    dataset: str
    version: int
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)        # split -> Parquet file
    stats: dict[str, SplitStats] = field(default_factory=dict)  # split -> size
    clear_books: int = 0                                        # books from CLEAR


def _folder_for_export(dest: Path, *, force: bool) -> None:
    """Refuse a non-empty folder (unless ``force``) or a path that is a file."""
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder.")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ConfigError(f"{dest} is not empty; export into a new or empty folder, or give "
                          "--force to write over what is there.")
    dest.mkdir(parents=True, exist_ok=True)


def export_dataset(ds: ShardDataset, dest: str | os.PathLike[str], *,
                   force: bool = False) -> ExportReport:
    """Write ``ds`` as ``<split>.parquet`` (one file per split, the module's columns, in
    manifest order) and a ``README.md`` dataset card into the folder ``dest``.

    Shard files are copied one at a time (memory stays at one shard) into a temporary file
    beside the target, renamed into place when complete.

    Args:
        ds: The pinned dataset.
        dest: A folder that does not exist or is empty.
        force: Write into a non-empty folder: this export's files replace those of the same
            name, and a split file this dataset lacks (from an earlier export) is removed so
            that the folder holds one dataset; other files are left alone.

    Raises:
        ConfigError: ``dest`` is not empty (and not ``force``), or is a file.
    """
    folder = Path(dest)
    _folder_for_export(folder, force=force)
    report = ExportReport(dataset=ds.dataset, version=ds.version, folder=folder)
    clear: set[str] = set()
    for split in ds.splits:
        target = folder / f"{split}.parquet"
        fd, tmp = tempfile.mkstemp(prefix=f".{split}-", suffix=".parquet", dir=folder)
        os.close(fd)
        books: set[str] = set()
        samples = tokens = 0
        try:
            with pq.ParquetWriter(tmp, SHARD_SCHEMA, compression="zstd") as writer:
                for t in ds.batches(split):
                    writer.write_table(t, row_group_size=1024)
                    books.update(pc.unique(t.column("book_id")).to_pylist())
                    samples += t.num_rows
                    tokens += int(pc.sum(pc.list_value_length(t.column("input_ids"))).as_py()
                                  or 0)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        report.files[split] = target
        report.stats[split] = SplitStats(books=len(books), samples=samples, tokens=tokens)
        clear.update(b for b in books if b.startswith(CLEAR_ID_PREFIX))
    for split in SPLITS:
        if split not in report.files:
            (folder / f"{split}.parquet").unlink(missing_ok=True)
    report.clear_books = len(clear)
    (folder / CARD).write_text(dataset_card(ds, report), encoding="utf-8")
    return report


def dataset_card(ds: ShardDataset, report: ExportReport) -> str:
    """The ``README.md`` of an export: YAML front matter (license, the split files, so that
    ``datasets.load_dataset(folder)`` finds them) and what the data is, where it came from,
    its size per split, its columns and its license."""
    direction = metric_direction(ds.metric)
    metric = f"`{ds.metric}` ({direction})" if direction else f"`{ds.metric}` (direction " \
        "not recorded: see where the scores came from)"
    window = WINDOW_TEXT.get(ds.window, ds.window).format(stride=ds.stride)
    total_books = sum(s.books for s in report.stats.values())
    only_clear = report.clear_books and report.clear_books == total_books
    lines = ["---", f"license: {'cc-by-nc-sa-4.0' if only_clear else 'other'}",
             f"pretty_name: {ds.dataset}", "configs:", "- config_name: default",
             "  data_files:"]
    for split, path in report.files.items():
        lines += [f"  - split: {split}", f"    path: {path.name}"]
    lines += [
        "---", "", f"# {ds.dataset} (shards@{ds.version})", "",
        "Token windows of book texts, each labelled with its book's reading level, exported "
        "by `corpus shards export` from a Corpus lakehouse.", "",
        "| | |", "|---|---|",
        f"| dataset | `{ds.dataset}`, version `shards@{ds.version}` (build `{ds.build_id}`, "
        f"{ds.created_at:%Y-%m-%d %H:%M} UTC) |",
        f"| tokenizer | `{ds.tokenizer}` (pad id {ds.pad_id}) |",
        f"| seq_len | {ds.seq_len} tokens per sample at most, special tokens included |",
        f"| window | `{ds.window}`: {window} |",
        f"| metric | {metric} |",
        f"| variants | {', '.join(f'`{v}`' for v in ds.variants())} |",
        f"| built from | `texts@{ds.texts_version}`, `scores@{ds.scores_version}` |",
        "", "## Splits", "",
        "| split | file | books | samples | tokens |", "|---|---|---:|---:|---:|",
    ]
    for split, s in report.stats.items():
        lines.append(f"| {split} | `{report.files[split].name}` | {s.books:,} | "
                     f"{s.samples:,} | {s.tokens:,} |")
    lines += [
        "", "Splits are by book: every variant of a validation book is in validation, none in "
        "train. Rows are in the order of the shards (by book, variant, window); the trainer "
        "shuffles them.", "",
        "## Columns", "", "| column | type | meaning |", "|---|---|---|",
    ]
    for name in SHARD_SCHEMA.names:
        kind, meaning = COLUMN_DOCS[name]
        if name == LABEL:
            meaning += f" (`{ds.metric}`)"
        lines.append(f"| `{name}` | {kind} | {meaning} |")
    lines += [
        "", "## Reading it", "", "```python",
        "import pyarrow.parquet as pq",
        f'train = pq.read_table("{report.files[ds.splits[0]].name}")',
        "", "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_files={'
        + ", ".join(f'"{s}": "{p.name}"' for s, p in report.files.items()) + "})",
        "```", "", "## License", "",
    ]
    if report.clear_books:
        lines.append(
            f"{report.clear_books:,} of the {total_books:,} books (ids `{CLEAR_ID_PREFIX}*`) "
            "are excerpts of the CommonLit Ease of Readability (CLEAR) corpus (Crossley et al., "
            f"Behavior Research Methods 2022), licensed {CLEAR_LICENSE} (Attribution-"
            "NonCommercial-ShareAlike): their rows may not be used commercially and whatever "
            "is shared from them must carry the same license.")
    if not only_clear:
        if report.clear_books:
            lines.append("")
        lines.append("The other books are the publisher's texts: their rights are the "
                     "publisher's. Check them before sharing this export.")
    return "\n".join(lines) + "\n"
