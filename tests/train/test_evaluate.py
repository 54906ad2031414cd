"""Evaluation metrics against hand-computed values; formula baselines offline; the report and
its plots (checked through the matplotlib figures themselves)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from catalog import ConfigError
from train.evaluate import (
    apply_formula_baselines,
    eval_texts,
    evaluate,
    fit_formula_baselines,
    fit_linear,
    formula_scores,
    loss_figure,
    predicted_vs_true_figure,
    prediction_shift,
    regression_metrics,
    residuals_figure,
    run_history,
    summarise,
    write_report,
)


def test_metrics_equal_hand_computed_values():
    m = regression_metrics([1, 2, 3, 4], [1, 3, 2, 6])
    # errors 0, -1, 1, -2
    assert m["n"] == 4
    assert m["rmse"] == pytest.approx(math.sqrt(6 / 4))
    assert m["mae"] == pytest.approx(1.0)
    assert m["bias"] == pytest.approx(-0.5)
    # ranks 1 2 3 4 vs 1 3 2 4: rho = 1 - 6 * 2 / (4 * 15)
    assert m["spearman"] == pytest.approx(0.8)


def test_spearman_with_ties_and_constant_input():
    # tied ranks 1.5 1.5 3 vs 1 2 3: covariance 1.5, variances 1.5 and 2
    assert regression_metrics([1, 1, 2], [1, 2, 3])["spearman"] == pytest.approx(
        1.5 / math.sqrt(1.5 * 2))
    assert math.isnan(regression_metrics([5, 5, 5], [1, 2, 3])["spearman"])


def test_metrics_reject_mismatched_input():
    with pytest.raises(ConfigError, match="equally long"):
        regression_metrics([1, 2], [1])
    with pytest.raises(ConfigError):
        regression_metrics([], [])


def test_fit_linear_recovers_a_line_and_ignores_nan():
    a, b = fit_linear([0, 1, 2, 3, float("nan")], [1, 3, 5, 7, 100])
    assert (a, b) == (pytest.approx(2.0), pytest.approx(1.0))
    assert fit_linear([1, 1, 1], [2, 4, 6]) == (0.0, pytest.approx(4.0))


EASY = "The cat sat on the mat. It was warm. The dog ran to the cat. They played."
HARD = ("Notwithstanding considerable methodological heterogeneity, contemporaneous "
        "investigations substantiate the hypothesis that socioeconomic stratification "
        "systematically influences educational attainment across industrialised societies.")


def test_formulas_run_offline_and_rank_easy_below_hard():
    s = formula_scores([EASY, HARD])
    assert s["flesch_kincaid_grade"][0] < s["flesch_kincaid_grade"][1]
    assert s["flesch_reading_ease"][0] > s["flesch_reading_ease"][1]
    assert all(np.isfinite(v).all() for v in s.values())


def test_formula_baselines_fit_on_training_texts():
    texts = [EASY, HARD, EASY + " " + EASY, HARD + " " + EASY]
    target = [1.0, -2.0, 1.0, -0.5]  # BT easiness: higher = easier
    fits = fit_formula_baselines(texts, target)
    preds = apply_formula_baselines(fits, texts)
    mean_rmse = regression_metrics([np.mean(target)] * 4, target)["rmse"]
    fk = regression_metrics(preds["flesch_kincaid_grade"], target)["rmse"]
    assert fits["flesch_kincaid_grade"][0] < 0  # harder grade, lower easiness
    assert fk < mean_rmse


def test_summary_shift_and_report(tmp_path):
    rows = [
        {"book_id": "a", "variant": "edited", "prediction": 0.5, "truth": 0.4},
        {"book_id": "b", "variant": "edited", "prediction": -1.0, "truth": -1.5},
        {"book_id": "c", "variant": "edited", "prediction": 0.0, "truth": 0.2},
        {"book_id": "a", "variant": "noisy/mined-v3/1", "prediction": 0.2, "truth": 0.4},
        {"book_id": "b", "variant": "noisy/mined-v3/1", "prediction": -0.4, "truth": -1.5},
    ]
    summary = summarise(rows, {"edited": {"flesch": [0.0, 0.0, 0.0]}})
    edited = summary["variants"]["edited"]
    assert edited["best_formula"] == "flesch"
    assert edited["model"]["rmse"] < edited["flesch"]["rmse"]
    assert set(summary["variants"]) == {"edited", "noisy/mined-v3"}
    shift = prediction_shift(rows)
    assert [(s["book_id"], round(s["shift"], 6)) for s in shift] == [("a", -0.3), ("b", 0.6)]
    out = write_report(tmp_path / "report", rows=rows, summary=summary,
                       history=[{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0,
                                                                 "val_loss": 1.5}])
    rep = json.loads((out / "report.json").read_text())
    assert rep["worst"][0]["book_id"] == "b" and rep["worst"][0]["variant"].startswith("noisy")
    for png in ("predicted_vs_true.png", "residuals_by_variant.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| model |" in (out / "report.md").read_text()


def test_the_core_summarises_predictions_with_baselines():
    rows = [
        {"book_id": "a", "variant": "edited", "prediction": 0.5, "truth": 1.0},
        {"book_id": "b", "variant": "edited", "prediction": -1.0, "truth": -2.0},
        {"book_id": "a", "variant": "noisy/upper-v1/1", "prediction": 0.2, "truth": 1.0},
        {"book_id": "b", "variant": "noisy/upper-v1/2", "prediction": -0.3, "truth": -2.0},
    ]
    plain = evaluate(rows)  # no training texts: the model alone
    assert plain == {**summarise(rows), "formula_fit_texts": 0}
    assert set(plain["variants"]) == {"edited", "noisy/upper-v1"}  # seeds together
    train = [{"book_id": f"t{i}", "text": t, "truth": y}
             for i, (t, y) in enumerate([(EASY, 1.0), (HARD, -2.0), (EASY + " " + HARD, -0.5)])]
    out = evaluate(rows, texts=[EASY, HARD, EASY.upper(), HARD], train=train,
                   max_formula_train=2)
    assert out["formula_fit_texts"] == 2  # a seeded sample of the three
    assert out == evaluate(rows, texts=[EASY, HARD, EASY.upper(), HARD], train=train[::-1],
                           max_formula_train=2)  # in book order, whatever the input order
    edited = out["variants"]["edited"]
    assert edited["model"] == regression_metrics([0.5, -1.0], [1.0, -2.0])
    assert "flesch_kincaid_grade" in edited and edited["best_formula"] in edited
    with pytest.raises(ConfigError, match="texts"):
        evaluate(rows, texts=[EASY], train=train)


def test_eval_texts_picks_held_out_variants_and_edited_training_texts():
    texts = [{"book_id": b, "variant": v, "text": f"{b} {v}"}
             for b in ("a", "b", "c", "d") for v in ("edited", "ocr", "noisy/x-v1/1")]
    held, train = eval_texts(texts, validation_books={"a", "b"}, train_books={"c", "d"},
                             truth={"a": 1.0, "c": 2.0, "d": 3.0}, variants=("edited", "noisy/*"))
    assert [(t["variant"], t["book_id"]) for t in held] == [("edited", "a"),
                                                           ("noisy/x-v1/1", "a")]
    assert [(t["variant"], t["book_id"]) for t in train] == [("edited", "c"), ("edited", "d")]
    held, _ = eval_texts(texts, validation_books={"a"}, train_books=set(), truth={"a": 1.0})
    assert [t["variant"] for t in held] == ["edited", "noisy/x-v1/1", "ocr"]


def _rows(n_edited: int, n_noisy: int) -> list[dict]:
    rows = [{"book_id": f"b{i}", "variant": "edited", "prediction": 0.1 * i,
             "truth": 0.1 * i + (-1) ** i * 0.3} for i in range(n_edited)]
    rows += [{"book_id": f"b{i}", "variant": "noisy/upper-v1/1", "prediction": 0.5,
              "truth": 0.1 * i} for i in range(n_noisy)]
    return rows


def test_plot_axes_name_the_metric_and_its_direction():
    rows = _rows(12, 1)
    ax = predicted_vs_true_figure(rows, target="bt_easiness").get_axes()[0]
    assert ax.get_xlabel() == "true BT easiness (higher = easier)"
    assert ax.get_ylabel() == "predicted BT easiness (higher = easier)"
    ax = predicted_vs_true_figure(rows, target="lexile").get_axes()[0]
    assert ax.get_xlabel() == "true Lexile (higher = harder)"
    assert predicted_vs_true_figure(rows).get_axes()[0].get_xlabel() == "true reading level"
    ax = residuals_figure(rows, target="bt_easiness").get_axes()[0]
    assert ax.get_ylabel() == "predicted - true BT easiness (> 0: predicted easier)"


def test_residual_plot_gives_n_per_box_and_draws_a_lone_point_as_a_point():
    rows = _rows(12, 1)
    ax = residuals_figure(rows, target="bt_easiness").get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["edited\nn=12",
                                                            "noisy/upper-v1\nn=1"]
    points = [ln for ln in ax.get_lines() if ln.get_gid() == "points"]
    assert len(points) == 1 and list(points[0].get_xdata()) == [2]
    assert list(points[0].get_ydata()) == pytest.approx([0.5 - 0.0])
    # the box, whiskers and median stand at x=1 only: nothing but the point at x=2
    others = [ln for ln in ax.get_lines() if ln not in points]
    assert not any(1.5 < x < 2.5 for ln in others for x in ln.get_xdata())
    box = [ln for ln in others if len(ln.get_xdata())
           and all(0.5 < x < 1.5 for x in ln.get_xdata())]
    assert len(box) >= 5  # box, median, two whiskers, two caps


def test_loss_plot_title_says_what_is_drawn():
    only_train = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0}]
    ax = loss_figure(only_train).get_axes()[0]
    assert ax.get_title() == "training loss (no validation recorded)"
    both = [*only_train, {"step": 2, "val_loss": 1.5, "val_book_mae": 0.9},
            {"step": 4, "val_loss": 1.2, "val_book_mae": 0.7},
            {"step": 6, "val_loss": 1.3, "val_book_mae": 0.8}]
    fig = loss_figure(both, target="bt_easiness")
    ax, right = fig.get_axes()
    assert ax.get_title() == "training loss, validation loss and validation book MAE"
    assert ax.get_ylabel() == "loss: window MSE of BT easiness"
    assert right.get_ylabel() == "book MAE of BT easiness (lower = better)"
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert "best validation (step 4)" in labels and "validation loss" in labels
    assert loss_figure([{"step": 1}]) is None


def test_report_flags_metrics_on_few_items(tmp_path):
    rows = _rows(12, 2)
    summary = {**summarise(rows), "target": "bt_easiness"}
    out = write_report(tmp_path, rows=rows, summary=summary,
                       history=[{"step": 1, "train_loss": 1.0},
                                {"step": 1, "val_loss": 1.2, "val_book_mae": 0.8}])
    md = (out / "report.md").read_text()
    noisy = next(ln for ln in md.splitlines() if ln.startswith("| noisy/upper-v1 | model |"))
    edited = next(ln for ln in md.splitlines() if ln.startswith("| edited | model |"))
    assert "(n=2: unreliable)" in noisy and "unreliable" not in edited
    assert "fewer than 10 items (here n = 2) are unreliable" in md
    assert "BT easiness (higher = easier)" in md
    figures = json.loads((out / "report.json").read_text())["figures"]
    assert figures["predicted_vs_true.png"]["xlabel"] == "true BT easiness (higher = easier)"
    assert figures["loss.png"]["title"] == "training loss, validation loss and validation book MAE"
    assert figures["residuals_by_variant.png"]["ylabel"].startswith("predicted - true")


def test_run_history_reads_training_and_validation_rows(tmp_path):
    lines = [{"step": 1, "loss": 2.0}, {"split": "validation", "step": 1, "val_loss": 1.5,
                                        "val_book_mae": 0.9}, {"step": 2, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    hist = run_history({"metrics": json.dumps({"run_dir": str(tmp_path)})})
    assert hist == [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0},
                    {"step": 1, "val_loss": 1.5, "val_book_mae": 0.9}]
    assert run_history({"metrics": "{}"}) == []


# ---- ensembles ---------------------------------------------------------------------------
def _member(run_id, **kw):
    return {"run_id": run_id, "dataset": "clear", "shards_version": 3,
            "target": "bt_easiness", "held_out": {"a", "b", "c"}, **kw}


def test_check_ensemble_names_the_runs_and_what_differs():
    from train.evaluate import check_ensemble

    check_ensemble([_member("r1"), _member("r2", shards_version=7)])  # a rebuild, same books
    cases = [
        ([_member("r1"), _member("r1")], r"run r1 is given twice"),
        ([_member("r1"), _member("r2", dataset="other")],
         r"runs r1 and r2 cannot be evaluated together: .*different shards datasets "
         r"\(clear@3 and other@3\)"),
        ([_member("r1"), _member("r2", target="lexile")],
         r"runs r1 and r2 .*different targets \(bt_easiness and lexile\)"),
        ([_member("r1"), _member("r2"), _member("r3", held_out={"a", "b", "d"})],
         r"runs r1 and r3 .*hold out different books .*1 only in the first, 1 only in the "
         r"second, e.g. c\)"),
    ]
    for members, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            check_ensemble(members)
        assert "\n" not in str(e.value)


def test_an_ensemble_is_the_mean_of_its_members_next_to_each_of_them(tmp_path):
    from train.evaluate import ensemble_id, ensemble_rows, metrics_table

    assert ensemble_id(["r2", "r1"]) == ensemble_id(["r1", "r2"]) != ensemble_id(["r1", "r3"])
    assert ensemble_id(["r1", "r2"]).startswith("ensemble-") and len(ensemble_id(["r"])) == 19
    truth = {"a": 1.0, "b": -1.0, "c": 0.0}

    def rows(run, preds):
        return [{"run_id": run, "book_id": b, "variant": v, "prediction": p, "truth": truth[b],
                 "n_windows": 2, "window_sd": 0.1} for (b, v), p in preds.items()]

    r1 = rows("r1", {("a", "edited"): 0.5, ("b", "edited"): -0.5, ("c", "edited"): 0.5,
                     ("a", "ocr"): 0.0})
    r2 = rows("r2", {("a", "edited"): 1.5, ("b", "edited"): -2.5, ("c", "edited"): 0.1,
                     ("a", "ocr"): 1.0})
    ens = ensemble_rows("ens", {"r1": r1, "r2": r2})
    assert [(r["run_id"], r["book_id"], r["variant"], r["prediction"], r["n_windows"])
            for r in ens] == [("ens", "a", "edited", 1.0, None), ("ens", "b", "edited", -1.5,
                                                                  None),
                              ("ens", "c", "edited", pytest.approx(0.3), None),
                              ("ens", "a", "ocr", 0.5, None)]
    with pytest.raises(ConfigError, match="did not predict the same things"):
        ensemble_rows("ens", {"r1": r1, "r2": r2[:2]})
    summary = summarise(ens, {"edited": {"flesch": [0.0, 0.0, 0.0]}},
                        members={"r1": r1, "r2": r2})
    edited = summary["variants"]["edited"]
    assert edited["model"] == regression_metrics([1.0, -1.5, 0.3], [1.0, -1.0, 0.0])
    assert edited["members"]["r1"] == regression_metrics([0.5, -0.5, 0.5], [1.0, -1.0, 0.0])
    assert edited["members"]["r2"] == regression_metrics([1.5, -2.5, 0.1], [1.0, -1.0, 0.0])
    assert edited["best_formula"] == "flesch"  # a member is not a formula
    assert [ln.split(" | ")[1] for ln in metrics_table(summary["variants"])[2:]] == [
        "ensemble", "member r1", "member r2", "flesch", "ensemble", "member r1", "member r2"]
    summary.update(target="bt_easiness", members=[
        {"run_id": "r1", "backbone": "all-minilm-l6-v2", "seq_len": 64, "shards_version": 3},
        {"run_id": "r2", "backbone": "all-minilm-l6-v2", "seq_len": 32, "shards_version": 5}])
    out = write_report(tmp_path, rows=ens, summary=summary, title="ensemble ens of r1, r2")
    md = (out / "report.md").read_text()
    assert "An ensemble of 2 runs: `r1` (all-minilm-l6-v2, windows of 64 tokens" in md
    assert "| edited | member r2 | 3 |" in md and "Ensemble RMSE vs the best formula" in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["variants"]["edited"]["members"]["r1"]["n"] == 3
    assert rep["worst"][0]["book_id"] == "b"  # the ensemble's errors: b is off by 0.5
