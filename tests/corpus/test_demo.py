"""`corpus demo` runs on the bundled sample and leaves a queryable lakehouse."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from catalog import Lakehouse
from sql import SqlSession


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    root = tmp_path / "lakehouse"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CORPUS_"))}
    env["HF_HUB_OFFLINE"] = "1"
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "--root", str(root), "demo"],
                       env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "60 passages, 120 scores, 0 rows rejected" in p.stdout
    assert "38 files: 1 duplicate, 26 ok, 6 quarantined, 5 superseded" in p.stdout
    lh = Lakehouse(str(root))
    with SqlSession(lh) as s:
        n = s.query("SELECT count(DISTINCT book_id) AS n FROM scores "
                    "WHERE metric = 'bt_easiness'").column("n")[0].as_py()
    assert n == 60 + 13  # passages, and the sample share's scored books
    assert lh.lineage("scores").commits[0].operation == "import"
    # every later stage ran and left its tables: mined patterns, noisy variants, shards,
    # a finished run, predictions and a report on disk
    kinds = set(lh.read("artifacts").column("kind").to_pylist())
    assert {"front_matter", "running_header", "page_number", "hyphenation"} <= kinds
    variants = set(lh.read("texts").column("variant").to_pylist())
    assert {"edited", "ocr"} <= variants and any(v.startswith("noisy/mined-v") for v in variants)
    runs = lh.read("runs").to_pylist()
    assert [r["status"] for r in runs] == ["finished"] and runs[0]["checkpoint_uri"]
    preds = lh.read("predictions").to_pylist()
    assert preds and {x["variant"].split("/")[0] for x in preds} >= {"edited", "noisy"}
    report = re.search(r"report: (\S+report\.md)", p.stdout)
    assert report and (tmp_path / "reports").is_dir() and os.path.exists(report.group(1))
    assert re.search(r"_scan\.pdf \(scan\): -?\d+\.\d{3}", p.stdout), p.stdout[-2000:]
    # it ends with the command that opens the editors' desk on this lakehouse
    last = p.stdout.strip().splitlines()[-1]
    assert re.search(rf"corpus --root {re.escape(str(root))}\S* review", last), last
    # running it again is safe: same data, no duplicates
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "--root", str(root), "demo"],
                       env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "written: books +0, texts +0, scans +0, scores +0, files +0" in p.stdout
    assert lh.read("books").num_rows == 60 + 14 and lh.read("scores").num_rows == 120 + 26
