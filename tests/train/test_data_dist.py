"""ShardStream under a real process group: 2 gloo processes on CPU (127.0.0.1, a free port).

Each process joins the group through train.dist.init_distributed (started by torchrun, or by
torch.multiprocessing.spawn with the variables torchrun sets: RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), builds its stream with rank and world size taken from the group, and the ranks
exchange what they saw with all_gather_object.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.helpers import import_sample, small_config
from train.data import ShardStream
from train.shards import build_shards

BATCH = 4
STEPS = 6
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, root: str, out: str, plan: dict) -> None:
    """One rank started by mp.spawn: set what torchrun would set, then run the body."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "HF_HUB_OFFLINE": "1"})
    _body(root, out, plan)


def _body(root: str, out: str, plan: dict) -> None:
    """One rank: join the group, do the plan, rank 0 writes what every rank saw."""
    import torch.distributed as tdist

    from train import dist

    info = dist.init_distributed()
    rank, world = info.rank, info.world_size
    assert world == int(os.environ["WORLD_SIZE"]) == 2
    assert info.device == "cpu" and dist.world_size() == world and dist.rank() == rank
    result: dict = {}
    try:
        # A full epoch on both ranks: gathered, it must be every sample once.
        ds = ShardStream(root, "clear", version=plan["version"], seed=plan["seed"],
                         block_shards=2)
        assert (ds.rank, ds.world_size) == (rank, world)  # taken from the group
        mine = [s["sample_id"] for s in ds]
        gathered: list = [None] * world
        tdist.all_gather_object(gathered, mine)
        result["epoch0"] = gathered
        # Epoch 1 (or a resumed one): STEPS lockstep steps through the loader, then the state.
        ds.set_epoch(1)
        if plan.get("state"):
            ds.load_state_dict(plan["state"])
        seen = []
        if plan.get("to_end"):
            seen = [sid for b in ds.loader(BATCH) for sid in b["sample_ids"]]
        else:
            for i, b in enumerate(ds.loader(BATCH)):
                seen += b["sample_ids"]
                if i + 1 == STEPS:
                    break
        states: list = [None] * world
        tdist.all_gather_object(states, ds.state_dict())
        seen_all: list = [None] * world
        tdist.all_gather_object(seen_all, seen)
        result.update(states=states, seen=seen_all)
        dist.barrier()
    finally:
        dist.cleanup()
    if rank == 0:
        Path(out).write_text(json.dumps(result))


def _torchrun(root: str, tmp: Path, plan: dict) -> dict:
    """The same body under the real launcher: torchrun, 2 processes, gloo on 127.0.0.1."""
    out = tmp / f"result-torchrun-{len(list(tmp.iterdir()))}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
         "--master-addr=127.0.0.1", f"--master-port={_free_port()}", __file__, root, str(out),
         json.dumps(plan)],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


def _spawn(world: int, root: str, tmp: Path, plan: dict) -> dict:
    out = tmp / f"result-{world}-{len(list(tmp.iterdir()))}.json"
    mp.spawn(_run, args=(world, _free_port(), root, str(out), plan), nprocs=world, join=True)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_gloo_ranks_epoch_and_resume_across_world_sizes(tmp_path):
    from catalog import Lakehouse

    lh = Lakehouse(str(tmp_path / "lakehouse"))
    import_sample(lh)
    version = build_shards(lh, config=small_config()).version
    ids_all = sorted(s["sample_id"] for s in ShardStream(lh, "clear", shuffle=False))
    plan = {"version": version, "seed": 11}
    runs = tmp_path / "runs"
    runs.mkdir()

    # 2 ranks: an epoch is every sample exactly once; then stop after STEPS steps.
    a = _spawn(2, lh.root, runs, plan)
    r0, r1 = a["epoch0"]
    assert not set(r0) & set(r1) and sorted(r0 + r1) == ids_all
    assert a["states"][0] == a["states"][1]  # every rank holds the same state
    state = a["states"][0]
    assert state["consumed"] == 2 * BATCH * STEPS and state["epoch"] == 1
    seen = [s for r in a["seen"] for s in r]

    # 2 -> 1: resume in one process; the union is the whole epoch, no repeats.
    one = ShardStream(lh, "clear", version=version, seed=11, block_shards=2)
    one.load_state_dict(state)
    rest1 = [s["sample_id"] for s in one]
    assert not set(rest1) & set(seen) and sorted(seen + rest1) == ids_all

    # 2 -> 2: resume on two ranks again.
    b = _spawn(2, lh.root, runs, {**plan, "state": state, "to_end": True})
    rest2 = [s for r in b["seen"] for s in r]
    assert len(rest2) == len(set(rest2)) and sorted(seen + rest2) == ids_all
    assert sorted(rest2) == sorted(rest1)

    # 1 -> 2: one process stops after 7 steps, two ranks under torchrun finish the epoch.
    solo = ShardStream(lh, "clear", version=version, seed=11, block_shards=2, epoch=1)
    head = []
    for i, batch in enumerate(solo.loader(BATCH)):
        head += batch["sample_ids"]
        if i == 6:
            break
    c = _torchrun(lh.root, runs, {**plan, "state": solo.state_dict(), "to_end": True})
    tail = [s for r in c["seen"] for s in r]
    assert not set(head) & set(tail) and sorted(head + tail) == ids_all
    assert c["states"][0]["consumed"] == c["states"][1]["consumed"] == len(ids_all)


def test_a_process_without_torchrun_is_a_world_of_one(monkeypatch):
    from catalog import ConfigError
    from train import dist

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = dist.init_distributed()
    assert info == dist.DistInfo(0, 1, 0, "cpu") and info.is_main
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    dist.barrier()  # no group: nothing to wait for
    dist.cleanup()
    with pytest.raises(ConfigError, match="backend"):
        dist.init_distributed("mpi")
    monkeypatch.setenv("RANK", "one")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK"):
        dist.init_distributed()
    with pytest.raises(ConfigError, match="rank"):
        dist.DistInfo(rank=2, world_size=2)


def test_print0_prints_once(capsys):
    from train import dist

    dist.print0("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"


if __name__ == "__main__":  # one rank under torchrun (see _torchrun)
    _body(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
