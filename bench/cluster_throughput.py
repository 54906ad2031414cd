"""Benchmark P9: `corpus noise` and `corpus shards build` on Ray against the local pool.

The development share multiplied ``--times`` (10) with fresh ISBNs
(bench/make_tenfold_share.py), ingested with 2 workers; the three longest scans of edited
books OCR'd and mined (the noise model); ``--setup-per-book`` (8) noisy variants of every
edited book made once, so that the shards have real work: the edited texts and those
variants, tokenised. None of that set-up is timed.

Four sides, interleaved (the order turned every round), ``--rounds`` rounds, medians:

* local: the default executor, a process pool of 2 workers;
* local x1: ``--workers 1``, the work in this process: with "local", what this machine gives
  a second process at all, without Ray (both Ray nodes share its cores). For shards it is
  no one-core figure: the tokenizer's own threads use every core in this process;
* ray x2: a Ray cluster of two nodes of 1 CPU each (``ray.cluster_utils.Cluster``, both on
  127.0.0.1), 2 Ray workers;
* ray x1: a Ray cluster of one node of 1 CPU, 1 Ray worker.

Timed: the stage's driver call end to end (``run_noise`` with ``--per-book`` variants and a
fresh seed each time; ``build_shards`` of a fresh dataset name each time, ``--shard-mb``
shards), each on a fresh copy of the set-up lakehouse, Ray workers' start-up and the commit
included; connecting this process to a cluster and copying the lakehouse are not.
Throughput = books (noise: variants) or texts (shards) per second. Goals: ray x2 >= 0.8x the
local pool, ray x2 >= 1.7x ray x1.

Run from the repository root (about 15 minutes on 2 cores with 5 rounds)::

    CORPUS_SHARED_DATA=../shared/data HF_HUB_OFFLINE=1 .venv/bin/python \\
        bench/cluster_throughput.py [--times 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _k, _v in {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
    os.environ.setdefault(_k, _v)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog import Lakehouse  # noqa: E402
from ingest.driver import run_ingest  # noqa: E402
from ingest.ocr import OcrConfig, run_ocr  # noqa: E402
from noise.generate import NoiseConfig, run_noise  # noqa: E402
from noise.mine import MineConfig, run_mine  # noqa: E402
from train.shards import ShardsConfig, build_shards  # noqa: E402


def copy_lakehouse(source: Lakehouse, dest: Path) -> Lakehouse:
    shutil.copytree(source.root, dest)
    return Lakehouse(str(dest))

OUT = Path(__file__).resolve().parent / "out" / "cluster_throughput.json"
GOAL_LOCAL = 0.8
GOAL_SCALE = 1.7


def setup(dest: Path, times: int, per_book: int) -> Lakehouse:
    """The multiplied share ingested, a noise model mined, noisy variants made (untimed)."""
    from make_tenfold_share import bench_share

    share = bench_share(None, times, dest / "share-src")
    lh = Lakehouse(str(dest / "lakehouse"))
    t0 = time.perf_counter()
    report = run_ingest(lh, share, workers=2)
    print(f"ingested {report.n_files} files in {time.perf_counter() - t0:.1f} s", flush=True)
    texts = lh.read("texts", columns=["book_id", "variant"]).to_pylist()
    edited = {t["book_id"] for t in texts if t["variant"] == "edited"}
    scans = sorted((s for s in lh.read("scans").to_pylist() if s["book_id"] in edited),
                   key=lambda s: (-(s["n_pages"] or 0), s["scan_id"]))[:3]
    run_ocr(lh, config=OcrConfig(workers=2), scan_ids=[s["scan_id"] for s in scans])
    run_mine(lh, config=MineConfig(workers=2))
    run_noise(lh, config=NoiseConfig(seed=0, per_book=per_book, workers=2))
    print(f"{len(edited)} edited books; {per_book} noisy variants each", flush=True)
    return lh


def driver_cpu() -> float:
    """CPU seconds of this process (every thread): what the driver takes from the cores."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_cluster(nodes: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    return cluster


def connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-book", type=int, default=16, help="variants per book, timed noise")
    ap.add_argument("--setup-per-book", type=int, default=8,
                    help="variants per book made once for the shards")
    ap.add_argument("--shard-mb", type=float, default=1.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="corpus-bench-p9-"))
    lh = setup(tmp, args.times, args.setup_per_book)
    av = lh.version("artifacts")
    variants = ("edited", f"noisy/mined-v{av}/[0-{args.setup_per_book - 1}]")
    clusters = {"ray x2": start_cluster(2), "ray x1": start_cluster(1)}
    sides = {"local": None, "local x1": None, "ray x2": clusters["ray x2"].address,
             "ray x1": clusters["ray x1"].address}
    timings: dict[str, dict[str, list[float]]] = {"noise": {s: [] for s in sides},
                                                  "shards": {s: [] for s in sides}}
    cpu: dict[str, dict[str, list[float]]] = {"noise": {s: [] for s in sides},
                                              "shards": {s: [] for s in sides}}
    load: list[float] = []  # the machine's 1-minute load average before each run
    work: dict[str, int] = {}
    seed = 100
    try:
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                address = sides[side]
                connect(address)
                kw = {"executor": "ray", "workers": None, "ray_address": address} \
                    if address else {"executor": "local",
                                     "workers": 1 if side == "local x1" else 2}
                seed += 1
                # every run on a fresh copy of the set-up lakehouse (untimed): the same
                # tables for every side and round
                run_lh = copy_lakehouse(lh, tmp / f"run-{r}-{side.replace(' ', '')}")
                load.append(os.getloadavg()[0])
                c0, t0 = driver_cpu(), time.perf_counter()
                nr = run_noise(run_lh, config=NoiseConfig(seed=seed, per_book=args.per_book,
                                                          **kw))
                timings["noise"][side].append(time.perf_counter() - t0)
                cpu["noise"][side].append(driver_cpu() - c0)
                work["noise"] = nr.rows
                work["noise_chars"] = nr.chars_in
                shutil.rmtree(run_lh.root)
                run_lh = copy_lakehouse(lh, tmp / f"run-{r}-{side.replace(' ', '')}")
                c0, t0 = driver_cpu(), time.perf_counter()
                sr = build_shards(run_lh, config=ShardsConfig(
                    dataset=f"p9-{side.replace(' ', '')}-{r}", tokenizer="all-minilm-l6-v2",
                    seq_len=128, window="chunks", variants=variants, shard_mb=args.shard_mb,
                    **kw))
                timings["shards"][side].append(time.perf_counter() - t0)
                cpu["shards"][side].append(driver_cpu() - c0)
                shutil.rmtree(run_lh.root)
                work["shards"] = sr.texts
                work["shards_tokens"] = sum(sr.tokens.values())
                assert sr.executor["nodes"] == (2 if side == "ray x2" else 1), sr.executor
                print(f"round {r + 1} {side}: noise {timings['noise'][side][-1]:.2f} s "
                      f"({nr.executor}), shards {timings['shards'][side][-1]:.2f} s "
                      f"({sr.executor})", flush=True)
    finally:
        connect(None)
        for c in clusters.values():
            c.shutdown()
    med = {stage: {s: statistics.median(v) for s, v in t.items()} for stage, t in
           timings.items()}
    rate = {stage: {s: work[stage] / v for s, v in m.items()} for stage, m in med.items()}
    ratios = {stage: {"ray x2 / local": rate[stage]["ray x2"] / rate[stage]["local"],
                      "ray x2 / ray x1": rate[stage]["ray x2"] / rate[stage]["ray x1"],
                      "local / local x1": rate[stage]["local"] / rate[stage]["local x1"]}
              for stage in med}
    print(f"\nwork: noise {work['noise']:,} variants of {work['noise_chars']:,} characters; "
          f"shards {work['shards']:,} texts, {work['shards_tokens']:,} tokens")
    print(f"load average before the runs: {min(load):.1f} to {max(load):.1f}")
    print(f"{'stage':<8} {'side':<8} {'median s':>9} {'per s':>10} {'driver cpu s':>13}  runs")
    for stage in med:
        for side in sides:
            runs = ", ".join(f"{x:.2f}" for x in timings[stage][side])
            print(f"{stage:<8} {side:<8} {med[stage][side]:>9.2f} {rate[stage][side]:>10.1f} "
                  f"{statistics.median(cpu[stage][side]):>13.2f}  {runs}")
    for stage, rs in ratios.items():
        a, b = rs["ray x2 / local"], rs["ray x2 / ray x1"]
        print(f"{stage}: ray x2 / local pool {a:.2f}x (goal >= {GOAL_LOCAL}x: "
              f"{'met' if a >= GOAL_LOCAL else 'NOT met'}); ray x2 / ray x1 {b:.2f}x "
              f"(goal >= {GOAL_SCALE}x: {'met' if b >= GOAL_SCALE else 'NOT met'}); "
              f"this machine's own ceiling, local pool 2 / 1 workers: "
              f"{rs['local / local x1']:.2f}x")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"args": vars(args), "work": work, "timings": timings,
                               "driver_cpu": cpu, "load": load,
                               "median": med, "per_second": rate, "ratios": ratios},
                              indent=2))


if __name__ == "__main__":
    main()
