"""`corpus demo` runs on the bundled sample and leaves a queryable lakehouse."""

from __future__ import annotations

import os
import subprocess
import sys

from catalog import Lakehouse
from sql import SqlSession


def test_demo_end_to_end(tmp_path):
    root = tmp_path / "lakehouse"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CORPUS_"))}
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "--root", str(root), "demo"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "60 passages, 120 scores, 0 rows rejected" in p.stdout
    assert "38 files: 1 duplicate, 26 ok, 6 quarantined, 5 superseded" in p.stdout
    lh = Lakehouse(str(root))
    with SqlSession(lh) as s:
        n = s.query("SELECT count(DISTINCT book_id) AS n FROM scores "
                    "WHERE metric = 'bt_easiness'").column("n")[0].as_py()
    assert n == 60 + 13  # passages, and the sample share's scored books
    assert lh.lineage("scores").commits[0].operation == "import"
    # running it again is safe: same data, no duplicates
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "--root", str(root), "demo"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "written: books +0, texts +0, scans +0, scores +0, files +0" in p.stdout
    assert lh.read("books").num_rows == 60 + 14 and lh.read("scores").num_rows == 120 + 26
