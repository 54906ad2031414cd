"""R1's tables from the `predictions` of `corpus eval` (bench/clear_readability.sh).

For every configuration (several seeds) and ensemble: RMSE, bias and n on the held-out
CLEAR passages (edited text and their synthetic noisy twins) and on the held-out scanned
books of the development share (edited text and real OCR), mean ± sd over seeds; the
clean → real-OCR shift of the same books; the best readability formula fit on the training
passages, on the same texts. With --books, book-level aggregations of window predictions
on the held-out multi-chapter books (mean, median, trimmed mean, length-weighted, first
window, and attention over windows: the trained head reading every window's token states at
once, :func:`train.model.predict_over_windows`), with the headings and front matter in or out.

Usage:
    python bench/clear_report.py --root LAKEHOUSE --dataset DATASET \
        --config NAME=RUN[,RUN...] [--config ...] [--ensemble NAME=ENSEMBLE_RUN_ID ...] \
        [--books RUN[,RUN...]] --out report.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog import Lakehouse
from catalog.rules import EDITED, current_values, variant_family
from train.evaluate import (
    apply_formula_baselines,
    fit_formula_baselines,
    regression_metrics,
)
from train.shards import books_by_split, read_manifest

PASSAGES, SCANNED = "CLEAR passages", "scanned books"


def kind(variant: str) -> str:
    """``edited``, ``ocr`` or ``noisy`` (every synthetic recipe and seed together)."""
    family = variant_family(variant)
    return "noisy" if family.startswith("noisy/") else family


def subset(book_id: str, scanned: set[str]) -> str | None:
    """Which held-out group a book is in: an imported CLEAR passage, a scanned share book,
    or neither (an unscanned share book, not reported)."""
    if book_id.startswith("clear-"):
        return PASSAGES
    return SCANNED if book_id in scanned else None


def metrics_by_group(rows: Sequence[dict[str, Any]], scanned: set[str]
                     ) -> dict[tuple[str, str], dict[str, float]]:
    """``{(subset, variant family): regression metrics}`` of one run's held-out rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        s = subset(r["book_id"], scanned)
        if s is not None:
            groups.setdefault((s, kind(r["variant"])), []).append(r)
    return {k: regression_metrics([r["prediction"] for r in v], [r["truth"] for r in v])
            for k, v in sorted(groups.items())}


def ocr_shift(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """On the scanned books that have both an edited text and OCR: RMSE on each (the same
    books), the RMSE penalty of OCR, the bias on OCR, and the mean clean → OCR shift."""
    by = {}
    for r in rows:
        by.setdefault(r["book_id"], {})[kind(r["variant"])] = r
    pairs = [(v[EDITED], v["ocr"]) for v in by.values() if EDITED in v and "ocr" in v]
    if len(pairs) < 2:
        return None
    e = regression_metrics([a["prediction"] for a, _ in pairs], [a["truth"] for a, _ in pairs])
    o = regression_metrics([b["prediction"] for _, b in pairs], [b["truth"] for _, b in pairs])
    shift = [b["prediction"] - a["prediction"] for a, b in pairs]
    return {"n": len(pairs), "rmse_edited": e["rmse"], "rmse_ocr": o["rmse"],
            "penalty": o["rmse"] - e["rmse"], "bias_edited": e["bias"], "bias_ocr": o["bias"],
            "mean_shift": statistics.fmean(shift)}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(ms: tuple[float, float], n_seeds: int) -> str:
    m, sd = ms
    return f"{m:.3f} ± {sd:.3f}" if n_seeds > 1 else f"{m:.3f}"


# ---- book-level aggregation ------------------------------------------------------------------

HEADING = re.compile(r"^\s*(chapter|part|book|section)\b.{0,40}$", re.IGNORECASE)
FRONT = re.compile(r"copyright|\(c\)|©|\bisbn\b|all rights reserved|printed in|published by"
                   r"|^by\b", re.IGNORECASE)


def strip_front(text: str) -> str:
    """The text without headings and front matter: chapter headings, title-page and
    copyright lines (copyright, ISBN, "all rights reserved", "printed in", "by ..."), and
    lines of at most six words (titles, author lines, running headers, page numbers; a
    short line of prose goes too, a small loss for this comparison)."""
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if s and (HEADING.match(s) or FRONT.search(s) or len(s.split()) <= 6):
            continue
        keep.append(line)
    return "\n".join(keep)


def aggregate(preds: Sequence[float], lengths: Sequence[int]) -> dict[str, float]:
    """The book prediction from its window predictions, five ways."""
    srt = sorted(preds)
    k = int(len(srt) * 0.1)
    trimmed = srt[k:len(srt) - k] if len(srt) - 2 * k > 0 else srt
    return {"mean": statistics.fmean(preds), "median": statistics.median(preds),
            "trimmed 10%": statistics.fmean(trimmed),
            "length-weighted": sum(p * n for p, n in zip(preds, lengths, strict=True))
            / max(1, sum(lengths)),
            "first window": preds[0]}


def book_aggregations(lh: Lakehouse, runs: Sequence[str], books: set[str], truth: dict,
                      texts: list[dict[str, Any]]) -> dict[str, Any]:
    """RMSE per aggregation, per variant, with front matter in or out, for the ensemble of
    ``runs`` (each window predicted by every run, then averaged) on multi-window books."""
    from train.backbones import load_tokenizer
    from train.evaluate import fetch_model, find_run, run_seq_len
    from train.model import load_model, predict_over_windows, predict_windows

    chosen = [t for t in texts if t["book_id"] in books]
    members = []
    for run_id in runs:
        run = find_run(lh, run_id)
        model = load_model(fetch_model(lh, run["checkpoint_uri"]))
        members.append((model, load_tokenizer(model.cfg.backbone), run_seq_len(run) or 320))
    out: dict[str, Any] = {}
    for front in ("in", "out"):
        for t in chosen:
            text = t["text"] if front == "in" else strip_front(t["text"])
            per_member = [predict_windows([text], model=m, tokenizer=tok, seq_len=sl)[0]
                          for m, tok, sl in members]
            n = min(len(p) for p in per_member)
            preds = [statistics.fmean(p[i] for p in per_member) for i in range(n)]
            tok = members[0][1]
            lengths = [len(x) for x in tok([text], truncation=True, max_length=members[0][2],
                                           return_overflowing_tokens=True)["input_ids"]][:n]
            joint = statistics.fmean(
                predict_over_windows([text], model=m, tokenizer=tok_, seq_len=sl)[0]
                for m, tok_, sl in members)
            for name, value in {**aggregate(preds, lengths),
                                "attention over windows": joint}.items():
                key = f"{kind(t['variant'])}, front matter {front}, {name}"
                out.setdefault(key, []).append((value, truth[t["book_id"]]))
    return {k: {**regression_metrics([p for p, _ in v], [y for _, y in v])}
            for k, v in sorted(out.items())}


# ---- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--dataset", required=True, help="The shards dataset the runs trained on.")
    ap.add_argument("--config", action="append", default=[], metavar="NAME=RUN[,RUN...]")
    ap.add_argument("--ensemble", action="append", default=[], metavar="NAME=RUN_ID")
    ap.add_argument("--books", default="", metavar="RUN[,RUN...]",
                    help="Book-level aggregations with the ensemble of these runs.")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lh = Lakehouse(args.root)
    scanned = {r["book_id"] for r in lh.read("scans", columns=["book_id"]).to_pylist()
               if r["book_id"]}
    preds = lh.read("predictions").to_pylist()

    def rows_of(run_id: str) -> list[dict[str, Any]]:
        return [r for r in preds if r["run_id"] == run_id and r["split"] == "validation"]

    report: dict[str, Any] = {"configs": {}, "ensembles": {}}
    table = ["| configuration | seeds | " + " | ".join(
        f"{s}, {f}: RMSE | bias" for s, f in ((PASSAGES, EDITED), (PASSAGES, "noisy"),
                                              (SCANNED, EDITED), (SCANNED, "ocr"))) + " |"]
    table.append("|---|---:|" + "---:|---:|" * 4)
    groups = ((PASSAGES, EDITED), (PASSAGES, "noisy"), (SCANNED, EDITED), (SCANNED, "ocr"))
    ns: dict[tuple[str, str], int] = {}
    for section, specs in (("configs", args.config), ("ensembles", args.ensemble)):
        for spec in specs:
            name, _, ids = spec.partition("=")
            runs = [x for x in ids.split(",") if x]
            per = [metrics_by_group(rows_of(r), scanned) for r in runs]
            shifts = [ocr_shift([r for r in rows_of(x) if r["book_id"] in scanned])
                      for x in runs]
            entry: dict[str, Any] = {"runs": runs, "groups": {}}
            cells = []
            for g in groups:
                rm = mean_sd([p[g]["rmse"] for p in per if g in p])
                bi = mean_sd([p[g]["bias"] for p in per if g in p])
                n = next((p[g]["n"] for p in per if g in p), 0)
                ns[g] = n
                entry["groups"][" / ".join(g)] = {"rmse": rm, "bias": bi, "n": n}
                cells.append(f"{fmt(rm, len(runs))} | {fmt(bi, len(runs))}" if n else "– | –")
            ok = [s for s in shifts if s]
            entry["ocr_shift"] = {k: mean_sd([s[k] for s in ok]) for k in ok[0]} if ok else None
            report[section][name] = entry
            table.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    # the best formula on the same texts, fit on the training passages' edited text
    manifest, _ = read_manifest(lh, args.dataset)
    splits = books_by_split(manifest, dataset=args.dataset)
    scores_version = manifest.column("scores_version")[0].as_py()
    truth = current_values(lh.read("scores", version=scores_version), "bt_easiness")
    texts = lh.read("texts", columns=["book_id", "variant", "text"]).to_pylist()
    train = [t for t in texts if t["book_id"] in splits["train"] and t["variant"] == EDITED]
    fits = fit_formula_baselines([t["text"] for t in train],
                                 [truth[t["book_id"]] for t in train])
    held = [t for t in texts if t["book_id"] in splits["validation"]
            and subset(t["book_id"], scanned) and t["book_id"] in truth]
    formula_cells = []
    report["formulas"] = {}
    for g in groups:
        ts = [t for t in held if (subset(t["book_id"], scanned), kind(t["variant"]))
              == g]
        if not ts:
            formula_cells.append("– | –")
            continue
        y = [truth[t["book_id"]] for t in ts]
        best = min(((name, regression_metrics(list(p), y))
                    for name, p in apply_formula_baselines(fits, [t["text"] for t in ts]
                                                           ).items()),
                   key=lambda x: x[1]["rmse"])
        report["formulas"][" / ".join(g)] = {"formula": best[0], **best[1]}
        formula_cells.append(f"{best[1]['rmse']:.3f} ({best[0]}) | {best[1]['bias']:+.3f}")
    table.append("| best formula (fit on the training passages) | | "
                 + " | ".join(formula_cells) + " |")
    table.append("| n | | " + " | ".join(f"{ns.get(g, 0)} |" for g in groups) + " |")
    if args.books:
        multi = {t["book_id"] for t in texts if t["book_id"] in splits["validation"]
                 and t["variant"] == EDITED and t["text"].count("Chapter ") >= 2
                 and t["book_id"] in truth}
        ids = {t["book_id"] for t in texts if t["book_id"] in multi}
        report["books"] = {"n_books": len(ids), "runs": args.books.split(","),
                           "aggregations": book_aggregations(
                               lh, args.books.split(","), ids, truth,
                               [t for t in texts if t["book_id"] in ids
                                and kind(t["variant"]) in (EDITED, "ocr")])}
    report["table"] = table
    Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    print("\n".join(table))
    if "books" in report:
        print(f"\nbook level, {report['books']['n_books']} held-out multi-chapter books:")
        for k, m in report["books"]["aggregations"].items():
            print(f"  {k}: RMSE {m['rmse']:.3f}, bias {m['bias']:+.3f}, n {m['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
