"""A rank-aware streaming dataset over pinned token shards, with exact resume.

:class:`ShardStream` reads the manifest of one dataset at one ``shards`` table version
(local or ``s3://`` lakehouse; shard files from S3 are cached locally and checked against
their sha256) and yields samples to this rank.

Samples. Each is a dict: ``sample_id`` (``<book_id>|<variant>|<window>``, unique and stable),
``book_id``, ``variant``, ``input_ids`` (1-D int32 numpy array, special tokens included,
at most the dataset's ``seq_len``), ``target`` (float: the shard file's label, see
:func:`train.shards.label_column`) and ``index`` (the sample's number in manifest order).
:func:`collate` pads a list of them into tensors.

Order. An epoch is a permutation of all N samples of the split, fixed by ``(seed, epoch)``:
the shard order is shuffled over the whole dataset, then the samples of each block of
``block_shards`` consecutive shards (in that shuffled order) are shuffled together, so
neighbouring samples come from different shards and books, while a reader only needs one
block of shards at a time. ``block_shards=0`` shuffles all samples as one block. The
same seed and epoch give the same order on every machine and for every world size.

Ranks. Global position p of the epoch order goes to rank ``p % world_size``. Samples on the
skip list are removed from the order first (positions stay as they are, only the list of
positions still to be yielded shrinks), so ranks stay in step. A rank reads only shards that
hold samples it still has to yield: after a resume, blocks consumed before it are never read.
DataLoader workers (see :meth:`ShardStream.loader`) split a rank's samples in batch-sized
chunks, round-robin, which is the order DataLoader returns them in: a rank sees the same
sequence with or without workers.

Resume state. :meth:`state_dict` is a small JSON-able dict::

    {"format": 1, "dataset": "clear", "version": 7, "split": "train", "seed": 0,
     "shuffle": true, "block_shards": 8, "total": 226, "epoch": 3,
     "consumed": 96,           # global positions of this epoch's order already consumed
     "skip": ["clear-12|edited|0", ...]}

``consumed`` counts positions of the epoch order, over all ranks together. Because it is a
prefix of one global order, a job resumed with a *different* world size continues with
exactly the samples not yet seen in this epoch: position p simply goes to rank
``p % new_world_size``.

What the trainer must do (the contract):

1. Give every rank the same ``dataset, version, split, seed, shuffle, block_shards`` and the
   same skip list, and call :meth:`set_epoch` with the same epoch on every rank before
   iterating.
2. Consume the same number of samples on every rank per step (same batch size everywhere),
   and use ``drop_last=True`` for training under DDP: then every rank yields
   ``floor(remaining / world_size)`` samples, the same number of batches, and the few
   (< world_size) positions left over at the epoch's end are dropped for this epoch.
   With ``drop_last=False`` (evaluation, tests) ranks may differ by one sample at the end.
3. After a step on all ranks, every rank's :meth:`state_dict` is the same; rank 0 saves it
   with the checkpoint. On resume, construct the stream with the saved version (or call
   :meth:`load_state_dict`, which checks that it matches) and iterate: the first sample is
   the next unseen one. The state is exact only at step boundaries (all ranks in step).
4. Iterate the stream directly, through :meth:`loader` (which keeps the count when
   DataLoader workers prefetch), or through a ``DataLoader(num_workers=0)``; a
   ``DataLoader`` with workers built by hand would leave this process's count at zero.
5. Poison samples: :meth:`skip_sample` adds a sample id to the skip list (saved in the state).
   It takes effect at the next iteration start (e.g. after the restart that follows the
   crash); call it on every rank with the same ids. A suggested pattern: before each step,
   record the batch's sample ids; when a restart finds the same in-flight ids as the crash
   before, skip them.

An epoch that has been consumed completely yields nothing more until :meth:`set_epoch`
moves to another epoch (``set_epoch`` with the current epoch keeps the position, so a
resumed loop can call it unconditionally).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from catalog import ConfigError, Lakehouse, LakehouseConfig, StorageError, key_from_uri, sha256_file
from train.shards import SEP, label_column, read_manifest

log = logging.getLogger(__name__)

STATE_FORMAT = 1
PREFETCH = 2  # shards fetched and decoded ahead of the reader, in background threads


def _sample_key(sample_id: str) -> tuple[str, str, int]:
    """Sort key of a sample id in shard write order: (book_id, variant, window)."""
    book, variant, window = sample_id.rsplit(SEP, 2)
    return book, variant, int(window)


@dataclass
class LoadedShard:
    """One shard file in memory: metadata lists and the token ids as flat numpy arrays."""

    sample_ids: list[str]
    book_ids: list[str]
    variants: list[str]
    targets: list[float]
    offsets: list[int]  # Python ints: per-sample slicing with numpy scalars costs ~3x more
    values: np.ndarray

    @classmethod
    def read(cls, path: Path) -> LoadedShard:
        """Read a shard file (its label column under either name, see
        :func:`train.shards.label_column`)."""
        with pq.ParquetFile(path) as f:
            label = label_column(f.schema_arrow.names)
            t = f.read(columns=["sample_id", "book_id", "variant", "input_ids", label])
        ids = t.column("input_ids").combine_chunks()
        return cls(
            sample_ids=t.column("sample_id").to_pylist(),
            book_ids=t.column("book_id").to_pylist(),
            variants=t.column("variant").to_pylist(),
            targets=t.column(label).to_pylist(),
            offsets=ids.offsets.to_pylist(),
            values=ids.values.to_numpy(),
        )


@dataclass
class ReadStats:
    """What this process's stream read (for tests and benchmarks)."""

    shards_read: list[int] = field(default_factory=list)   # shard numbers, in read order
    downloads: int = 0
    seconds_reading: float = 0.0


class ShardStream(IterableDataset):
    """Stream one split of a pinned token-shard dataset to this rank (see module docs).

    Args:
        lakehouse: The lakehouse (or its root / config) holding the ``shards`` table.
        dataset: Dataset name (``corpus shards build --name``).
        version: ``shards`` table version to pin; None resolves the latest (see
            :attr:`version` for what was resolved; record it).
        split: ``train`` or ``validation``.
        rank: This process's rank; default from :mod:`train.dist` (0 without a group).
        world_size: Number of ranks; default from :mod:`train.dist`.
        seed: Seed of the sample order.
        cache_dir: Local folder for shard files fetched from an ``s3://`` root (default a
            folder in the temp dir; files are content-addressed, so ranks may share it).
        skip: Sample ids never to yield (poison samples).
        shuffle: False yields the split in manifest order (evaluation).
        block_shards: Shards shuffled together (0 = all of them); see module docs.
        drop_last: Give every rank exactly ``floor(remaining / world_size)`` samples.
        epoch: Starting epoch.
    """

    def __init__(
        self,
        lakehouse: Lakehouse | LakehouseConfig | str,
        dataset: str,
        *,
        version: int | None = None,
        split: str = "train",
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        skip: Iterable[str] = (),
        shuffle: bool = True,
        block_shards: int = 8,
        drop_last: bool = False,
        epoch: int = 0,
    ) -> None:
        super().__init__()
        from train import dist

        if not isinstance(lakehouse, Lakehouse):
            lakehouse = Lakehouse(lakehouse)
        self.rank = dist.rank() if rank is None else int(rank)
        self.world_size = dist.world_size() if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"ShardStream: rank {self.rank} / world size {self.world_size}: "
                              "expected 0 <= rank < world_size.")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"ShardStream: seed must be an integer >= 0, got {seed!r}.")
        if block_shards < 0:
            raise ConfigError(f"ShardStream: block_shards must be >= 0, got {block_shards}.")
        manifest, resolved = read_manifest(lakehouse, dataset, version=version, split=split)
        self.config = lakehouse.config
        self.dataset = dataset
        self.version = resolved
        self.split = split
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.block_shards = int(block_shards)
        self.drop_last = bool(drop_last)
        rows = manifest.to_pylist()
        self.shard_keys = [key_from_uri(r["shard_uri"]) for r in rows]
        self.shard_sha = [r["sha256"] for r in rows]
        self.shard_size = [r["size_bytes"] for r in rows]
        self._first = [r["first_sample"] for r in rows]
        self._last = [r["last_sample"] for r in rows]
        counts = np.array([r["n_samples"] for r in rows], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.total = int(self.offsets[-1])
        self.seq_len = int(rows[0]["seq_len"])
        self.pad_id = int(rows[0]["pad_id"] or 0)
        self.tokenizer = rows[0]["tokenizer"]
        if cache_dir is None:
            cache_dir = Path(tempfile.gettempdir()) / "corpus-shard-cache"
        self.cache_dir = Path(cache_dir)
        self._local = not self.config.is_s3
        self._store = None
        self._store_pid = 0
        self._skip: set[str] = {str(s) for s in skip}
        self._skip_idx: dict[str, int | None] = {}
        self._epoch = int(epoch)
        self._consumed = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        # the iteration in progress: positions still to yield (all ranks) at its start
        self._pending: np.ndarray | None = None
        self._k = 0  # samples yielded by this rank since the iteration started
        self._done = False  # the current iteration ran to its end
        self._chunk = 1  # samples per DataLoader worker chunk (the batch size)
        self.stats = ReadStats()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy: without the S3 client (not picklable, not fork-safe).
        state = self.__dict__.copy()
        state["_store"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- public state ------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._epoch

    @property
    def skip(self) -> list[str]:
        """The skip list (sorted)."""
        return sorted(self._skip)

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (from its start); the current epoch keeps its position."""
        epoch = int(epoch)
        if epoch != self._epoch:
            self._epoch, self._consumed, self._pending, self._k = epoch, 0, None, 0
            self._done = False

    def skip_sample(self, sample_id: str) -> None:
        """Never yield ``sample_id`` again (from the next iteration start; saved in state)."""
        self._skip.add(str(sample_id))

    def consumed(self) -> int:
        """Global positions of this epoch consumed so far (all ranks, in step)."""
        return self._consumed_now()

    def state_dict(self) -> dict[str, Any]:
        """The resume state (small, JSON-able; identical on all ranks at a step boundary)."""
        return {
            "format": STATE_FORMAT, "dataset": self.dataset, "version": self.version,
            "split": self.split, "seed": self.seed, "shuffle": self.shuffle,
            "block_shards": self.block_shards, "total": self.total, "epoch": self._epoch,
            "consumed": self._consumed_now(), "skip": self.skip,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (any world size); checks it is this dataset's state.

        The saved skip list is added to this stream's own.

        Raises:
            ConfigError: the state is from another dataset, version, split or order.
        """
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(f"ShardStream state format {state.get('format')!r}: expected "
                              f"{STATE_FORMAT}.")
        mine = self.state_dict()
        for key in ("dataset", "version", "split", "seed", "shuffle", "block_shards", "total"):
            if state.get(key) != mine[key]:
                raise ConfigError(
                    f"Cannot resume: the saved state has {key}={state.get(key)!r} but this "
                    f"stream has {key}={mine[key]!r}. Construct the stream with the saved "
                    f"dataset, version ({state.get('version')}), split and seed."
                )
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.total:
            raise ConfigError(f"Saved state consumed={consumed} is outside 0..{self.total}.")
        self._epoch = int(state["epoch"])
        self._consumed = consumed
        # The saved skip list joins the one given to the constructor (never shrinks).
        self._skip |= set(state.get("skip") or ())
        self._pending, self._k, self._done = None, 0, False

    # ---- order -------------------------------------------------------------------------
    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """Global sample indices (manifest order) in the order of ``epoch``."""
        epoch = self._epoch if epoch is None else int(epoch)
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        n_shards = len(self.shard_keys)
        if not self.shuffle:
            order = np.arange(self.total, dtype=np.int64)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            shard_order = rng.permutation(n_shards)
            block = self.block_shards or n_shards
            parts = []
            for b in range(0, n_shards, block):
                idx = np.concatenate([np.arange(self.offsets[s], self.offsets[s + 1])
                                      for s in shard_order[b:b + block]])
                parts.append(rng.permutation(idx))
            order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self._order_cache = (epoch, order)
        return order

    def _skip_indices(self) -> np.ndarray:
        """Global indices of the skip list's samples in this split (others are ignored)."""
        for sid in self._skip:
            if sid not in self._skip_idx:
                self._skip_idx[sid] = self._find(sid)
        found = [i for s, i in self._skip_idx.items() if s in self._skip and i is not None]
        return np.array(sorted(found), dtype=np.int64)

    def _find(self, sample_id: str) -> int | None:
        """Global index of a sample id: the manifest's first/last ids name its shard."""
        try:
            key = _sample_key(sample_id)
            lasts = [_sample_key(s) for s in self._last]
            firsts = [_sample_key(s) for s in self._first]
            candidates = [bisect.bisect_left(lasts, key)]
        except (ValueError, TypeError, AttributeError):  # not a sample id; an old manifest
            firsts, candidates = [], list(range(len(self.shard_keys)))
        for s in candidates:
            if s >= len(self.shard_keys) or (firsts and key < firsts[s]):
                continue
            ids = pq.read_table(self._path(s), columns=["sample_id"]).column("sample_id")
            hits = np.flatnonzero(np.asarray(ids.to_pylist(), dtype=object) == sample_id)
            if hits.size:
                return int(self.offsets[s] + hits[0])
        log.info("skip list: %s is not in %s/%s", sample_id, self.dataset, self.split)
        return None

    def _begin(self) -> None:
        """Start an iteration at the current position: fix the positions still to yield."""
        start = self._consumed_now()
        order = self.epoch_order()
        positions = np.arange(start, self.total, dtype=np.int64)
        skip = self._skip_indices()
        if skip.size and positions.size:
            positions = positions[~np.isin(order[start:], skip)]
        self._consumed, self._pending, self._k, self._done = start, positions, 0, False

    def _local_count(self) -> int:
        n = len(self._pending) if self._pending is not None else 0
        if self.drop_last:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def _consumed_now(self) -> int:
        if self._done:
            return self.total  # an iteration ran to its end: the epoch is consumed
        if self._pending is None or self._k == 0:
            return self._consumed
        if self._k >= self._local_count():
            return self.total  # this rank is done: so is the epoch (ranks in step)
        return int(self._pending[self.world_size * self._k - 1]) + 1

    def __len__(self) -> int:
        """Samples this rank still yields in this epoch (from the current position)."""
        if self._pending is not None:
            return self._local_count() - self._k
        saved = (self._consumed, self._k, self._done)
        self._begin()
        n = self._local_count()
        self._pending = None
        self._consumed, self._k, self._done = saved
        return n

    # ---- reading -----------------------------------------------------------------------
    def _open_store(self):
        # A forked DataLoader worker inherits the parent's store; an S3 client (its
        # connection pool) must not be shared across processes, so each process opens its own.
        if self._store is None or self._store_pid != os.getpid():
            self._store = Lakehouse(self.config).store
            self._store_pid = os.getpid()
        return self._store

    def _path(self, s: int) -> Path:
        """Local path of shard ``s``: the file itself on a local root, else a cached copy."""
        key = self.shard_keys[s]
        if self._local:
            return Path(self._open_store().uri(key))
        dest = self.cache_dir / key
        if dest.is_file() and dest.stat().st_size == self.shard_size[s]:
            return dest
        self._open_store().get_file(key, dest)
        with self._lock:
            self.stats.downloads += 1
        digest = sha256_file(dest)
        if digest != self.shard_sha[s]:
            dest.unlink(missing_ok=True)
            raise StorageError(
                f"Shard {key} fetched from {self.config.root} has sha256 {digest}, the "
                f"manifest says {self.shard_sha[s]}: the object was changed or corrupted."
            )
        return dest

    def shard_files(self) -> list[Path]:
        """Local paths of this split's shard files, in manifest order (on an ``s3://`` root,
        fetched into the cache folder and checked against the manifest's sha256 first)."""
        return [self._path(s) for s in range(len(self.shard_keys))]

    def target_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the split's sample targets (every sample, not this
        rank's share: every rank gets the same numbers). Reads only the label column of each
        shard file. The deviation is 1.0 when every target is the same (nothing to scale)."""
        total = total_sq = 0.0
        n = 0
        for path in self.shard_files():
            with pq.ParquetFile(path) as f:
                label = label_column(f.schema_arrow.names)
                y = f.read(columns=[label]).column(label).to_numpy().astype(np.float64)
            total, total_sq, n = total + float(y.sum()), total_sq + float((y * y).sum()), n + len(y)
        if n == 0:
            return 0.0, 1.0
        mean = total / n
        sd = math.sqrt(max(0.0, total_sq / n - mean * mean))
        return mean, sd if sd > 1e-9 else 1.0

    def _local_positions(self) -> np.ndarray:
        """Positions (into the epoch order) this rank/worker yields, in yield order."""
        assert self._pending is not None
        mine = self._pending[self.rank::self.world_size][: self._local_count()]
        info = get_worker_info()
        if info is None or info.num_workers == 1:
            return mine
        chunk = max(1, self._chunk)
        n_chunks = -(-len(mine) // chunk)
        keep = [np.arange(c * chunk, min((c + 1) * chunk, len(mine)))
                for c in range(info.id, n_chunks, info.num_workers)]
        return mine[np.concatenate(keep)] if keep else mine[:0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._begin()
        in_worker = get_worker_info() is not None
        order = self.epoch_order()
        positions = self._local_positions()
        samples = order[positions]
        shard_of = np.searchsorted(self.offsets, samples, side="right") - 1
        # Each shard is read once, when first needed, and dropped after its last use.
        last_use = {int(s): i for i, s in enumerate(shard_of)}
        first_order = list(dict.fromkeys(int(s) for s in shard_of))
        loaded: OrderedDict[int, LoadedShard] = OrderedDict()
        # Shards are fetched (S3) and decoded in background threads, a few ahead of use, in
        # the order they are first needed: pyarrow decodes without holding the GIL, so this
        # overlaps with the training loop.
        fetch = None
        if first_order:
            self._open_store()  # created here, not racing in the fetch threads
            fetch = ThreadPoolExecutor(PREFETCH, "shard-fetch")
        pending: dict[int, Future] = {}
        next_fetch = 0

        def load(s: int) -> tuple[LoadedShard, float]:
            path = self._path(s)
            t0 = time.perf_counter()
            return LoadedShard.read(path), time.perf_counter() - t0

        def get(s: int) -> LoadedShard:
            nonlocal next_fetch
            assert fetch is not None
            while next_fetch < len(first_order) and len(pending) <= PREFETCH:
                f = first_order[next_fetch]
                pending[f] = fetch.submit(load, f)
                next_fetch += 1
            shard, seconds = pending.pop(s).result() if s in pending else load(s)
            self.stats.seconds_reading += seconds
            self.stats.shards_read.append(s)
            loaded[s] = shard
            return shard

        try:
            base = self.offsets.tolist()
            for i, (g, s) in enumerate(zip(samples.tolist(), shard_of.tolist(), strict=True)):
                sh = loaded.get(s) or get(s)
                j = g - base[s]
                off = sh.offsets
                item = {
                    "sample_id": sh.sample_ids[j], "book_id": sh.book_ids[j],
                    "variant": sh.variants[j], "input_ids": sh.values[off[j]:off[j + 1]],
                    "target": sh.targets[j], "index": g,
                }
                if last_use[s] == i:
                    del loaded[s]
                if not in_worker:
                    self._k += 1
                yield item
            if not in_worker:
                self._done = True
        finally:
            if fetch is not None:
                fetch.shutdown(wait=False, cancel_futures=True)

    # ---- batching ----------------------------------------------------------------------
    @property
    def collate_fn(self):
        """:func:`collate` with this dataset's pad id."""
        return partial(collate, pad_id=self.pad_id)

    def loader(self, batch_size: int, *, num_workers: int = 0, **kwargs: Any) -> StreamLoader:
        """Batches of this rank's samples (padded by :func:`collate`), keeping the count.

        With ``num_workers`` > 0 the workers read and decode shards in parallel and the
        batches still arrive in the rank's order; this process counts what it received.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        return StreamLoader(self, batch_size, num_workers, kwargs)


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` that advances the stream's position."""

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int,
                 kwargs: dict[str, Any]):
        self.stream, self.batch_size, self.num_workers = stream, batch_size, num_workers
        self.kwargs = kwargs

    def __len__(self) -> int:
        return -(-len(self.stream) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        s = self.stream
        if self.num_workers == 0:
            batch: list[dict[str, Any]] = []
            for item in s:
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield collate(batch, pad_id=s.pad_id)
                    batch = []
            if batch:
                yield collate(batch, pad_id=s.pad_id)
            return
        s._chunk = self.batch_size
        s._begin()  # the workers start from the same position (their copies do the same)
        dl = DataLoader(s, batch_size=self.batch_size, num_workers=self.num_workers,
                        collate_fn=s.collate_fn, **self.kwargs)
        for b in dl:
            s._k += len(b["sample_ids"])
            yield b
        s._done = True


def collate(samples: list[dict[str, Any]], *, pad_id: int = 0) -> dict[str, Any]:
    """Pad a list of samples to the batch's longest one.

    Returns:
        ``input_ids`` and ``attention_mask`` (int64, ``[batch, max_len]``), ``targets``
        (float32, ``[batch]``), and the lists ``sample_ids``, ``book_ids``, ``variants``.
    """
    rows = [s["input_ids"] for s in samples]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    # One vectorised fill: the mask's True cells, row by row, are the concatenated tokens.
    mask = np.arange(width) < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    if len(rows):
        ids[mask] = np.concatenate(rows)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        "targets": torch.tensor([s["target"] for s in samples], dtype=torch.float32),
        "sample_ids": [s["sample_id"] for s in samples],
        "book_ids": [s["book_id"] for s in samples],
        "variants": [s["variant"] for s in samples],
    }
