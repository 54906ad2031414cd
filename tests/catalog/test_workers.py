"""Process pools whose workers die with their parent (a real pool, a real SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.proctree import assert_no_orphans, kill_when

# A driver whose two pool workers are busy for a minute: killed, they must go too.
DRIVER = """
import time
from catalog.workers import process_pool

def init(tag):
    import os
    os.environ["TAG"] = tag

def work(i):
    import os, time
    assert os.environ["TAG"] == "ready"
    time.sleep(60)

with process_pool(2, initializer=init, initargs=("ready",)) as pool:
    list(pool.map(work, range(4)))
"""


def test_workers_die_with_their_killed_parent(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = kill_when([sys.executable, "-c", DRIVER], env, min_children=2, timeout=60,
                       log=tmp_path / "driver.log")
    assert len(killed.children) == 2
    assert_no_orphans(killed, grace=5)


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    # die_with_parent(P) in a process whose parent is not P: the parent died before the
    # death signal was armed, so it exits instead of running on as an orphan
    code = ("import os; from catalog.workers import die_with_parent; "
            "die_with_parent(os.getppid() + 1); print('still here')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "still here" not in p.stdout
    ok = subprocess.run([sys.executable, "-c", code.replace(" + 1", "")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "still here" in ok.stdout
