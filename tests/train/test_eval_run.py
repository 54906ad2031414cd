"""corpus eval on a real (untrained, seeded) saved model: held-out books, every variant,
formula baselines, predictions with lineage, the report; and corpus score --run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from catalog import Lineage
from corpus.cli import cli
from tests.train.conftest import import_sample, small_config
from train.evaluate import EvalConfig, run_eval
from train.shards import build_shards


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from catalog import Lakehouse
    from train.backbones import load_tokenizer
    from train.model import ModelConfig, build_model, predict, save_model

    tmp = tmp_path_factory.mktemp("eval")
    lh = Lakehouse(str(tmp / "lakehouse"))
    import_sample(lh)
    edited = lh.read("texts").to_pylist()
    noisy = [{**t, "variant": "noisy/upper/1", "text": t["text"].upper(),
              "derived_from": f"{t['book_id']}:edited"} for t in edited]
    lh.append("texts", noisy, lineage=Lineage(operation="test-noise"))
    build_shards(lh, config=small_config(val_frac=0.3, variants=("edited",)))
    model = build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=2), seed=0)
    folder = save_model(model, tmp / "model")
    for f in folder.iterdir():
        lh.store.put_file(f"runs/r1/final/{f.name}", f)
    lh.append("runs", [{
        "run_id": "r1", "dataset": "clear", "shards_version": lh.version("shards"),
        "backbone": "all-minilm-l6-v2", "head": "attention", "config": json.dumps({
            "seq_len": 64}), "metrics": "{}", "checkpoint_uri": lh.store.uri("runs/r1/final"),
        "status": "finished", "started_at": datetime.now(UTC), "finished_at": datetime.now(UTC),
    }], lineage=Lineage(operation="test-train"))
    result = run_eval(lh, "r1", config=EvalConfig(out=str(tmp / "report")))
    direct = {t["book_id"]: t["text"] for t in noisy}
    return lh, result, model, load_tokenizer("all-minilm-l6-v2"), direct, predict


def test_every_held_out_book_on_every_variant(evaluated):
    lh, result, model, tok, noisy, predict = evaluated
    preds = lh.read("predictions").to_pylist()
    assert len(preds) == result.n_predictions
    variants = {p["variant"] for p in preds}
    assert variants == {"edited", "noisy/upper/1"}
    books = {p["book_id"] for p in preds}
    assert len(preds) == 2 * len(books) and 3 <= len(books) < 60
    # truth is the CSV's BT_easiness; prediction is the model's own on that text
    import csv

    from ingest.sample import sample_passages

    with open(sample_passages(), newline="") as f:
        bt = {f"clear-{r['ID']}": float(r["BT_easiness"]) for r in csv.DictReader(f)}
    one = next(p for p in preds if p["variant"] == "noisy/upper/1")
    assert one["truth"] == pytest.approx(bt[one["book_id"]])
    again = predict([noisy[one["book_id"]]], model=model, tokenizer=tok, seq_len=64)[0]
    assert one["prediction"] == pytest.approx(again, abs=1e-5)
    # window counts and spread kept for the readiness rule (sample sd, none for one window)
    assert all(p["n_windows"] >= 1 and (p["window_sd"] is None) == (p["n_windows"] == 1)
               for p in preds)
    c = lh.history("predictions", limit=1)[0]
    assert c.operation == "eval" and set(c.inputs) == {"runs", "shards", "texts", "scores"}


def test_report_has_baselines_shift_and_plots(evaluated):
    _, result, *_ = evaluated
    s = result.summary
    edited = s["variants"]["edited"]
    assert {"model", "flesch_kincaid_grade", "dale_chall"} <= set(edited)
    assert edited["best_formula"] in edited
    assert s["formula_fit_texts"] > 10
    rep = json.loads((result.report_dir / "report.json").read_text())
    assert len(rep["shift"]) == edited["model"]["n"]
    assert (result.report_dir / "predicted_vs_true.png").exists()
    assert "noisy/upper" in (result.report_dir / "report.md").read_text()


def test_cli_eval_and_score_by_run(evaluated, tmp_path):
    lh, *_ = evaluated
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "r1", "--variants", "edited",
                                   "--out", str(tmp_path / "rep"), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["variants"]) == {"edited"}
    book = lh.read("predictions").to_pylist()[0]
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", f"{book['book_id']}:"
                                   f"{book['variant']}", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.splitlines()[0])
    assert row["prediction"] == pytest.approx(book["prediction"], abs=1e-5)
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "nope"])
    assert res.exit_code == 2 and "no run 'nope'" in res.output
