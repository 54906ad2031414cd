"""Evaluation of a real (untrained, seeded) saved model: held-out books, every variant,
formula baselines, predictions with lineage, the report (the `corpus eval` and
`corpus score --run` commands: tests/corpus/test_train_commands.py)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import evaluated_run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return evaluated_run(tmp_path_factory.mktemp("eval"))


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
