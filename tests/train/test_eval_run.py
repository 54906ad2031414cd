"""Evaluation of a real (untrained, seeded) saved model: held-out books, every variant,
formula baselines, predictions with lineage, the report (the `corpus eval` and
`corpus score --run` commands: tests/corpus/test_train_commands.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from catalog import Lineage
from tests.helpers import evaluated_run, small_config
from train.evaluate import run_eval
from train.shards import build_shards


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


def test_eval_writes_the_held_out_section_of_the_model_card(evaluated):
    from train.model import CARD_FILE, HELD_OUT_BEGIN, HELD_OUT_END

    lh, result, *_ = evaluated
    card = lh.store.get_bytes(f"runs/r1/final/{CARD_FILE}").decode()
    assert "saved before model cards" in card  # the helper saved r1 without a card
    assert card.count(HELD_OUT_BEGIN) == 1
    section = card.split(HELD_OUT_BEGIN)[1].split(HELD_OUT_END)[0]
    for fam, entry in result.summary["variants"].items():
        m, best = entry["model"], entry["best_formula"]
        assert f"| {fam} | model | {m['n']} | {m['rmse']:.3f} | {m['mae']:.3f} |" in section
        assert f"| {fam} | {best} (best formula) | {entry[best]['n']} |" in section
        assert f"- {fam}: model RMSE {entry['model_vs_best_formula'] * 100:+.1f}% vs" in section
    assert "BT easiness (higher = easier)" in section
    assert str(result.report_dir.resolve() / "report.md") in section


def test_eval_of_shards_built_before_book_ids_asks_for_a_rebuild(sample_lakehouse):
    from catalog import ConfigError

    lh = sample_lakehouse
    build_shards(lh, config=small_config(val_frac=0.3))
    old = lh.read("shards").drop_columns(["book_ids"])  # as an older build wrote it
    version = lh.overwrite("shards", old, lineage=Lineage(operation="test-old-manifest"))
    lh.append("runs", [{"run_id": "old", "dataset": "clear", "shards_version": version,
                        "checkpoint_uri": "nowhere", "status": "finished",
                        "started_at": datetime.now(UTC), "finished_at": datetime.now(UTC)}],
              lineage=Lineage(operation="test-train"))
    with pytest.raises(ConfigError, match=r"'clear' at shards@\d+ .*corpus shards build"):
        run_eval(lh, "old")
