"""Benchmark P6: ShardStream samples/s vs a plain PyTorch DataLoader over the same Parquet files.

In one run, interleaved, median of ``--runs``, one epoch each, batches of ``--batch``:

* baseline: a map-style ``torch.utils.data.Dataset`` that reads the dataset's shard files
  with pyarrow (token ids kept as flat numpy arrays, as ours does) and a
  ``DataLoader(shuffle=True)`` with the same padding collate;
* ours: ``ShardStream(lakehouse, dataset, version=v).loader(batch)``: manifest read from the
  Delta table, seeded two-level shuffle, shards read lazily, same collate.

Both count construction (reading files) inside the timing. Rows for ``num_workers`` 0 and 2.
Resume: the time from constructing a stream and loading a mid-epoch state to its first
batch, against the plain loader's way to get there (iterate and drop the batches before).

MosaicML streaming, when ``--mds-python`` names the python of a separate virtualenv that has
``mosaicml-streaming`` (never the project's): the same samples are written as MDS shards and
a ``StreamingDataset`` epoch is timed in that interpreter, between our runs.

Data: the CLEAR corpus (../shared/data/clear/clear_corpus.csv) imported into a fresh local
lakehouse, shards with overlapping windows (``--seq-len`` 128, ``--stride`` 8, 1 MiB
shards before compression): ~50k samples in ~25 files.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/loader.py [--runs 5] [--mds-python /tmp/mds/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa
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


class PlainParquet(Dataset):
    """The baseline: every shard file read with pyarrow, samples by index."""

    def __init__(self, files: list[str]):
        t = pa.concat_tables(pq.read_table(f) for f in files)
        ids = t.column("input_ids").combine_chunks()
        self.offsets = ids.offsets.to_numpy()
        self.values = ids.values.to_numpy()
        self.sample_ids = t.column("sample_id").to_pylist()
        self.book_ids = t.column("book_id").to_pylist()
        self.variants = t.column("variant").to_pylist()
        self.targets = t.column(label_column(t.column_names)).to_numpy()

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        return {"sample_id": self.sample_ids[i], "book_id": self.book_ids[i],
                "variant": self.variants[i],
                "input_ids": self.values[self.offsets[i]:self.offsets[i + 1]],
                "target": float(self.targets[i])}


def plain_epoch(files: list[str], batch: int, workers: int, seed: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    ds = PlainParquet(files)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    generator=torch.Generator().manual_seed(seed),
                    collate_fn=collate)
    n = sum(len(b["sample_ids"]) for b in dl)
    return time.perf_counter() - t0, n


def ours_epoch(root: str, dataset: str, version: int, batch: int, workers: int,
               seed: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    ds = ShardStream(root, dataset, version=version, seed=seed)
    n = sum(len(b["sample_ids"]) for b in ds.loader(batch, num_workers=workers))
    return time.perf_counter() - t0, n


def resume_times(root: str, dataset: str, version: int, files: list[str], batch: int
                 ) -> dict:
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
                         generator=torch.Generator().manual_seed(0), collate_fn=collate))
    for _ in range(half):
        next(dl)
    next(dl)
    plain_s = time.perf_counter() - t0
    return {"ours_s": ours_s, "plain_skip_s": plain_s, "skipped_batches": half,
            "shards_read_after_resume": len(ds.stats.shards_read),
            "shards_total": len(ds.shard_keys)}


MDS_SCRIPT = r"""
import json, sys, time, shutil, os
import numpy as np, pyarrow.parquet as pq, pyarrow as pa, torch
from streaming import MDSWriter, StreamingDataset
from torch.utils.data import DataLoader
files, out, batch, runs = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if not os.path.exists(os.path.join(out, "index.json")):
    cols = {"sample_id": "str", "book_id": "str", "variant": "str", "input_ids": "ndarray:int32",
            "target": "float64"}
    with MDSWriter(out=out, columns=cols, size_limit=4 << 20) as w:
        for f in files:
            t = pq.read_table(f)
            ids = t.column("input_ids").combine_chunks()
            off, val = ids.offsets.to_numpy(), ids.values.to_numpy()
            sid, bid, var = (t.column(c).to_pylist() for c in ("sample_id", "book_id", "variant"))
            tg = t.column("label" if "label" in t.column_names else "target").to_numpy()
            for i in range(t.num_rows):
                w.write({"sample_id": sid[i], "book_id": bid[i], "variant": var[i],
                         "input_ids": val[off[i]:off[i + 1]], "target": float(tg[i])})
def collate(samples, pad_id=0):
    n = len(samples); width = max(len(s["input_ids"]) for s in samples)
    ids = np.full((n, width), pad_id, dtype=np.int64); mask = np.zeros((n, width), dtype=np.int64)
    for i, s in enumerate(samples):
        k = len(s["input_ids"]); ids[i, :k] = s["input_ids"]; mask[i, :k] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "targets": torch.tensor([s["target"] for s in samples], dtype=torch.float32),
            "sample_ids": [s["sample_id"] for s in samples]}
times = []
for r in range(runs):
    from streaming.base.util import clean_stale_shared_memory
    clean_stale_shared_memory()
    t0 = time.perf_counter()
    ds = StreamingDataset(local=out, shuffle=True, shuffle_seed=r, batch_size=batch)
    n = sum(len(b["sample_ids"]) for b in DataLoader(ds, batch_size=batch, collate_fn=collate,
                                                     num_workers=0))
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "samples": n}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--csv", type=Path, default=CLEAR)
    ap.add_argument("--mds-python", default=None,
                    help="python of a separate venv with mosaicml-streaming (optional)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="corpus-bench-p6-") as tmp:
        lh = Lakehouse(str(Path(tmp) / "lakehouse"))
        run_import(lh, args.csv, config=ImportConfig(
            id_col="ID", text_col="Excerpt", scores={"bt_easiness": "BT_easiness"}))
        report = build_shards(lh, config=ShardsConfig(
            dataset="p6", tokenizer="all-minilm-l6-v2", seq_len=args.seq_len,
            window="overlap", stride=args.stride, val_frac=0.0, shard_mb=1.0,
            workers=os.cpu_count() or 1))
        manifest, version = read_manifest(lh, "p6", split="train")
        files = [lh.store.uri(key_from_uri(u)) for u in manifest["shard_uri"].to_pylist()]
        n_samples = report.samples["train"]
        size = sum(manifest["size_bytes"].to_pylist())
        print(f"{n_samples} samples, {report.tokens['train'] / 1e6:.1f} M tokens in "
              f"{len(files)} shard files ({size / 2**20:.1f} MiB)")
        plain_epoch(files, args.batch, 0, 0)  # warm the page cache and imports
        ours_epoch(lh.root, "p6", version, args.batch, 0, 0)
        timings: dict[str, dict[str, list[float]]] = {}
        mds: dict = {}
        mds_dir = Path(tmp) / "mds"
        for workers in (0, 2):
            t = timings.setdefault(str(workers), {"plain": [], "ours": []})
            for i in range(args.runs):
                sides = [("plain", lambda w=workers, i=i: plain_epoch(files, args.batch, w, i)),
                         ("ours", lambda w=workers, i=i: ours_epoch(lh.root, "p6", version,
                                                                   args.batch, w, i))]
                for name, fn in (sides if i % 2 == 0 else sides[::-1]):
                    s, n = fn()
                    assert n == n_samples, (name, n, n_samples)
                    t[name].append(s)
            if workers == 0 and args.mds_python:
                p = subprocess.run([args.mds_python, "-c", MDS_SCRIPT, json.dumps(files),
                                    str(mds_dir), str(args.batch), str(args.runs)],
                                   capture_output=True, text=True, timeout=1800)
                if p.returncode == 0:
                    mds = json.loads(p.stdout.strip().splitlines()[-1])
                else:
                    mds = {"error": p.stderr[-2000:]}
        resume = [resume_times(lh.root, "p6", version, files, args.batch)
                  for _ in range(args.runs)]

    result = {"samples": n_samples, "files": len(files), "bytes": size, "batch": args.batch,
              "runs": args.runs, "timings": timings, "resume": resume, "mosaicml": mds,
              "goal": GOAL}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    for workers, t in timings.items():
        mp, mo = statistics.median(t["plain"]), statistics.median(t["ours"])
        print(f"num_workers={workers}: plain {mp:.3f} s ({n_samples / mp:,.0f} samples/s), "
              f"ours {mo:.3f} s ({n_samples / mo:,.0f} samples/s), ours/plain throughput "
              f"{mp / mo:.2f}x (goal >= {GOAL}x: {'met' if mp / mo >= GOAL else 'NOT met'})")
    if mds.get("times"):
        mm = statistics.median(mds["times"])
        mo = statistics.median(timings["0"]["ours"])
        print(f"MosaicML streaming (separate venv, num_workers=0): {mm:.3f} s "
              f"({mds['samples'] / mm:,.0f} samples/s); ours/mosaic throughput {mm / mo:.2f}x")
    elif mds:
        print("MosaicML streaming failed:", mds.get("error", "")[-500:])
    else:
        print("MosaicML streaming: not measured (no --mds-python)")
    ro = statistics.median(r["ours_s"] for r in resume)
    rp = statistics.median(r["plain_skip_s"] for r in resume)
    print(f"resume at half an epoch: ours {ro * 1000:.0f} ms to the first batch "
          f"(read {resume[0]['shards_read_after_resume']} of {resume[0]['shards_total']} "
          f"shards so far), plain skip-ahead {rp * 1000:.0f} ms; raw timings in {OUT}")


if __name__ == "__main__":
    main()
