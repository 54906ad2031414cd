"""Benchmark P6 peer worker: MosaicML streaming or LitData, one long-lived process per peer.

Started by ``bench/loader.py --peers-python PATH`` in the throwaway peers virtualenv (see
``bench/peers_venv.sh``); it never imports the project. Its one argument is a JSON object::

    {"peer": "mosaic" | "litdata", "files": [shard parquet files], "workdir": DIR,
     "batch": 32, "pad_id": 0, "collate_src": "<source of train.data.collate>"}

Set-up (untimed, once): the samples of the shard files are written in the peer's own format
under ``workdir`` (MDS shards via ``MDSWriter``; LitData chunks via ``litdata.optimize``),
then one line ``P6READY {json}`` is printed. Then it reads commands, one JSON line each, on
stdin (``{"workers": N, "seed": S, "check": false}``) and answers each with one line
``P6RESULT {json}``: ``{"s": seconds, "n": samples}`` (plus ``"digest"``, the sha256 of the
sorted sample ids, when ``check``), or ``{"error": "..."}``. The timing covers what
``loader.py`` times for ours: constructing the dataset and the DataLoader, and one full
shuffled epoch through the same padding collate (``train.data.collate``, sent as source).
Other lines on stdout (library chatter) are ignored by the caller.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from functools import partial

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request in a timing

import numpy as np
import pyarrow.parquet as pq
import torch


def stub_torchvision() -> None:
    """``import streaming`` imports its (unused here) vision datasets, hence torchvision.

    PyPI's torchvision is a CUDA build that cannot load beside the CPU torch the project uses
    (``operator torchvision::nms does not exist``), so peers_venv.sh removes it; this stub
    only satisfies those imports. Nothing measured uses torchvision.
    """
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        pass
    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # for find_spec() callers
        return m

    tv, datasets = module("torchvision"), module("torchvision.datasets")
    transforms = module("torchvision.transforms")
    functional = module("torchvision.transforms.functional")
    datasets.VisionDataset = type("VisionDataset", (), {})
    datasets.CIFAR10 = type("CIFAR10", (), {})
    functional.to_tensor = None
    tv.datasets, tv.transforms, transforms.functional = datasets, transforms, functional
    sys.modules.update({"torchvision": tv, "torchvision.datasets": datasets,
                        "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def shard_samples(path: str):
    """The samples of one shard file, as ours yields them (without its ``index``)."""
    t = pq.read_table(path)
    label = "label" if "label" in t.column_names else "target"
    ids = t.column("input_ids").combine_chunks()
    off, val = ids.offsets.to_pylist(), ids.values.to_numpy()
    sid, bid, var = (t.column(c).to_pylist() for c in ("sample_id", "book_id", "variant"))
    tg = t.column(label).to_pylist()
    for i in range(t.num_rows):
        yield {"sample_id": sid[i], "book_id": bid[i], "variant": var[i],
               "input_ids": val[off[i]:off[i + 1]], "target": tg[i]}


def drain(loader, check: bool) -> tuple[int, str | None]:
    """One epoch: the same loop as loader.py's for every side."""
    if not check:
        return sum(len(b["sample_ids"]) for b in loader), None
    ids = [i for b in loader for i in b["sample_ids"]]
    return len(ids), hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


class Mosaic:
    name = "mosaic"

    def __init__(self, files: list[str], workdir: str, batch: int, collate):
        stub_torchvision()
        import streaming
        from streaming import MDSWriter

        self.version = streaming.__version__
        self.batch, self.collate = batch, collate
        self.out = os.path.join(workdir, "mds")
        cols = {"sample_id": "str", "book_id": "str", "variant": "str",
                "input_ids": "ndarray:int32", "target": "float64"}
        with MDSWriter(out=self.out, columns=cols, size_limit=4 << 20) as w:
            for f in files:
                for s in shard_samples(f):
                    w.write(s)
        self.settings = ("MDS shards of 4 MiB, uncompressed, read in place (remote=None); "
                         "StreamingDataset(local=..., shuffle=True, shuffle_seed=seed, "
                         "batch_size=batch; default shuffle_algo py1e) under "
                         "streaming.StreamingDataLoader")

    def epoch(self, workers: int, seed: int, check: bool) -> tuple[float, int, str | None]:
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()  # shared memory left by the previous epoch's instance
        t0 = time.perf_counter()
        ds = StreamingDataset(local=self.out, remote=None, shuffle=True, shuffle_seed=seed,
                              batch_size=self.batch)
        dl = StreamingDataLoader(ds, batch_size=self.batch, num_workers=workers,
                                 collate_fn=self.collate)
        n, digest = drain(dl, check)
        s = time.perf_counter() - t0
        del dl, ds
        gc.collect()
        return s, n, digest


class Lit:
    name = "litdata"

    def __init__(self, files: list[str], workdir: str, batch: int, collate):
        stub_torchvision()
        import litdata

        self.version = litdata.__version__
        self.batch, self.collate = batch, collate
        self.out = os.path.join(workdir, "litdata")
        self.cache_root = os.path.join(workdir, "litdata-cache")
        litdata.optimize(fn=shard_samples, inputs=files, output_dir=self.out,
                         chunk_bytes="4MB", num_workers=min(2, len(files)), verbose=False)
        self.settings = ("optimize() chunks of 4 MB, uncompressed, read in place; "
                         "StreamingDataset(input_dir, shuffle=True, seed=seed, a fresh "
                         "cache_dir per epoch; default item_shuffle_window 256) under "
                         "litdata.StreamingDataLoader")

    def epoch(self, workers: int, seed: int, check: bool) -> tuple[float, int, str | None]:
        from litdata import StreamingDataLoader, StreamingDataset

        shutil.rmtree(self.cache_root, ignore_errors=True)
        cache = tempfile.mkdtemp(prefix="cache-", dir=os.path.dirname(self.cache_root))
        t0 = time.perf_counter()
        ds = StreamingDataset(self.out, cache_dir=cache, shuffle=True, seed=seed)
        dl = StreamingDataLoader(ds, batch_size=self.batch, num_workers=workers,
                                 collate_fn=self.collate)
        n, digest = drain(dl, check)
        s = time.perf_counter() - t0
        del dl, ds
        gc.collect()
        shutil.rmtree(cache, ignore_errors=True)
        return s, n, digest


def main() -> None:
    cfg = json.loads(sys.argv[1])
    # The caller's collate as a module of its own, so DataLoader workers can pickle it.
    os.makedirs(cfg["workdir"], exist_ok=True)
    with open(os.path.join(cfg["workdir"], "p6_collate.py"), "w") as f:
        f.write("from __future__ import annotations\nfrom typing import Any\n"
                "import numpy as np\nimport torch\n\n\n" + cfg["collate_src"])
    sys.path.insert(0, cfg["workdir"])
    from p6_collate import collate as collate_fn

    collate = partial(collate_fn, pad_id=cfg["pad_id"])
    t0 = time.perf_counter()
    peer = {"mosaic": Mosaic, "litdata": Lit}[cfg["peer"]](
        cfg["files"], cfg["workdir"], cfg["batch"], collate)
    ready = {"version": peer.version, "setup_s": time.perf_counter() - t0,
             "settings": peer.settings, "torch": torch.__version__, "numpy": np.__version__}
    print("P6READY " + json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            s, n, digest = peer.epoch(cmd["workers"], cmd["seed"], cmd.get("check", False))
            out = {"s": s, "n": n, "digest": digest}
        except Exception:
            out = {"error": traceback.format_exc()[-3000:]}
        print("P6RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
