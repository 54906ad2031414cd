"""Concurrent commits from separate processes: nothing lost, on local and S3 roots."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

WRITER = textwrap.dedent("""
    import sys, time
    from datetime import datetime, timezone
    from catalog import Lakehouse, Lineage
    who, mode, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    lh = Lakehouse()
    lh.open("flags")  # warm up imports and the log before the start line
    while time.time() < start_at:
        time.sleep(0.005)
    for i in range(n):
        row = {"flag_id": [f"{who}-{i}" if mode == "append" else f"{who}-{i % 2}"],
               "scan_id": ["s"], "flag": ["ok"], "editor": [who],
               "created_at": [datetime.now(timezone.utc)]}
        lin = Lineage(operation=f"{mode}-{who}")
        if mode == "append":
            lh.append("flags", row, lineage=lin)
        elif mode == "merge" or (mode == "mixed" and int(who[1:]) % 2):
            lh.merge("flags", row, lineage=lin)
        else:  # an upsert of a few keys: an overwrite whose predicate lists them
            lh.upsert("flags", row, lineage=lin)
""")


def _race(env, mode: str, writers: int, each: int) -> None:
    start_at = time.time() + 6  # after every process has imported deltalake
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, f"w{k}", mode, str(each), str(start_at)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(writers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["append", "merge", "upsert", "mixed"])
def test_concurrent_writers_lose_no_commit(lakehouse, root_env, mode):
    lakehouse.create("flags")
    writers, each = 3, 4
    _race(root_env, mode, writers, each)
    rows = lakehouse.read("flags").column("flag_id").to_pylist()
    ids = set(rows)
    assert len(rows) == len(ids), "a key written twice"
    history = lakehouse.history("flags")
    writes = [c for c in history if c.operation != "create"]
    if mode == "append":
        assert ids == {f"w{k}-{i}" for k in range(writers) for i in range(each)}
    else:
        # each writer upserts 2 keys twice (merges, overwrites listing the keys, or both at
        # once): every key present once, every commit in the log
        assert ids == {f"w{k}-{i}" for k in range(writers) for i in range(2)}
    assert len(writes) == writers * each
    assert sorted(c.version for c in history) == list(range(writers * each + 1))
    assert {c.operation for c in writes} == {f"{mode}-w{k}" for k in range(writers)}
