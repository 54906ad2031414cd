"""`--executor ray` and `--ray-address` (or CORPUS_RAY_ADDRESS) on every stage command that
maps work: the options, their help, one error line for a cluster that is not there, and the
real `corpus` entry point running stages on a two-node Ray cluster on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from corpus.cli import cli
from tests.helpers import copy_lakehouse

STAGES = [("ingest",), ("ocr",), ("mine",), ("noise",), ("shards", "build"), ("score",)]


@pytest.mark.parametrize("command", STAGES, ids=" ".join)
def test_every_stage_command_takes_the_executor_options(command):
    res = CliRunner().invoke(cli, [*command, "--help"], obj={})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--executor [local|ray]" in text and "--ray-address ADDR" in text
    assert "CORPUS_RAY_ADDRESS" in text
    examples = [line.strip() for line in res.output.splitlines() if "Example:" in line]
    assert examples and examples[0].startswith(f"Example: corpus {command[0]}")


def test_a_cluster_that_is_not_there_is_one_error_line(tmp_path):
    env = {**os.environ, "CORPUS_ROOT": str(tmp_path / "lh"),
           "CORPUS_RAY_ADDRESS": "127.0.0.1:1"}
    share = tmp_path / "share"
    share.mkdir()
    (share / "a.txt").write_text("text")
    p = subprocess.run([sys.executable, "-m", "corpus.cli", "ingest", str(share),
                        "--executor", "ray"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: Cannot reach the Ray cluster at 127.0.0.1:1")
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_stage_commands_run_on_the_cluster(small_pairs, ray_cluster, tmp_path):
    lh = copy_lakehouse(small_pairs, tmp_path / "lakehouse")
    env = {**os.environ, "CORPUS_ROOT": lh.root, "HF_HUB_OFFLINE": "1",
           "CORPUS_RAY_ADDRESS": ray_cluster.address}

    def corpus(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "corpus.cli", *args], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        # the one summary line of the stage's work: both nodes worked
        assert "[ray, 2 worker(s), 2 node(s)]" in p.stderr, p.stderr
        return p

    # the address from CORPUS_RAY_ADDRESS, then given as an option
    assert "4 book(s) mined against ocr" in corpus("mine", "--executor", "ray").stdout
    env.pop("CORPUS_RAY_ADDRESS")
    out = corpus("noise", "--seed", "1", "--executor", "ray", "--ray-address",
                 ray_cluster.address).stdout
    assert f"noisy/mined-v{lh.version('artifacts')}/1" in out
    commit = lh.history("texts", limit=1)[0]
    assert commit.operation == "noise" and commit.config["executor"]["kind"] == "ray"


def test_vacuum_removes_the_files_of_a_stopped_build(sample_lakehouse, monkeypatch):
    from train.shards import ShardWriter

    lh = sample_lakehouse
    real, calls = ShardWriter.flush, []

    def flush(self):  # the second group's files cannot be written
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real(self)

    monkeypatch.setattr(ShardWriter, "flush", flush)
    build = ["--root", lh.root, "shards", "build", "--name", "stopped", "--tokenizer",
             "all-minilm-l6-v2", "--seq-len", "64", "--window", "chunks", "--workers", "1",
             "--shard-samples", "4"]
    res = CliRunner().invoke(cli, build, obj={})
    assert res.exit_code == 2 and "nothing was committed" in res.output
    monkeypatch.undo()
    vacuum = ["--root", lh.root, "vacuum", "shards", "--retention-hours", "0"]
    listed = CliRunner().invoke(cli, vacuum, obj={})
    assert listed.exit_code == 0 and "would delete (pass --apply)" in listed.stdout
    files = [ln.strip() for ln in listed.stdout.splitlines() if "/shards/stopped/" in ln]
    assert files and all(f.endswith(".parquet") for f in files)
    done = CliRunner().invoke(cli, [*vacuum, "--apply"], obj={})
    assert done.exit_code == 0 and f"deleted {len(files)} file(s)" in done.stdout
    assert "/shards/stopped/" not in CliRunner().invoke(cli, vacuum, obj={}).stdout


def test_ocr_on_ray_started_here_recognises_what_a_local_run_does(small_share, tmp_path):
    """`corpus ocr --executor ray` without an address starts Ray on this machine and
    recognises what a local run does. It runs as a command: a Ray session started in the
    test process would outlive the test (a later `ray.init(address=...)` there then waits
    for a GCS that never answers)."""
    from catalog import Lakehouse
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr
    from tests.conftest import RAY_ENV

    lh = Lakehouse(str(tmp_path / "lakehouse"))
    run_ingest(lh, small_share, workers=1)
    sid = sorted(lh.read("scans").column("scan_id").to_pylist())[0]
    env = {k: v for k, v in os.environ.items() if k not in ("CORPUS_RAY_ADDRESS", "RAY_ADDRESS")}
    env.update(RAY_ENV, CORPUS_ROOT=str(tmp_path / "lakehouse"))
    done = subprocess.run([sys.executable, "-m", "corpus.cli", "ocr", "--executor", "ray",
                           "--workers", "2", "--scan", sid], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "[ray, 2 worker(s)" in done.stdout + done.stderr
    scan = next(s for s in lh.read("scans").to_pylist() if s["scan_id"] == sid)
    assert scan["status"] == "ocr_done"
    local = Lakehouse(str(tmp_path / "local"))
    run_ingest(local, small_share, workers=1)
    run_ocr(local, config=OcrConfig(workers=1), scan_ids=[sid])

    def texts(h):
        return {(p["page_no"], p["text"]) for p in h.read("ocr_pages").to_pylist()}
    assert len(texts(lh)) == scan["n_pages"]
    assert texts(lh) == texts(local)  # same pages, same recognition
