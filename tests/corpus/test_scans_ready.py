"""`corpus scans --ready`: exactly the scans that can be scored without editing."""

from __future__ import annotations

import json

from click.testing import CliRunner

from corpus.cli import cli
from tests.helpers import READY_SCANS, synthetic_queue, with_windows


def test_scans_ready_lists_exactly_the_ready_scans(tmp_path):
    lh = with_windows(synthetic_queue(tmp_path / "lh", 20, runs=True))
    res = CliRunner().invoke(cli, ["--root", lh.root, "scans", "--ready", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["scan_id"] for r in rows] == READY_SCANS
    assert [(r["run_id"], r["target"], r["n_windows"]) for r in rows] == [
        ("new", "bt_easiness", 9), ("new", "bt_easiness", 16)]
    assert [round(r["std_error"], 3) for r in rows] == [0.05, 0.1]
    assert rows[0]["prediction"] == -0.70
    res = CliRunner().invoke(cli, ["--root", lh.root, "scans", "--ready", "--status", "failed",
                                   "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    # without any run or prediction the list is empty, not an error
    bare = synthetic_queue(tmp_path / "bare", 3)
    res = CliRunner().invoke(cli, ["--root", bare.root, "scans", "--ready"])
    assert res.exit_code == 0, res.output
