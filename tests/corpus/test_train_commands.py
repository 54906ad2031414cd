"""The train stage's commands as a user runs them: `corpus shards build/list/show` (a real
subprocess), `corpus train` (and `--plan`), `corpus eval` and `corpus score --run`
(in-process). The stage's own logic is tested in tests/train/."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog import Lakehouse
from corpus.cli import cli
from tests.helpers import TOKENIZER, evaluated_run, import_sample, run_steps, small_config
from train.shards import build_shards, read_manifest


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory) -> Lakehouse:
    """The sample imported and dataset ``clear`` built (``small_config``), for this module."""
    lh = Lakehouse(str(tmp_path_factory.mktemp("recipe") / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config())
    return lh


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An untrained seeded model saved as run ``r1`` of the sample and evaluated."""
    return evaluated_run(tmp_path_factory.mktemp("eval"))


# ---- corpus shards -------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_shards_build_list_show(sample_lakehouse):
    env = {"CORPUS_ROOT": sample_lakehouse.root, "HF_HUB_OFFLINE": "1",
           "PATH": str(Path(sys.executable).parent)}
    cmd = [sys.executable, "-m", "corpus.cli"]
    p = subprocess.run([*cmd, "shards", "build", "--name", "cli", "--tokenizer", TOKENIZER,
                        "--seq-len", "128", "--window", "overlap", "--stride", "32",
                        "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "dataset cli = shards@" in p.stdout and "train:" in p.stdout
    p = subprocess.run([*cmd, "shards", "show", "cli", "--format", "csv"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = list(csv.DictReader(io.StringIO(p.stdout)))
    manifest, _ = read_manifest(sample_lakehouse, "cli")
    assert [r["sha256"] for r in got] == manifest["sha256"].to_pylist()
    p = subprocess.run([*cmd, "shards", "list", "--format", "csv"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and '"cli","train"' in p.stdout
    p = subprocess.run([*cmd, "shards", "build", "--name", "x", "--tokenizer", "gpt-17"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr


# ---- corpus train ----------------------------------------------------------------------------
def test_corpus_train_plan_command(tmp_path):
    args = ["--root", str(tmp_path / "lh"), "train", "--plan", "--backbone", "all-minilm-l6-v2",
            "--seq-len", "128", "--batch", "8", "--device", "cpu", "--device-mem", "0.15",
            "--books", "1000", "--tokens-per-book", "4096", "--tokens-per-s", "2048",
            "--gpus", "2", "--price", "3", "--format", "json"]
    res = CliRunner().invoke(cli, args, obj={})
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["config"]["dtype"] == "float32"
    assert 0.15 < report["memory_gib"]["peak"] < 0.5 and report["fits"] is False
    # training with BERT's own dropout keeps attention probabilities and masks: more memory
    with_dropout = json.loads(CliRunner().invoke(cli, [*args, "--dropout", "0.1"],
                                                 obj={}).output)
    assert with_dropout["memory_gib"]["peak"] > report["memory_gib"]["peak"] * 1.1
    assert report["cost"]["tokens"] == 4096 * 1000
    text = CliRunner().invoke(cli, [*args[:-2], "--device-mem", "16"], obj={})
    assert "fits in 16 GiB" in text.output and "GPU-h" in text.output
    missing = CliRunner().invoke(cli, ["--root", str(tmp_path / "lh"), "train"], obj={})
    assert missing.exit_code == 2 and "needs --shards" in missing.output


@pytest.mark.slow
def test_corpus_train_command(lakehouse, tmp_path, capfd):
    res = CliRunner().invoke(cli, [
        "--root", lakehouse.root, "train", "--shards", f"clear@{lakehouse.version('shards')}",
        "--backbone", "all-minilm-l6-v2", "--head", "dense", "--lora-r", "4", "--batch", "4",
        "--grad-accum", "2", "--max-steps", "3", "--nproc", "1", "--max-restarts", "0",
        "--eval-every", "2", "--early-stop", "5", "--tensorboard",
        "--run-dir", str(tmp_path / "cli-run")], obj={})
    assert res.exit_code == 0, res.output
    assert "finished after 1 attempt(s), 3 steps" in res.output
    # the ranks (torchrun's console) report each step and are as quiet as the call: no
    # INFO records, which go to each rank's own log instead
    console = "".join(capfd.readouterr())
    assert "step 3/3 loss" in console and "validation at step 2" in console, console
    assert " INFO " not in console and "joined the gloo group" not in console, console
    assert "joined the gloo group" in (tmp_path / "cli-run" / "logs" / "attempt-0" /
                                       "rank-0.info.log").read_text()
    cfg = json.loads((tmp_path / "cli-run" / "config.json").read_text())
    assert cfg["grad_accum"] == 2 and cfg["model"]["lora_r"] == 4 and cfg["seq_len"] == 64
    # no dropout unless asked (the cause of R1's bias), and the head reads standardised units
    assert cfg["model"]["dropout"] == 0.0 and cfg["standardize"] is True
    assert (cfg["eval_every"], cfg["early_stop"], cfg["tensorboard"]) == (2, 5, True)
    result = json.loads((tmp_path / "cli-run" / "result.json").read_text())
    assert f"saved the best model: step {result['best_step']}" in res.output
    assert result["validations"] == 2  # steps 2 and 3 (the end)
    assert list((tmp_path / "cli-run" / "tensorboard").glob("events.out.tfevents.*"))
    # the run's model is a calibrated copy of its saved checkpoint (see train.calibrate)
    assert (Path(result["model"]) / "README.md").exists()
    assert Path(result["model"]).name == "final" and result["calibration"]["windows"] > 0
    assert json.loads((Path(result["model"]) / "calibration.json").read_text()) == \
        result["calibration"]
    assert "Its output is then shifted by" in (Path(result["model"]) / "README.md").read_text()
    # each step trained batch x grad_accum samples
    steps = run_steps(tmp_path / "cli-run")
    assert [len(steps[k][0]) for k in (1, 2, 3)] == [8, 8, 8]
    # the saved model says what it predicts and which run made it, also to score --model
    target = lakehouse.read("shards").column("target")[0].as_py()
    meta = json.loads((Path(result["model"]) / "meta.json").read_text())
    assert (meta["target"], meta["run_id"]) == (target, "cli-run")
    book = lakehouse.read("texts").column("book_id")[0].as_py()
    res = CliRunner().invoke(cli, ["--root", lakehouse.root, "score", book, "--model",
                                   result["model"], "--format", "json"], obj={})
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.splitlines()[0])
    assert (row["metric"], row["run"]) == (target, "cli-run")
    # shards tokenised for another backbone are refused before anything starts
    bad = CliRunner().invoke(cli, ["--root", lakehouse.root, "train", "--shards", "clear",
                                   "--backbone", "smollm2-135m"], obj={})
    assert bad.exit_code == 2 and "were tokenised with" in bad.output


def test_corpus_train_refuses_options_that_cannot_work(lakehouse, sample_lakehouse,
                                                      monkeypatch):
    base = ["train", "--shards", "clear", "--max-steps", "1", "--nproc", "1"]
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the extra were not installed
    res = CliRunner().invoke(cli, ["--root", lakehouse.root, *base, "--tensorboard"], obj={})
    assert res.exit_code == 2 and res.output.startswith("error: --tensorboard needs the "
                                                        "tensorboard package")
    assert "Traceback" not in res.output and "pip install 'corpus[tensorboard]'" in res.output
    build_shards(sample_lakehouse, config=small_config(val_frac=0.0))
    res = CliRunner().invoke(cli, ["--root", sample_lakehouse.root, *base, "--early-stop", "2"],
                             obj={})
    assert res.exit_code == 2 and "--early-stop watches the validation split" in res.output
    # windows longer than the backbone's positions: refused before any rank starts
    build_shards(sample_lakehouse, config=small_config("long", seq_len=600))
    res = CliRunner().invoke(cli, ["--root", sample_lakehouse.root, "train", "--shards", "long",
                                   "--backbone", "all-minilm-l6-v2",
                                   "--max-steps", "1", "--nproc", "1"], obj={})
    assert res.exit_code == 2 and "position limit of 512" in res.output, res.output
    assert "long@" in res.output and "Traceback" not in res.output
    for bad in (["--eval-every", "0"], ["--early-stop", "0"]):
        res = CliRunner().invoke(cli, ["--root", lakehouse.root, *base, *bad], obj={})
        assert res.exit_code == 2, bad


def test_corpus_train_help_names_the_new_options():
    res = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for opt in ("--eval-every N", "--early-stop PATIENCE", "--tensorboard"):
        assert opt in res.output
    assert "Example: corpus train --shards clear" in res.output


# ---- corpus eval, corpus score --run -------------------------------------------------------
def test_cli_eval_and_score_by_run(evaluated, tmp_path):
    lh, *_ = evaluated
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "r1", "--variants", "edited",
                                   "--out", str(tmp_path / "rep"), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["variants"]) == {"edited"}
    # the re-eval replaced the model card's held-out section, it did not add one
    card = lh.store.get_bytes("runs/r1/final/README.md").decode()
    assert card.count("## Held-out evaluation") == 1
    assert "| edited | model |" in card and "| noisy/upper | model |" not in card
    book = lh.read("predictions").to_pylist()[0]
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", f"{book['book_id']}:"
                                   f"{book['variant']}", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.splitlines()[0])
    assert row["prediction"] == pytest.approx(book["prediction"], abs=1e-5)
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "nope"])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_shards_build_holds_out_books_listed_in_a_file(sample_lakehouse, tmp_path):
    """--hold-out @FILE reads ids or patterns one per line; a file it cannot read is one
    error line."""
    listed = tmp_path / "held.txt"
    listed.write_text("# held out\nclear-1*\n\n")
    lh = sample_lakehouse
    r = CliRunner().invoke(cli, ["--root", lh.root, "shards", "build", "--name", "held",
                                 "--tokenizer", "all-minilm-l6-v2", "--seq-len", "64",
                                 "--hold-out", f"@{listed}", "--workers", "1"])
    assert r.exit_code == 0, r.output
    from train.shards import books_by_split

    val = books_by_split(read_manifest(lh, "held")[0], dataset="held")["validation"]
    everyone = {b["book_id"] for b in lh.read("books").to_pylist()}
    assert {b for b in everyone if b.startswith("clear-1")} <= val
    r = CliRunner().invoke(cli, ["--root", lh.root, "shards", "build", "--name", "held",
                                 "--tokenizer", "all-minilm-l6-v2", "--hold-out",
                                 f"@{tmp_path / 'missing.txt'}"])
    assert r.exit_code == 2 and "error: --hold-out @" in r.output, r.output
    assert "Traceback" not in r.output


def test_train_refuses_full_with_lora_and_a_missing_layer(tmp_path):
    runner = CliRunner()
    root = str(tmp_path / "lh")
    lh = Lakehouse(root)
    import_sample(lh)
    build_shards(lh, config=small_config())
    r = runner.invoke(cli, ["--root", root, "train", "--shards", "clear", "--full",
                             "--lora-r", "4"])
    assert r.exit_code == 2 and "error:" in r.output and "--lora-r 0" in r.output, r.output
    assert "Traceback" not in r.output
    r = runner.invoke(cli, ["--root", root, "train", "--shards", "clear", "--layer", "9"])
    assert r.exit_code == 2 and "has 6 layers" in r.output, r.output
    assert "Traceback" not in r.output


def test_calibrate_an_older_run_leaves_no_mean_residual_on_its_training_windows(tmp_path):
    """`corpus calibrate RUN` on a run trained before calibration: a calibrated copy, the
    run pointing to it; the model's mean residual on the training windows is then zero (it
    was the recorded offset before). A second call leaves the run as it is."""
    import torch

    from train.calibrate import calibration_of
    from train.data import ShardStream
    from train.evaluate import fetch_model, find_run
    from train.model import load_model

    lh = evaluated_run(tmp_path)[0]
    before = find_run(lh, "r1")

    def residual(uri: str) -> float:
        model = load_model(fetch_model(lh, uri)).eval()
        stream = ShardStream(lh, "clear", version=before["shards_version"], split="train",
                             rank=0, world_size=1, shuffle=False)
        with torch.no_grad():
            rows = [(p, t) for b in stream.loader(16) for p, t in zip(
                model(b["input_ids"], b["attention_mask"]).tolist(), b["targets"].tolist(),
                strict=True)]
        return sum(p - t for p, t in rows) / len(rows)

    res = CliRunner().invoke(cli, ["--root", lh.root, "calibrate", "r1"], obj={})
    assert res.exit_code == 0, res.output
    after = find_run(lh, "r1")
    cal = json.loads(after["metrics"])["calibration"]
    assert after["checkpoint_uri"].rstrip("/").endswith("runs/r1/calibrated")
    assert calibration_of(fetch_model(lh, after["checkpoint_uri"])) == cal
    assert calibration_of(fetch_model(lh, before["checkpoint_uri"])) is None  # kept as it was
    assert f"r1: output shifted by {-cal['offset']:+.4f}" in res.output
    # every training window of the small sample was used: the offset is its mean residual
    assert abs(cal["offset"]) > 0.05
    assert residual(before["checkpoint_uri"]) == pytest.approx(cal["offset"], abs=1e-4)
    assert residual(after["checkpoint_uri"]) == pytest.approx(0.0, abs=1e-4)
    again = CliRunner().invoke(cli, ["--root", lh.root, "calibrate", "r1"], obj={})
    assert again.exit_code == 0 and "calibrated already" in again.output
    assert find_run(lh, "r1")["checkpoint_uri"] == after["checkpoint_uri"]
    missing = CliRunner().invoke(cli, ["--root", lh.root, "calibrate", "nope"], obj={})
    assert missing.exit_code == 2 and missing.output.startswith("error:"), missing.output
