"""Token shards: book texts tokenised once, cut into windows, written as versioned Parquet files.

``corpus shards build`` reads a pinned version of ``texts`` and ``scores``, tokenises every
selected variant of every book that has the target score (a Hugging Face fast tokenizer),
cuts windows, splits train/validation *by book* (every variant of a validation book is in
validation), writes shard files into the lakehouse's object store and one ``shards``
manifest row per shard.

The work is a pure core over Arrow data and a thin driver. The core: :func:`select_texts`
(variants, book patterns, books without the target left out), :func:`split_texts` (by book or
by work), :func:`tokenise` (windows cut into sample rows), :func:`plan_groups` (consecutive
texts of a split, about :data:`GROUP_SHARDS` shard files' worth each), :func:`shard_entry`
and :func:`manifest_rows` (the manifest rows of what was written). The driver,
:func:`build_shards`, pins and reads the inputs and maps the groups over an executor
(:mod:`catalog.executor`: a local pool or a Ray cluster): each worker loads the tokenizer
once, tokenises a group, cuts it into shard files (:class:`ShardWriter`) and writes them
into the object store itself; only their manifest entries come back. The driver numbers the
shards in text order and commits the manifest with lineage. The groups depend only on the
texts and the settings, so the files are the same whoever wrote them.

Versioning: a build replaces the dataset's manifest rows in one Delta commit, so a dataset
version is a ``shards`` table version. Shard files are content-addressed
(``shards/<dataset>/<sha[:2]>/<sha256>.parquet``) and never overwritten, so a manifest pinned
at version v keeps reading the same bytes after any later rebuild (until a vacuum removes
files, which the catalog never does on its own).

A shard file has one row per sample (window):

=============  ==============  ==========================================================
column         type            meaning
=============  ==============  ==========================================================
sample_id      string          ``<book_id>|<variant>|<window>``: unique and stable
book_id        string
variant        string          ``edited``, ``ocr``, ``corrected``,
                               ``noisy/<recipe>-v<N>/<seed>`` ...
window         int32           window number within the (book, variant) text
input_ids      list<int32>     token ids with the tokenizer's special tokens, <= seq_len
label          float64         the current value of the dataset's target metric for the
                               book (latest per book and metric)
=============  ==============  ==========================================================

The label column is called ``target`` in shard files written before it was renamed (the
manifest's ``target`` is the metric's *name*); readers find it with :func:`label_column`.

Within a split, samples are written in (book_id, variant, window) order and each manifest
row records its shard's first and last sample id, so a sample id (e.g. on a skip list) can
be located without reading other shards. A manifest row also holds counts, the shard's book
ids, the tokenizer and window settings, the pad id, the file's sha256 and size, and the
``texts``/``scores`` versions it was built from (also recorded as the commit's lineage).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog import (
    ConfigError,
    CorpusError,
    Lakehouse,
    LakehouseConfig,
    Lineage,
    SchemaError,
    sha256_file,
)
from catalog.executor import Executor, Failed, check_executor, make_executor
from catalog.rules import DEFAULT_SEQ_LEN, EDITED, current_values, match_variants

log = logging.getLogger(__name__)

WINDOWS = ("first", "chunks", "overlap")
SPLITS = ("train", "validation")
SPLIT_BY = ("book", "work")
DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SEP = "|"  # sample id separator: never in an ISBN, a passage id or a variant name
LABEL = "label"  # a shard file's float label column
FAILURES_KEPT = 20  # texts that failed, named in the commit's lineage (all are counted)
LEGACY_LABEL = "target"  # its name in shard files written before the rename

SHARD_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("book_id", pa.string(), nullable=False),
    pa.field("variant", pa.string(), nullable=False),
    pa.field("window", pa.int32(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field(LABEL, pa.float64(), nullable=False),
])
# the texts the core works on: what the driver scans from ``texts``
TEXT_SCHEMA = pa.schema([pa.field("book_id", pa.string()), pa.field("variant", pa.string()),
                         pa.field("text", pa.large_string())])


def label_column(names: Iterable[str]) -> str:
    """The name of the label column among a shard file's column ``names``: ``label``, or
    ``target`` in a file written before the rename.

    Raises:
        SchemaError: neither column is there.
    """
    names = list(names)
    for name in (LABEL, LEGACY_LABEL):
        if name in names:
            return name
    raise SchemaError(f"A shard file needs a {LABEL!r} (or, written before the rename, "
                      f"{LEGACY_LABEL!r}) column; found {names}.")


@dataclass(frozen=True)
class ShardsConfig:
    """What `corpus shards build` makes.

    Attributes:
        dataset: Dataset name (letters, digits, ``_.-``); rebuilding a name makes a new version.
        tokenizer: Tokenizer alias or local folder (see :mod:`train.backbones`).
        seq_len: Maximum tokens per sample, special tokens included.
        window: ``first`` (the first window of each text), ``chunks`` (consecutive windows
            covering the text) or ``overlap`` (windows every ``stride`` tokens).
        stride: Tokens between window starts for ``overlap`` (default half a window).
        target: Score metric attached to each sample (``scores.metric``).
        variants: Text variants to include; shell-style patterns (``noisy/*``) allowed.
        val_frac: Fraction of books (not samples) held out for validation.
        seed: Seed of the book split.
        books: Only books whose id matches one of these shell patterns (``clear-*``);
            every book when empty.
        hold_out: Books always held out for validation: ids or shell patterns (with
            ``split_by`` work, their whole works go too). ``val_frac`` of the other books
            (or works) are held out besides.
        split_by: ``book`` (each book on its own) or ``work`` (books with the same author
            and title in ``books`` share a split: passages cut from one source volume never
            straddle training and validation).
        workers: Tokenizer workers (1 = in this process; None: every core here, every CPU
            of the cluster on Ray).
        shard_mb: Target size of a shard file before compression, in MiB.
        shard_samples: Optional cap on samples per shard (small shards for tests).
        batch_texts: Texts per tokenizer batch.
        executor: ``local`` (a process pool) or ``ray`` (:mod:`catalog.executor`): each
            worker tokenises groups of texts and writes their shard files itself.
        ray_address: The Ray cluster (default ``CORPUS_RAY_ADDRESS``, else Ray on this
            machine).
    """

    dataset: str
    tokenizer: str
    seq_len: int = DEFAULT_SEQ_LEN
    window: str = "first"
    stride: int | None = None
    target: str = "bt_easiness"
    variants: tuple[str, ...] = (EDITED,)
    val_frac: float = 0.1
    seed: int = 0
    split_by: str = "book"
    books: tuple[str, ...] = ()
    hold_out: tuple[str, ...] = ()
    workers: int | None = 1
    shard_mb: float = 32.0
    shard_samples: int | None = None
    batch_texts: int = 64
    executor: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not DATASET_RE.match(self.dataset or ""):
            raise ConfigError(
                f"shards: dataset name {self.dataset!r} is not allowed. Expected 1-100 letters, "
                "digits, '_', '.' or '-', starting with a letter or digit, e.g. clear-first128."
            )
        if not str(self.tokenizer or "").strip():
            raise ConfigError("shards: --tokenizer is required (an alias or a local folder).")
        if not isinstance(self.seq_len, int) or self.seq_len < 8:
            raise ConfigError(f"shards: seq_len must be an integer >= 8, got {self.seq_len!r}.")
        if self.window not in WINDOWS:
            raise ConfigError(
                f"shards: window {self.window!r} is not one of {', '.join(WINDOWS)}."
            )
        if self.stride is not None and self.window != "overlap":
            raise ConfigError(
                f"shards: --stride only applies to --window overlap (got window {self.window!r})."
            )
        if self.window == "overlap":
            stride = self.stride if self.stride is not None else max(1, self.seq_len // 2)
            if not isinstance(stride, int) or stride < 1:
                raise ConfigError(f"shards: stride must be an integer >= 1, got {stride!r}.")
            object.__setattr__(self, "stride", stride)
        variants = (self.variants,) if isinstance(self.variants, str) else self.variants
        variants = tuple(v.strip() for v in variants if v and v.strip())
        if not variants:
            raise ConfigError("shards: no variants given; e.g. --variants edited,ocr,noisy/*")
        object.__setattr__(self, "variants", variants)
        if not str(self.target or "").strip():
            raise ConfigError("shards: --target must name a score metric, e.g. bt_easiness.")
        if not 0.0 <= float(self.val_frac) < 1.0:
            raise ConfigError(f"shards: val_frac must be in [0, 1), got {self.val_frac!r}.")
        books = (self.books,) if isinstance(self.books, str) else self.books
        object.__setattr__(self, "books", tuple(b.strip() for b in books if b and b.strip()))
        hold = (self.hold_out,) if isinstance(self.hold_out, str) else self.hold_out
        object.__setattr__(self, "hold_out", tuple(b.strip() for b in hold if b and b.strip()))
        if self.split_by not in SPLIT_BY:
            raise ConfigError(f"shards: split_by must be one of {', '.join(SPLIT_BY)}, got "
                              f"{self.split_by!r}.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"shards: workers must be >= 1, got {self.workers!r}.")
        check_executor(self.executor)
        if not self.shard_mb > 0:
            raise ConfigError(f"shards: shard_mb must be > 0, got {self.shard_mb!r}.")
        if self.shard_samples is not None and self.shard_samples < 1:
            raise ConfigError(
                f"shards: shard_samples must be >= 1 when given, got {self.shard_samples!r}."
            )
        if self.batch_texts < 1:
            raise ConfigError(f"shards: batch_texts must be >= 1, got {self.batch_texts!r}.")


# ---- pure parts ---------------------------------------------------------------------------
def book_fraction(book_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, book id): the book's place in the split."""
    digest = hashlib.sha256(f"{seed}{SEP}{book_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_validation_books(book_ids: Iterable[str], *, val_frac: float, seed: int) -> set[str]:
    """The validation books: those whose :func:`book_fraction` is below ``val_frac``.

    A book's split depends only on (seed, book id), so adding books later never moves a book
    between splits. When ``val_frac`` > 0 and at least two books exist but none fell below
    the threshold, the book with the smallest fraction goes to validation.
    """
    ids = sorted(set(book_ids))
    if val_frac <= 0 or not ids:
        return set()
    frac = {b: book_fraction(b, seed) for b in ids}
    val = {b for b in ids if frac[b] < val_frac}
    if not val and len(ids) >= 2:
        val = {min(ids, key=frac.__getitem__)}
    if len(val) == len(ids) and len(ids) >= 2:  # keep at least one training book
        val.discard(max(val, key=frac.__getitem__))
    return val


def work_key(author: str | None, title: str | None, book_id: str) -> str:
    """The source volume a book belongs to: author and title, case and spacing folded; the
    book alone when both are missing."""
    a = " ".join((author or "").split()).casefold()
    t = " ".join((title or "").split()).casefold()
    return f"work{SEP}{a}{SEP}{t}" if a or t else book_id


def split_by_work(works: dict[str, str], *, val_frac: float, seed: int) -> set[str]:
    """The validation books when whole works are split (see :func:`pick_validation_books`):
    ``works`` maps each book id to its :func:`work_key`."""
    val_works = pick_validation_books(works.values(), val_frac=val_frac, seed=seed)
    return {b for b, w in works.items() if w in val_works}


def window_starts(n: int, *, body: int, window: str, stride: int | None) -> list[int]:
    """Start offsets of the windows of a text of ``n`` tokens (``body`` tokens each).

    ``first``: one window. ``chunks``: consecutive windows, the last one shorter.
    ``overlap``: every ``stride`` tokens, plus a last window ending at the text's end.
    """
    if n <= 0:
        return []
    if window == "first":
        return [0]
    if window == "chunks":
        return list(range(0, n, body))
    if window == "overlap":
        assert stride is not None
        if n <= body:
            return [0]
        starts = list(range(0, n - body + 1, stride))
        if starts[-1] + body < n:
            starts.append(n - body)
        return starts
    raise ConfigError(f"unknown window {window!r}")


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text (``[CLS]``/``[SEP]``, BOS ...)."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare):])
    raise ConfigError("Cannot tell which special tokens the tokenizer adds around a text.")


def cut_windows(
    ids: np.ndarray,
    *,
    seq_len: int,
    window: str,
    stride: int | None,
    prefix: Sequence[int] = (),
    suffix: Sequence[int] = (),
) -> list[np.ndarray]:
    """Cut one text's token ids into windows of at most ``seq_len`` tokens (specials included).

    Args:
        ids: The text's token ids without special tokens.
        seq_len: Maximum length of a window including ``prefix`` and ``suffix``.
        window: ``first``, ``chunks`` or ``overlap``.
        stride: Start-to-start distance for ``overlap``.
        prefix: Ids put before every window (e.g. ``[CLS]``).
        suffix: Ids put after every window (e.g. ``[SEP]``).
    """
    body = seq_len - len(prefix) - len(suffix)
    if body < 1:
        raise ConfigError(f"seq_len {seq_len} leaves no room for text after special tokens.")
    pre = np.asarray(prefix, dtype=np.int32)
    suf = np.asarray(suffix, dtype=np.int32)
    return [
        np.concatenate([pre, ids[s:s + body], suf])
        for s in window_starts(len(ids), body=body, window=window, stride=stride)
    ]


# ---- tokenising (in the executor's workers) ---------------------------------------------
@dataclass(frozen=True)
class _TokJob:
    """What a worker tokenises with, and (for a build) where its shard files go."""

    tokenizer: str
    seq_len: int
    window: str
    stride: int | None
    batch_texts: int = 64
    lakehouse: LakehouseConfig | None = None
    dataset: str = ""
    max_bytes: int = 0
    max_samples: int | None = None


@dataclass
class _TokState:
    job: _TokJob
    tok: Any
    special: tuple[list[int], list[int]]


def _tok_setup(job: _TokJob, tok: Any = None) -> _TokState:
    """A worker's tokenizer, loaded once (``tok``: one already loaded in this process)."""
    from catalog.executor import in_worker

    if in_worker():
        # One Rust thread per worker process: the executor already uses every core.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if tok is None:
        from train.backbones import load_tokenizer

        tok = load_tokenizer(job.tokenizer)
    # A tokenizer.json may ask for truncation (all-MiniLM-L6-v2's: 128 tokens) or padding;
    # the backend applies it to every call. Shards cut their own windows from whole texts.
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    return _TokState(job, tok, special_tokens(tok))


def _encode_batch(state: _TokState, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, without special tokens, as int32 arrays."""
    backend = state.tok.backend_tokenizer
    # encode_batch_fast skips character offsets, which shards never need.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [np.asarray(e.ids, dtype=np.int32) for e in encode(texts, add_special_tokens=False)]


@dataclass
class _Task:
    book_ids: list[str]
    variants: list[str]
    texts: list[str]
    labels: list[float]

    def part(self, start: int, end: int) -> _Task:
        return _Task(self.book_ids[start:end], self.variants[start:end], self.texts[start:end],
                     self.labels[start:end])


def _tokenise_rows(state: _TokState, batch: list[_Task]) -> list[pa.Table]:
    """The worker function of :func:`tokenise`: each task's sample rows (one table)."""
    job = state.job
    return [_windows_table(state, t, _encode_batch(state, t.texts), job.seq_len, job.window,
                           job.stride) for t in batch]


def _windows_table(state: _TokState, task: _Task, encoded: list[np.ndarray], seq_len: int,
                   window: str, stride: int | None) -> pa.Table:
    """The sample rows (:data:`SHARD_SCHEMA`) of a batch of texts' token ids."""
    prefix, suffix = state.special
    sample_ids, books, variants, windows, labels, pieces = [], [], [], [], [], []
    for book, variant, label, ids in zip(task.book_ids, task.variants, task.labels,
                                         encoded, strict=True):
        wins = cut_windows(ids, seq_len=seq_len, window=window, stride=stride,
                           prefix=prefix, suffix=suffix)
        for w, arr in enumerate(wins):
            sample_ids.append(f"{book}{SEP}{variant}{SEP}{w}")
            books.append(book)
            variants.append(variant)
            windows.append(w)
            labels.append(label)
            pieces.append(arr)
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int32, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pa.Table.from_arrays(
        [pa.array(sample_ids, pa.string()), pa.array(books, pa.string()),
         pa.array(variants, pa.string()), pa.array(windows, pa.int32()), input_ids,
         pa.array(labels, pa.float64())],
        schema=SHARD_SCHEMA,
    )


def _tasks(texts: pa.Table, batch: int) -> Iterator[_Task]:
    books = texts.column("book_id").to_pylist()
    variants = texts.column("variant").to_pylist()
    labels = texts.column(LABEL).to_pylist()
    for start in range(0, texts.num_rows, batch):
        end = min(start + batch, texts.num_rows)
        yield _Task(books[start:end], variants[start:end],
                    texts.column("text").slice(start, end - start).to_pylist(),
                    labels[start:end])


def tokenise(
    parts: Mapping[str, pa.Table],
    *,
    tokenizer: str,
    seq_len: int,
    window: str,
    stride: int | None,
    batch_texts: int = 64,
    workers: int = 1,
    tok: Any = None,
    executor: Executor | None = None,
) -> Iterator[tuple[str, pa.Table]]:
    """Tokenise each split's texts and cut their windows into sample rows.

    Args:
        parts: Split name -> texts (``book_id, variant, text, label``, as
            :func:`split_texts` gives them); splits are done in :data:`SPLITS` order.
        tokenizer: Tokenizer alias or local folder (what workers load).
        seq_len: Maximum tokens per sample, special tokens included.
        window: ``first``, ``chunks`` or ``overlap`` (see :func:`window_starts`).
        stride: Start-to-start distance for ``overlap``.
        batch_texts: Texts per tokenizer batch.
        workers: Tokenizer processes of the default (local) executor; the output is the
            same for any number.
        tok: The tokenizer already loaded in this process (used when the work runs here).
        executor: Where to tokenise (default: a local one of ``workers``).

    Yields:
        ``(split, rows)`` per batch of texts, in text order: ``rows`` in
        :data:`SHARD_SCHEMA`, the windows of each text in order (a text without tokens has
        none).
    """
    job = _TokJob(tokenizer, seq_len, window, stride, batch_texts)
    executor = executor or make_executor("local", workers=workers)
    for split in [s for s in SPLITS if s in parts]:
        tasks = list(_tasks(parts[split], batch_texts))
        # below a few batches per worker one process (the tokenizer's own threads) is
        # faster than starting a pool; the output is the same either way
        inline = executor.kind == "local" and len(tasks) < 4 * executor.workers
        for rows in executor.map(
                _tokenise_rows, [[t] for t in tasks],
                setup=_tok_setup, setup_args=(job, tok) if inline or tok is None else (job,),
                desc=f"tokenise {split}", unit="batch", total=len(tasks),
                inline_below=len(tasks) + 1 if inline else 0):
            if isinstance(rows, Failed):
                raise CorpusError(f"shards: a batch of texts could not be tokenised: "
                                  f"{rows.reason}")
            yield split, rows


# ---- building: groups of texts, each written as shard files by a worker ------------------
CHARS_PER_TOKEN = 4  # what a group's size is estimated with (English prose, subword tokens)
# A group is about this many shard files' worth of text: the worker cuts exact shards from it,
# and only its last shard is partial (larger groups: fewer partial shards, fewer tasks).
GROUP_SHARDS = 4


@dataclass(frozen=True)
class _Group:
    """Consecutive texts of one split that one worker turns into shard files."""

    split: str
    index: int
    texts: _Task


def _group_key(group: _Group) -> str:
    return f"{group.split} group {group.index}"


def plan_groups(parts: Mapping[str, pa.Table], *, seq_len: int, window: str,
                stride: int | None, max_bytes: int, max_samples: int | None,
                ) -> list[_Group]:
    """Cut each split's texts (in order) into groups of about :data:`GROUP_SHARDS` shard
    files each.

    A group's size is estimated from its texts' characters (about :data:`CHARS_PER_TOKEN`
    characters a token, four bytes a token id, the windows the setting cuts), so the groups,
    and with them the shard files, depend only on the texts and the settings: never on the
    executor or the number of workers.
    """
    groups = []
    body = max(1, seq_len - 2)
    for split in [s for s in SPLITS if s in parts]:
        texts = parts[split]
        lengths = pc.utf8_length(texts.column("text")).to_pylist() if texts.num_rows else []
        task = next(_tasks(texts, max(1, texts.num_rows)), None)
        start, size, samples = 0, 0, 0
        for i, n in enumerate(lengths):
            tokens = max(1, (n or 0) // CHARS_PER_TOKEN)
            if window == "first":
                wins = 1
            elif window == "chunks":
                wins = -(-tokens // body)
            else:
                wins = 1 + -(-max(0, tokens - body) // (stride or body))
            size += 4 * min(tokens + wins * 2, wins * seq_len)
            samples += wins
            if size >= GROUP_SHARDS * max_bytes or (
                    max_samples is not None and samples >= GROUP_SHARDS * max_samples):
                groups.append(_Group(split, len(groups), task.part(start, i + 1)))
                start, size, samples = i + 1, 0, 0
        if start < len(lengths):
            groups.append(_Group(split, len(groups), task.part(start, len(lengths))))
    return groups


def _encode_each(state: _TokState, task: _Task) -> tuple[list[np.ndarray | None], list[str]]:
    """Token ids of each text; when the batch fails, text by text (a text that fails is
    None, with its reason)."""
    try:
        return list(_encode_batch(state, task.texts)), []
    except Exception:
        ids: list[np.ndarray | None] = []
        reasons = []
        for i, text in enumerate(task.texts):
            try:
                ids.extend(_encode_batch(state, [text]))
            except Exception as e:
                ids.append(None)
                reasons.append(f"{task.book_ids[i]}{SEP}{task.variants[i]}: "
                               f"{type(e).__name__}: {e}")
        return ids, reasons


def _write_groups(state: _TokState, batch: list[_Group]) -> list[dict]:
    """The worker function of :func:`build_shards`: each group tokenised, cut into windows
    and written as shard files into the object store; its manifest entries come back."""
    from catalog.storage import cached_store

    job = state.job
    out = []
    for group in batch:
        writer = ShardWriter(cached_store(job.lakehouse), job.dataset, group.split,
                             job.max_bytes, job.max_samples)
        n_first, failed = 0, []
        t = group.texts
        for start in range(0, len(t.texts), job.batch_texts):
            part = t.part(start, start + job.batch_texts)
            ids, reasons = _encode_each(state, part)
            if reasons:
                failed += reasons
                keep = [i for i, x in enumerate(ids) if x is not None]
                part = _Task(*[[col[i] for i in keep] for col in
                               (part.book_ids, part.variants, part.texts, part.labels)])
                ids = [ids[i] for i in keep]
            rows = _windows_table(state, part, ids, job.seq_len, job.window, job.stride)
            # Window 0 exists for every text that has at least one token.
            n_first += pc.sum(pc.equal(rows.column("window"), 0)).as_py() or 0
            writer.add(rows)
        writer.flush()
        out.append({"split": group.split, "written": writer.written, "n_first": n_first,
                    "texts": len(t.texts), "failed": failed})
    return out


# ---- the core over Arrow data: texts and scores in, manifest rows out ---------------------
@dataclass(frozen=True)
class Selection:
    """The texts a dataset is built from (see :func:`select_texts`).

    Attributes:
        texts: ``book_id, variant, text, label`` (:data:`LABEL`: the book's current target
            value), sorted by (book_id, variant).
        variants: The variants the patterns matched, sorted.
        excluded_books: Books with a selected text but no current target value, sorted.
    """

    texts: pa.Table
    variants: list[str]
    excluded_books: list[str]


def select_texts(
    texts: pa.Table | Iterable[pa.Table | pa.RecordBatch],
    scores: pa.Table,
    *,
    metric: str,
    variants: Sequence[str],
    books: Sequence[str] = (),
    texts_ref: str = "texts",
    scores_ref: str = "scores",
) -> Selection:
    """The texts of the matching variants and books that have a current ``metric`` value.

    Args:
        texts: Rows with ``book_id, variant, text``: one table, or batches (a scan), of
            which only the selected variants are kept in memory.
        scores: Rows of the ``scores`` table; the current value per book is the label.
        metric: The target metric (``scores.metric``).
        variants: Variant names or shell patterns (``noisy/*``).
        books: Shell patterns of book ids; every book when empty.
        texts_ref: How error messages name the texts (e.g. ``texts@7``).
        scores_ref: How error messages name the scores.

    Raises:
        CorpusError: no variant or book id matches, or no selected book has the target.
    """
    targets = current_values(scores, metric)
    available: set[str] = set()
    kept = []
    for part in [texts] if isinstance(texts, pa.Table) else texts:
        table = part if isinstance(part, pa.Table) else pa.Table.from_batches([part])
        table = table.select(TEXT_SCHEMA.names).cast(TEXT_SCHEMA)
        names = pc.unique(table.column("variant")).to_pylist()
        available.update(names)
        want = match_variants(names, variants)
        if want:
            kept.append(table.filter(pc.is_in(table.column("variant"),
                                              value_set=pa.array(want, pa.string()))))
    matched = match_variants(available, variants)
    if not matched:
        raise CorpusError(
            f"shards: no texts variant matches {', '.join(variants)} in {texts_ref}; "
            f"variants present: {', '.join(sorted(available)) or 'none'}."
        )
    chosen_texts = pa.concat_tables(kept) if kept else TEXT_SCHEMA.empty_table()
    if books:
        ids = pc.unique(chosen_texts.column("book_id")).to_pylist()
        chosen = [b for b in ids if any(fnmatch.fnmatchcase(b, p) for p in books)]
        if not chosen:
            raise CorpusError(f"shards: no book id matches {', '.join(books)} in {texts_ref}.")
        chosen_texts = chosen_texts.filter(pc.is_in(chosen_texts.column("book_id"),
                                                    value_set=pa.array(chosen, pa.string())))
    # A fixed order: the same inputs give the same shard files (and content keys).
    chosen_texts = chosen_texts.sort_by([("book_id", "ascending"), ("variant", "ascending")])
    all_books = set(pc.unique(chosen_texts.column("book_id")).to_pylist())
    excluded = sorted(all_books - set(targets))
    if excluded:
        log.warning("shards: %d book(s) have no %s score and are left out", len(excluded),
                    metric)
        chosen_texts = chosen_texts.filter(pc.invert(pc.is_in(
            chosen_texts.column("book_id"), value_set=pa.array(excluded, pa.string()))))
    if not chosen_texts.num_rows:
        raise CorpusError(
            f"shards: no book has both a {', '.join(matched)} text ({texts_ref}) and a "
            f"{metric!r} score ({scores_ref}); {len(excluded)} book(s) lack the score. "
            "Import or ingest scores first."
        )
    labels = [targets[b] for b in chosen_texts.column("book_id").to_pylist()]
    chosen_texts = chosen_texts.append_column(pa.field(LABEL, pa.float64()),
                                              pa.array(labels, pa.float64()))
    return Selection(chosen_texts, matched, excluded)


def split_texts(
    texts: pa.Table,
    *,
    val_frac: float,
    seed: int,
    split_by: str = "book",
    books: pa.Table | None = None,
    hold_out: Sequence[str] = (),
) -> dict[str, pa.Table]:
    """Split texts into ``train`` and ``validation`` by book: every text of a validation
    book is in validation (see :func:`pick_validation_books`).

    Args:
        texts: Rows with a ``book_id`` column, e.g. :attr:`Selection.texts`.
        val_frac: Fraction of books (or works) held out.
        seed: Seed of the split.
        split_by: ``book``, or ``work``: books of one source volume (same author and title)
            share a split (:func:`work_key`, :func:`split_by_work`).
        books: ``book_id, title, author`` rows (the ``books`` table); needed for ``work``.
        hold_out: Book ids or shell patterns always in validation (with ``work``, their
            works too); ``val_frac`` applies to the rest.

    Returns:
        ``{"train": ..., "validation": ...}``, each in the order of ``texts``.
    """
    ids = pc.unique(texts.column("book_id")).to_pylist()
    forced = {i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in hold_out)}
    if split_by == "work":
        if books is None:
            raise ConfigError("shards: a split by work needs the books table (titles, "
                              "authors).")
        meta = {b["book_id"]: b for b in books.select(["book_id", "title", "author"])
                .to_pylist()}
        works = {i: work_key(meta.get(i, {}).get("author"), meta.get(i, {}).get("title"), i)
                 for i in ids}
        forced_works = {works[i] for i in forced}
        rest = {i: w for i, w in works.items() if w not in forced_works}
        val_books = split_by_work(rest, val_frac=val_frac, seed=seed) | {
            i for i, w in works.items() if w in forced_works}
    elif split_by == "book":
        val_books = pick_validation_books([i for i in ids if i not in forced],
                                          val_frac=val_frac, seed=seed) | forced
    else:
        raise ConfigError(f"shards: split_by must be one of {', '.join(SPLIT_BY)}, got "
                          f"{split_by!r}.")
    is_val = pc.is_in(texts.column("book_id"), value_set=pa.array(sorted(val_books), pa.string()))
    return {"train": texts.filter(pc.invert(is_val)), "validation": texts.filter(is_val)}


def shard_entry(samples: pa.Table, *, split: str, index: int, uri: str, sha256: str,
                size_bytes: int) -> dict[str, Any]:
    """The manifest fields of one written shard file holding ``samples`` (in write order):
    counts, its books and variants, its first and last sample id, where and what it is."""
    lengths = pc.list_value_length(samples.column("input_ids"))
    book_ids = sorted(pc.unique(samples.column("book_id")).to_pylist())
    return {
        "shard_uri": uri,
        "split": split,
        "shard_index": index,
        "n_samples": samples.num_rows,
        "n_tokens": int(pc.sum(lengths).as_py() or 0),
        "n_books": len(book_ids),
        "book_ids": book_ids,
        "variants": sorted(pc.unique(samples.column("variant")).to_pylist()),
        "sha256": sha256,
        "size_bytes": size_bytes,
        "first_sample": samples.column("sample_id")[0].as_py(),
        "last_sample": samples.column("sample_id")[-1].as_py(),
    }


def manifest_rows(
    written: Iterable[Mapping[str, Any]],
    *,
    config: ShardsConfig,
    pad_id: int,
    texts_version: int,
    scores_version: int,
    build_id: str,
    created_at: datetime,
) -> list[dict[str, Any]]:
    """The ``shards`` rows of one build: each written shard's :func:`shard_entry` with the
    dataset's settings and the input versions it was built from."""
    common = {
        "dataset": config.dataset, "tokenizer": config.tokenizer, "seq_len": config.seq_len,
        "window": config.window, "stride": config.stride, "target": config.target,
        "created_at": created_at, "pad_id": pad_id, "texts_version": texts_version,
        "scores_version": scores_version, "build_id": build_id,
    }
    return [{**common, **w} for w in written]


def manifest_summary(manifest: pa.Table) -> pa.Table:
    """Datasets of a ``shards`` manifest with their size per split: one row per (dataset,
    split, tokenizer, seq_len, window, target) with ``shards`` (files), ``samples`` and
    ``tokens``, sorted by dataset and split (what ``corpus shards list`` shows)."""
    agg = manifest.group_by(["dataset", "split", "tokenizer", "seq_len", "window", "target"]
                            ).aggregate([("shard_uri", "count"), ("n_samples", "sum"),
                                         ("n_tokens", "sum")])
    names = {"shard_uri_count": "shards", "n_samples_sum": "samples", "n_tokens_sum": "tokens"}
    agg = agg.rename_columns([names.get(c, c) for c in agg.column_names])
    return agg.sort_by([("dataset", "ascending"), ("split", "ascending")])


def books_by_split(manifest: pa.Table, *, dataset: str, where: str = "") -> dict[str, set[str]]:
    """The book ids of each split of ``dataset``, from its manifest rows' ``book_ids``.

    Args:
        manifest: ``shards`` rows (other datasets' rows are ignored).
        dataset: The dataset.
        where: Where the manifest is from, for messages (e.g. ``shards@4``).

    Raises:
        ConfigError: the dataset has no rows, or its manifest predates ``book_ids`` (shard
            files are not read instead: rebuild the dataset).
    """
    rows = manifest.filter(pc.equal(manifest.column("dataset"), dataset))
    at = f" at {where}" if where else ""
    if not rows.num_rows:
        raise ConfigError(f"dataset {dataset!r} has no shards{at}.")
    if "book_ids" not in rows.column_names or rows.column("book_ids").null_count:
        raise ConfigError(
            f"dataset {dataset!r}{at} was built before shard manifests recorded their book "
            f"ids. Rebuild it with `corpus shards build --name {dataset} ...` (and train on "
            "the new version) to evaluate it."
        )
    out: dict[str, set[str]] = {}
    for split, ids in zip(rows.column("split").to_pylist(), rows.column("book_ids").to_pylist(),
                          strict=True):
        out.setdefault(split, set()).update(ids)
    return out


# ---- shard files ------------------------------------------------------------------------
def shard_key(dataset: str, sha256: str) -> str:
    """Object key of a shard file: content-addressed, so never overwritten in place."""
    return f"shards/{dataset}/{sha256[:2]}/{sha256}.parquet"


@dataclass
class ShardWriter:
    """Collects sample rows of one split and writes shard files of about ``max_bytes``.

    Each full shard is written to a temporary local file, hashed and put into the object
    store under its content key; :attr:`written` lists one manifest entry per shard.
    """

    store: Any
    dataset: str
    split: str
    max_bytes: int
    max_samples: int | None = None
    written: list[dict[str, Any]] = field(default_factory=list)
    _parts: list[pa.Table] = field(default_factory=list)
    _bytes: int = 0
    _rows: int = 0

    def add(self, table: pa.Table) -> None:
        """Add rows; writes every shard that fills up."""
        while table.num_rows:
            room = table.num_rows
            if self.max_samples is not None:
                room = min(room, self.max_samples - self._rows)
            part = table.slice(0, room)
            if self.max_bytes and part.nbytes + self._bytes > self.max_bytes and part.num_rows:
                # Take only what fits (rows are roughly equal in size): at least one row.
                per_row = max(1, part.nbytes // part.num_rows)
                room = max(1, min(room, (self.max_bytes - self._bytes) // per_row))
                part = table.slice(0, room)
            self._parts.append(part)
            self._bytes += part.nbytes
            self._rows += part.num_rows
            table = table.slice(room)
            full = (self.max_samples is not None and self._rows >= self.max_samples) or (
                self._bytes >= self.max_bytes)
            if full:
                self.flush()

    def flush(self) -> None:
        """Write the collected rows as one shard (nothing when empty)."""
        if not self._rows:
            return
        table = pa.concat_tables(self._parts).combine_chunks()
        self._parts, self._bytes, self._rows = [], 0, 0
        with tempfile.TemporaryDirectory(prefix="corpus-shard-") as tmp:
            path = Path(tmp) / "shard.parquet"
            # Row groups of ~1k samples let a reader take a part of a shard; no page index
            # or statistics for the token lists (never filtered on).
            pq.write_table(table, path, row_group_size=1024, compression="zstd",
                           compression_level=1, write_statistics=["sample_id", "book_id"])
            digest = sha256_file(path)
            size = path.stat().st_size
            key = shard_key(self.dataset, digest)
            if not self.store.exists(key):
                self.store.put_file(key, path)
        self.written.append(shard_entry(table, split=self.split, index=len(self.written),
                                        uri=self.store.uri(key), sha256=digest,
                                        size_bytes=size))


# ---- driver -----------------------------------------------------------------------------
@dataclass
class ShardsReport:
    """What one build wrote and left out."""

    dataset: str
    version: int
    build_id: str
    texts_version: int
    scores_version: int
    variants: list[str]
    shards: dict[str, int]        # split -> number of shard files
    samples: dict[str, int]       # split -> samples
    tokens: dict[str, int]        # split -> tokens
    books: dict[str, int]         # split -> books
    texts: int                    # texts tokenised
    excluded_no_target: int       # books (with a selected variant) lacking the target score
    empty_texts: int              # texts with no tokens at all
    seconds: float = 0.0
    excluded_books: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # texts that could not be tokenised
    executor: dict = field(default_factory=dict)  # where it ran (Executor.summary)


def build_shards(lakehouse: Lakehouse, *, config: ShardsConfig) -> ShardsReport:
    """Tokenise pinned ``texts`` into shard files and commit the dataset's manifest.

    The driver around the core (:func:`select_texts`, :func:`split_texts`,
    :func:`tokenise`, :func:`manifest_rows`): it pins and reads the inputs, writes the shard
    files into the object store and replaces the dataset's manifest rows in one commit.

    Returns:
        A :class:`ShardsReport`; ``version`` is the ``shards`` table version of this build.

    Raises:
        CorpusError: missing input tables, no matching variants or no book with the target.
    """
    t0 = time.perf_counter()
    # a split by work reads authors and titles: books is then an input too
    pins = lakehouse.pin("texts", "scores", *(("books",) if config.split_by == "work" else ()))
    scores = lakehouse.read("scores", version=pins["scores"])
    texts_ds = lakehouse.dataset("texts", pins["texts"])
    # Batch by batch from the scan: only the selected variants are ever held in memory.
    selection = select_texts(
        texts_ds.to_batches(columns=TEXT_SCHEMA.names), scores, metric=config.target,
        variants=config.variants, books=config.books, texts_ref=f"texts@{pins['texts']}",
        scores_ref=f"scores@{pins['scores']}",
    )
    books = (lakehouse.read("books", version=pins["books"], columns=["book_id", "title", "author"])
             if config.split_by == "work" else None)
    parts = split_texts(selection.texts, val_frac=config.val_frac, seed=config.seed,
                        split_by=config.split_by, books=books, hold_out=config.hold_out)

    from train.backbones import load_tokenizer

    tok = load_tokenizer(config.tokenizer)  # here: its pad id goes into the manifest
    max_bytes = int(config.shard_mb * 2**20)
    groups = plan_groups(parts, seq_len=config.seq_len, window=config.window,
                         stride=config.stride, max_bytes=max_bytes,
                         max_samples=config.shard_samples)
    executor = make_executor(config.executor, workers=config.workers,
                             address=config.ray_address)
    job = _TokJob(config.tokenizer, config.seq_len, config.window, config.stride,
                  config.batch_texts, lakehouse.config, config.dataset, max_bytes,
                  config.shard_samples)
    written: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    n_first = 0
    failed: list[str] = []
    # in order: the shards of a split are numbered in text order, whoever wrote them
    here = executor.kind == "local" and executor.workers == 1  # reuse the loaded tokenizer
    for out in executor.map(_write_groups, [[g] for g in groups], setup=_tok_setup,
                            setup_args=(job, tok) if here else (job,), desc="shards",
                            unit="group",
                            total=len(groups), key=_group_key):
        if isinstance(out, Failed):
            raise CorpusError(f"shards: {out.key} could not be written ({out.reason}); "
                              "nothing was committed. Shard files are content-addressed: "
                              "a rerun reuses those already written.")
        for entry in out["written"]:
            written[out["split"]].append({**entry,
                                          "shard_index": len(written[out["split"]])})
        n_first += out["n_first"]
        failed += out["failed"]
    n_texts = sum(parts[s].num_rows for s in SPLITS) - len(failed)

    build_id = uuid.uuid4().hex[:16]
    rows = manifest_rows(
        [w for s in SPLITS for w in written[s]], config=config,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        texts_version=pins["texts"], scores_version=pins["scores"], build_id=build_id,
        created_at=datetime.now(UTC),
    )
    book_counts = {s: len(pc.unique(parts[s].column("book_id"))) for s in SPLITS}
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
           if k not in ("workers", "executor", "ray_address")}
    lineage = Lineage(
        operation="shards", inputs=pins,
        config={**cfg, "variants_matched": selection.variants, "build_id": build_id,
                "excluded_no_target": len(selection.excluded_books),
                "val_books": book_counts["validation"], "executor": executor.describe(),
                "failed": len(failed), "failures": failed[:FAILURES_KEPT]},
    )
    # Columns the spec declared since the table was created are added by the catalog
    # before this write (Lakehouse.create/add_columns), never by hand here.
    quoted = config.dataset.replace("'", "''")
    version = lakehouse.overwrite("shards", rows, lineage=lineage,
                                  predicate=f"dataset = '{quoted}'")
    report = ShardsReport(
        dataset=config.dataset, version=version, build_id=build_id,
        texts_version=pins["texts"], scores_version=pins["scores"],
        variants=selection.variants,
        shards={s: len(written[s]) for s in SPLITS},
        samples={s: sum(w["n_samples"] for w in written[s]) for s in SPLITS},
        tokens={s: sum(w["n_tokens"] for w in written[s]) for s in SPLITS},
        books=book_counts, texts=n_texts, excluded_no_target=len(selection.excluded_books),
        empty_texts=n_texts - n_first, seconds=time.perf_counter() - t0,
        excluded_books=selection.excluded_books, failed=failed, executor=executor.summary(),
    )
    log.info("shards %s@%d: %s", config.dataset, version, report.samples)
    return report


def orphan_shard_files(lakehouse: Lakehouse, *, retention_hours: float) -> list[str]:
    """Object keys of shard files that no version of the ``shards`` table references (the
    files of a build that stopped before its commit), older than ``retention_hours``: what
    ``corpus vacuum shards`` deletes. Files of every version still in the table's log are
    kept, so time travel to them keeps working."""
    from catalog import TableNotFoundError, key_from_uri

    try:
        versions = [c.version for c in lakehouse.history("shards")]
    except TableNotFoundError:
        versions = []
    used: set[str] = set()
    for v in versions:
        try:
            uris = lakehouse.read("shards", version=v, columns=["shard_uri"])
        except CorpusError:  # a version whose files were vacuumed: nothing to keep for it
            continue
        used.update(key_from_uri(u) for u in uris.column("shard_uri").to_pylist() if u)
    cutoff = time.time() - retention_hours * 3600
    return sorted(k for k, at in lakehouse.store.modified("shards/").items()
                  if k.endswith(".parquet") and k not in used and at <= cutoff)


def read_manifest(lakehouse: Lakehouse, dataset: str, *, version: int | None = None,
                  split: str | None = None) -> tuple[pa.Table, int]:
    """The manifest rows of ``dataset`` at ``shards`` version ``version`` (latest if None).

    Returns:
        ``(rows sorted by split and shard_index, resolved version)``.

    Raises:
        ConfigError: the dataset (or split) has no shards at that version.
    """
    dt = lakehouse.open("shards", version)
    resolved = dt.version()
    from catalog.tables import scan_dataset

    table = scan_dataset("shards", dt).to_table()
    from catalog import spec

    table = table.cast(spec("shards").schema)
    names = sorted(set(table.column("dataset").to_pylist()))
    rows = table.filter(pc.equal(table.column("dataset"), dataset))
    if split is not None:
        rows = rows.filter(pc.equal(rows.column("split"), split))
    if not rows.num_rows:
        where = f" split {split!r}" if split else ""
        raise ConfigError(
            f"No shards for dataset {dataset!r}{where} at shards@{resolved}. Datasets there: "
            f"{', '.join(names) or 'none'}. Build it with `corpus shards build --name "
            f"{dataset} ...`."
        )
    rows = rows.sort_by([("split", "ascending"), ("shard_index", "ascending")])
    return rows, resolved
