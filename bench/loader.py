"""Benchmark P6: ShardStream samples/s vs a plain DataLoader, MosaicML streaming and LitData.

In one run, interleaved round by round (the order of the sides reversed every other round),
median of ``--runs`` rounds, one shuffled epoch per timing, batches of ``--batch``, the same
padding collate into torch tensors (``train.data.collate`` with the dataset's pad id), the
same ``num_workers`` (rows 0 and 2) on every side:

* plain: a map-style ``torch.utils.data.Dataset`` that reads the dataset's shard files with
  pyarrow (only the five columns used; token ids kept as one flat numpy array sliced per
  sample with Python-int offsets, the other fields as Python lists: no per-sample
  conversion, as ours) under ``DataLoader(shuffle=True)``;
* ours: ``ShardStream(lakehouse, dataset, version=v, seed=i).loader(batch)``: manifest read
  from the Delta table, seeded two-level shuffle, shards read lazily, same collate;
* mosaic: MosaicML streaming, ``StreamingDataset(local=MDS dir, remote=None, shuffle=True)``
  under its ``StreamingDataLoader``;
* litdata: LitData ``StreamingDataset(chunks dir, shuffle=True)`` under its
  ``StreamingDataLoader``.

Timed on every side: constructing the dataset (reading the manifest or index) and the
DataLoader, and the full epoch (reading and decoding every file). Untimed set-up, done once:
building the shards (ours and plain read those same Parquet files), and converting the same
samples into each peer's own format (MDS shards of 4 MiB; LitData chunks of 4 MB, both
uncompressed, both read in place, no remote). Every timing counts its samples and asserts
the count; before the timed rounds one untimed epoch per side and ``num_workers`` checks
that every side yields exactly the same sample ids (sha256 of the sorted ids).

The peers run in a separate throwaway virtualenv (``bench/peers_venv.sh DIR``, never the
project's venv), given by ``--peers-python DIR/bin/python`` (alias ``--mds-python``): one
long-lived worker process per peer (``bench/loader_peers.py``), started and set up once,
untimed, which times each epoch inside itself exactly as ours is timed here and answers over
stdin/stdout; the caller's command round trip is outside the timing. Without
``--peers-python`` only plain and ours run. A peer that fails for some ``num_workers`` is
reported as failed in the table and the JSON, not skipped silently.

Resume: the time from constructing a stream and loading a mid-epoch state to its first
batch, against the plain loader's way to get there (iterate and drop the batches before).

Data: the CLEAR corpus (../shared/data/clear/clear_corpus.csv) imported into a fresh local
lakehouse, shards with overlapping windows (``--seq-len`` 128, ``--stride`` 8, 1 MiB
shards before compression): ~48k samples in ~26 files. ``--limit N`` keeps only the first
N excerpts (for quick checks; not a measurement).

Run from the repository root::

    bash bench/peers_venv.sh /tmp/p6-peers      # once; a few minutes, ~2 GB
    HF_HUB_OFFLINE=1 .venv/bin/python bench/loader.py --peers-python /tmp/p6-peers/bin/python
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from catalog import Lakehouse, key_from_uri
from ingest.passages import ImportConfig, run_import
from train.data import ShardStream, collate
from train.shards import ShardsConfig, build_shards, label_column, read_manifest

GOAL = 1.0
ROOT = Path(__file__).resolve().parent.parent
CLEAR = Path(os.environ.get("CORPUS_SHARED_DATA") or ROOT.parent / "shared" / "data"
             ) / "clear" / "clear_corpus.csv"
OUT = Path(__file__).resolve().parent / "out" / "loader.json"
PEER_SCRIPT = Path(__file__).resolve().parent / "loader_peers.py"
PEERS = ("mosaic", "litdata")
WORKERS = (0, 2)


class PlainParquet(Dataset):
    """The baseline: the shard files read with pyarrow once, samples by index.

    As a competent user would write it, without conversions ours avoids: only the columns
    used, one flat numpy array of token ids sliced per sample with Python-int offsets
    (slicing with numpy scalars costs ~3x more), labels and ids as Python lists.
    """

    def __init__(self, files: list[str]):
        label = label_column(pq.read_schema(files[0]).names)
        t = pq.read_table(files, columns=["sample_id", "book_id", "variant", "input_ids",
                                           label])
        ids = t.column("input_ids").combine_chunks()
        self.offsets = ids.offsets.to_pylist()
        self.values = ids.values.to_numpy()
        self.sample_ids = t.column("sample_id").to_pylist()
        self.book_ids = t.column("book_id").to_pylist()
        self.variants = t.column("variant").to_pylist()
        self.targets = t.column(label).to_pylist()

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        return {"sample_id": self.sample_ids[i], "book_id": self.book_ids[i],
                "variant": self.variants[i],
                "input_ids": self.values[self.offsets[i]:self.offsets[i + 1]],
                "target": self.targets[i]}


def drain(loader, check: bool) -> tuple[int, str | None]:
    """One epoch: the same loop for every side (bench/loader_peers.py has a copy)."""
    if not check:
        return sum(len(b["sample_ids"]) for b in loader), None
    ids = [i for b in loader for i in b["sample_ids"]]
    return len(ids), hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def plain_epoch(files: list[str], batch: int, workers: int, seed: int, pad_id: int,
                check: bool = False) -> tuple[float, int, str | None]:
    t0 = time.perf_counter()
    ds = PlainParquet(files)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    generator=torch.Generator().manual_seed(seed),
                    collate_fn=partial(collate, pad_id=pad_id))
    n, digest = drain(dl, check)
    return time.perf_counter() - t0, n, digest


def ours_epoch(root: str, dataset: str, version: int, batch: int, workers: int,
               seed: int, check: bool = False) -> tuple[float, int, str | None]:
    t0 = time.perf_counter()
    ds = ShardStream(root, dataset, version=version, seed=seed)
    n, digest = drain(ds.loader(batch, num_workers=workers), check)
    return time.perf_counter() - t0, n, digest


class Peer:
    """One long-lived worker process of a peer in the peers venv (bench/loader_peers.py)."""

    def __init__(self, python: str, name: str, files: list[str], workdir: Path, batch: int,
                 pad_id: int):
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = {"peer": name, "files": files, "workdir": str(workdir), "batch": batch,
               "pad_id": pad_id, "collate_src": inspect.getsource(collate)}
        self.log = open(workdir / "stderr.log", "w+")  # noqa: SIM115 (closed in close())
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen([python, str(PEER_SCRIPT), json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, env=env,
                                     cwd=str(workdir))
        self.info: dict = {}
        self.error = ""

    def _read(self, prefix: str, timeout: float) -> dict:
        box: dict = {}

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith(prefix):
                    box["v"] = json.loads(line[len(prefix):])
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if "v" not in box:
            self.log.flush()
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            raise RuntimeError(f"{self.name} worker: no {prefix.strip()} "
                               f"(exit code {self.proc.poll()}): {tail}")
        return box["v"]

    def ready(self, timeout: float = 1800) -> bool:
        try:
            self.info = self._read("P6READY ", timeout)
            return True
        except Exception as e:  # the peer is reported as failed, not skipped silently
            self.error = str(e)
            return False

    def epoch(self, workers: int, seed: int, check: bool = False) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"workers": workers, "seed": seed,
                                          "check": check}) + "\n")
        self.proc.stdin.flush()
        return self._read("P6RESULT ", 1800)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def resume_times(root: str, dataset: str, version: int, files: list[str], batch: int,
                 pad_id: int) -> dict:
    """Seconds to the first batch after half an epoch: ours (state) vs plain (skip batches)."""
    full = ShardStream(root, dataset, version=version)
    it = iter(full.loader(batch))
    half = len(full) // 2 // batch
    for _ in range(half):
        next(it)
    state = full.state_dict()
    t0 = time.perf_counter()
    ds = ShardStream(root, dataset, version=version)
    ds.load_state_dict(state)
    first = next(iter(ds.loader(batch)))
    ours_s = time.perf_counter() - t0
    assert len(first["sample_ids"]) == batch
    t0 = time.perf_counter()
    dl = iter(DataLoader(PlainParquet(files), batch_size=batch, shuffle=True,
                         generator=torch.Generator().manual_seed(0),
                         collate_fn=partial(collate, pad_id=pad_id)))
    for _ in range(half):
        next(dl)
    next(dl)
    plain_s = time.perf_counter() - t0
    return {"ours_s": ours_s, "plain_skip_s": plain_s, "skipped_batches": half,
            "shards_read_after_resume": len(ds.stats.shards_read),
            "shards_total": len(ds.shard_keys)}


def subset_csv(src: Path, dst: Path, limit: int) -> Path:
    """The header and the first ``limit`` records of ``src`` (quick checks only)."""
    with open(src, newline="", encoding="utf-8") as f, \
            open(dst, "w", newline="", encoding="utf-8") as g:
        r, w = csv.reader(f), csv.writer(g)
        w.writerow(next(r))
        for i, row in enumerate(r):
            if i >= limit:
                break
            w.writerow(row)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="rounds (>= 5 for a measurement)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--csv", type=Path, default=CLEAR)
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N excerpts of the CSV (quick checks, not a measurement)")
    ap.add_argument("--peers-python", "--mds-python", dest="peers_python", default=None,
                    help="python of the throwaway peers venv (bench/peers_venv.sh) with "
                         "mosaicml-streaming and litdata; never the project's")
    args = ap.parse_args()
    if args.runs < 5 or args.limit:
        print(f"note: --runs {args.runs}" + (f", --limit {args.limit}" if args.limit else "")
              + ": a check, not a measurement (the rules ask for >= 5 rounds, all samples)")

    with tempfile.TemporaryDirectory(prefix="corpus-bench-p6-") as tmp:
        src = args.csv if not args.limit else subset_csv(args.csv, Path(tmp) / "subset.csv",
                                                          args.limit)
        lh = Lakehouse(str(Path(tmp) / "lakehouse"))
        run_import(lh, src, config=ImportConfig(
            id_col="ID", text_col="Excerpt", scores={"bt_easiness": "BT_easiness"}))
        report = build_shards(lh, config=ShardsConfig(
            dataset="p6", tokenizer="all-minilm-l6-v2", seq_len=args.seq_len,
            window="overlap", stride=args.stride, val_frac=0.0, shard_mb=1.0,
            workers=os.cpu_count() or 1))
        manifest, version = read_manifest(lh, "p6", split="train")
        files = [lh.store.uri(key_from_uri(u)) for u in manifest["shard_uri"].to_pylist()]
        pad_id = int(manifest["pad_id"][0].as_py() or 0)
        n_samples = report.samples["train"]
        size = sum(manifest["size_bytes"].to_pylist())
        print(f"{n_samples} samples, {report.tokens['train'] / 1e6:.1f} M tokens in "
              f"{len(files)} shard files ({size / 2**20:.1f} MiB)", flush=True)

        # Untimed set-up: each peer's worker converts the samples into its own format.
        peers: dict[str, Peer] = {}
        peer_info: dict[str, dict] = {}
        if args.peers_python:
            started = {name: Peer(args.peers_python, name, files, Path(tmp) / name,
                                  args.batch, pad_id) for name in PEERS}
            for name, p in started.items():
                if p.ready():
                    peers[name] = p
                    peer_info[name] = dict(p.info, errors={})
                    print(f"{name} {p.info['version']}: set-up {p.info['setup_s']:.1f} s "
                          f"(untimed): {p.info['settings']}", flush=True)
                else:
                    peer_info[name] = {"error": p.error}
                    print(f"{name}: FAILED to start: {p.error[-500:]}", flush=True)
                    p.close()

        sides: dict = {
            "plain": lambda w, seed, check=False: plain_epoch(files, args.batch, w, seed,
                                                              pad_id, check),
            "ours": lambda w, seed, check=False: ours_epoch(lh.root, "p6", version,
                                                            args.batch, w, seed, check),
        }

        def peer_side(p: Peer):
            def run(w: int, seed: int, check: bool = False) -> tuple[float, int, str | None]:
                r = p.epoch(w, seed, check)
                if "error" in r:
                    raise RuntimeError(r["error"])
                return r["s"], r["n"], r.get("digest")
            return run

        for name, p in peers.items():
            sides[name] = peer_side(p)

        timings: dict[str, dict[str, list[float]]] = {}
        failed: dict[str, dict[str, str]] = {}  # workers -> side -> error
        try:
            for workers in WORKERS:
                # Untimed: one epoch per side (warms the page cache and imports) that also
                # checks every side yields exactly the same samples.
                active, digests = [], {}
                for name, fn in sides.items():
                    try:
                        _, n, digest = fn(workers, 0, True)
                        assert n == n_samples, f"{n} samples, expected {n_samples}"
                        digests[name] = digest
                        active.append(name)
                    except Exception as e:
                        if name in ("plain", "ours"):
                            raise
                        failed.setdefault(str(workers), {})[name] = str(e)[-2000:]
                        print(f"{name} num_workers={workers}: FAILED, not timed: "
                              f"{str(e).strip().splitlines()[-1][:300]}", flush=True)
                assert len(set(digests.values())) == 1, ("sides yield different samples",
                                                        digests)
                t = timings.setdefault(str(workers), {name: [] for name in active})
                for i in range(args.runs):
                    order = active if i % 2 == 0 else active[::-1]
                    for name in order:
                        s, n, _ = sides[name](workers, i)
                        assert n == n_samples, (name, workers, n, n_samples)
                        t[name].append(s)
                    print(f"num_workers={workers} round {i + 1}/{args.runs}: " + ", ".join(
                        f"{name} {t[name][-1]:.3f} s" for name in order), flush=True)
        finally:
            for p in peers.values():
                p.close()
        for w, errs in failed.items():
            for name, err in errs.items():
                peer_info[name]["errors"][w] = err
        resume = [resume_times(lh.root, "p6", version, files, args.batch, pad_id)
                  for _ in range(args.runs)]

    result = {"samples": n_samples, "files": len(files), "bytes": size, "batch": args.batch,
              "runs": args.runs, "limit": args.limit, "timings": timings, "resume": resume,
              "peers": peer_info, "goal": GOAL,
              "versions": {"python": sys.version.split()[0], "torch": torch.__version__}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))

    print(f"\nmedian of {args.runs} round(s), one epoch of {n_samples} samples, batch "
          f"{args.batch}:")
    print(f"{'num_workers':>11}  {'side':<8} {'median s':>9} {'samples/s':>10} "
          f"{'ours/side':>9}")
    for workers in map(str, WORKERS):
        t = timings[workers]
        med = {name: statistics.median(v) for name, v in t.items()}
        for name in ("plain", "ours", *PEERS):
            if name in med:
                print(f"{workers:>11}  {name:<8} {med[name]:9.3f} "
                      f"{n_samples / med[name]:10,.0f} {med[name] / med['ours']:8.2f}x")
            elif name in failed.get(workers, {}):
                print(f"{workers:>11}  {name:<8} {'failed (see JSON peers.' + name + '.errors)'}")
            elif args.peers_python:
                print(f"{workers:>11}  {name:<8} not run (worker failed to start)")
            else:
                print(f"{workers:>11}  {name:<8} not run (no --peers-python)")
        others = {k: v for k, v in med.items() if k != "ours"}
        best = min(others, key=others.get)
        ratio = others[best] / med["ours"]
        missing = [p for p in PEERS if p not in med]
        print(f"{'':>11}  ours / best of the others ({best}): {ratio:.2f}x "
              f"(goal >= {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'}"
              + (f"; without {', '.join(missing)}" if missing else "") + ")")
    ro = statistics.median(r["ours_s"] for r in resume)
    rp = statistics.median(r["plain_skip_s"] for r in resume)
    print(f"resume at half an epoch: ours {ro * 1000:.0f} ms to the first batch "
          f"(read {resume[0]['shards_read_after_resume']} of {resume[0]['shards_total']} "
          f"shards so far), plain skip-ahead {rp * 1000:.0f} ms; raw timings in {OUT}")


if __name__ == "__main__":
    main()
