"""`corpus demo` runs on the bundled sample, leaves a queryable lakehouse, is quiet, and a
second run on the same lakehouse changes no data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from catalog import Lakehouse
from catalog.log import QUIET_ENV, VERBOSITY_ENV
from sql import SqlSession

# The tables the demo writes. "The same data" is: the same rows (in any order), compared
# without the columns that only say when a row was written (a merge of the same row again
# renews them); everything else -- ids, texts, scores, patterns, shard files and their
# manifest, the run with its metrics and calibration, every prediction -- must be equal.
TABLES = ("files", "books", "texts", "scores", "scans", "ocr_pages", "alignments", "artifacts",
          "shards", "runs", "predictions")
WRITE_TIMES = {"created_at", "updated_at", "ingested_at", "started_at", "finished_at"}


def contents(lh: Lakehouse, name: str, version: int | None = None) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k not in WRITE_TIMES},
                             sort_keys=True, default=str)
                  for r in lh.read(name, version=version).to_pylist())


def demo(root, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in QUIET_ENV and k != VERBOSITY_ENV and not k.startswith(("AWS_", "CORPUS_"))}
    env["HF_HUB_OFFLINE"] = "1"
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "--root", str(root), "demo"],
                       env=env, capture_output=True, text=True, timeout=900, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return p


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two demos, ~4 min on 2 busy cores
def test_demo_end_to_end_and_again(tmp_path):
    root = tmp_path / "lakehouse"
    p = demo(root, tmp_path)
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
    texts = lh.read("texts", columns=["book_id", "variant"]).to_pylist()
    variants = {t["variant"] for t in texts}
    assert {"edited", "ocr"} <= variants and any(v.startswith("noisy/mined-v") for v in variants)
    # the passages were imported before the noise step: every edited book has a noisy twin
    edited = {t["book_id"] for t in texts if t["variant"] == "edited"}
    noisy = {t["book_id"] for t in texts if t["variant"].startswith("noisy/")}
    assert edited == noisy and sum(b.startswith("clear-") for b in noisy) == 60
    runs = lh.read("runs").to_pylist()
    assert [r["status"] for r in runs] == ["finished"] and runs[0]["checkpoint_uri"]
    preds = lh.read("predictions").to_pylist()
    assert preds and {x["variant"].split("/")[0] for x in preds} >= {"edited", "noisy"}
    report = re.search(r"report: (\S+report\.md)", p.stdout)
    assert report and (tmp_path / "reports").is_dir() and os.path.exists(report.group(1))
    # the scan is scored with what it is: the metric, a calibrated Lexile and a grade band
    assert re.search(r"_scan\.pdf \(scan\): -?\d+\.\d{3} bt_easiness, \d+L, grades "
                     r"(K-1|2-3|4-5|6-8|9-10|11-CCR|above CCR)\n", p.stdout), p.stdout[-2000:]
    # it ends with the command that opens the editors' desk on this lakehouse
    last = p.stdout.strip().splitlines()[-1]
    assert re.search(rf"corpus --root {re.escape(str(root))}\S* review", last), last
    # quiet: no other library's warnings, banners or weight-loading bars
    for noise in ("Warning", "kernels", "Loading weights", "OMP_NUM_THREADS", "it/s"):
        assert noise not in p.stderr, p.stderr

    before = {name: contents(lh, name) for name in TABLES}
    versions = lh.pin(*TABLES)
    report_json = json.loads((tmp_path / "reports" / runs[0]["run_id"] / "report.json")
                             .read_text())
    p = demo(root, tmp_path)
    assert "written: books +0, texts +0, scans +0, scores +0, files +0" in p.stdout
    # mining, noise, shards and training found their inputs unchanged and did nothing
    assert len(re.findall(r"^up to date: ", p.stdout, flags=re.M)) == 4, p.stdout
    assert {name: contents(lh, name) for name in TABLES} == before
    rewritten = {n for n, v in lh.pin(*TABLES).items() if v != versions[n]}
    # only merges of the same rows (the passage import) and the evaluation's predictions
    assert rewritten <= {"books", "texts", "scores", "predictions"}, rewritten
    assert lh.read("books").num_rows == 60 + 14 and lh.read("scores").num_rows == 120 + 26
    assert not any(v.startswith("noisy/mined-v2") for v in lh.read("texts").column("variant")
                   .to_pylist())
    # the same report: equal in everything but the texts version it pinned, which is newer
    # only because the passages were merged again, and holds the same data
    again = json.loads((tmp_path / "reports" / runs[0]["run_id"] / "report.json").read_text())
    pinned = report_json.pop("texts_version"), again.pop("texts_version")
    assert again == report_json
    assert contents(lh, "texts", pinned[0]) == contents(lh, "texts", pinned[1])


def test_a_demo_step_runs_again_when_what_it_reads_changed(small_pairs, tmp_path):
    from catalog import Lineage
    from corpus.demo import mined_up_to_date, noise_up_to_date, shards_up_to_date
    from noise.generate import NoiseConfig, run_noise
    from noise.mine import MineConfig, run_mine
    from tests.helpers import copy_lakehouse, import_sample, small_config
    from train.shards import build_shards

    lh = copy_lakehouse(small_pairs, tmp_path / "lakehouse")
    mine, noise, shards = MineConfig(workers=1), NoiseConfig(workers=1), small_config("d")
    assert mined_up_to_date(lh, mine) is None  # never mined
    run_mine(lh, config=mine)
    assert len(mined_up_to_date(lh, mine)) == 4
    import_sample(lh)  # edited texts without OCR: nothing mining aligns
    assert len(mined_up_to_date(lh, mine)) == 4
    assert mined_up_to_date(lh, MineConfig(workers=1, header_lines=5)) is None  # other options
    assert noise_up_to_date(lh, noise) is None
    run_noise(lh, config=noise)
    variants, n = noise_up_to_date(lh, noise)
    assert variants == [f"noisy/mined-v{lh.version('artifacts')}/0"] and n == 60 + 14
    assert noise_up_to_date(lh, NoiseConfig(workers=1, seed=1)) is None
    build_shards(lh, config=shards)
    assert shards_up_to_date(lh, shards).version == lh.version("shards")
    import_sample(lh)  # the same rows merged again: new versions, the same data
    assert shards_up_to_date(lh, shards) is not None and noise_up_to_date(lh, noise)

    # an edited text changes: noise and shards are stale, mining (it aligns that book) too
    row = next(t for t in lh.read("texts").to_pylist()
               if t["variant"] == "edited" and t["book_id"] in
               {r["book_id"] for r in lh.read("alignments").to_pylist()})
    lh.merge("texts", [{**row, "text": row["text"] + "\nA new last line."}],
             lineage=Lineage(operation="test-edit"))
    assert mined_up_to_date(lh, mine) is None
    assert noise_up_to_date(lh, noise) is None
    assert shards_up_to_date(lh, shards) is None
