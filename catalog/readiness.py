"""Which raw scans "can be scored without editing": one rule for the CLI and the review desk.

The rule: a scan is *ready* when the newest finished training run has a prediction for its
book's ``ocr`` text made over ``n_windows >= 2`` windows whose predictions agree, i.e. the
standard error of their mean, ``window_sd / sqrt(n_windows)``, is at most
:data:`READY_SE` = 0.10 (in the target's units, BT easiness here).

Why 0.10: the model's held-out RMSE is about 0.56 BT-easiness units (BENCHMARKS R1: 0.562).
An extra, independent error of 0.10 on a scan's score raises it to
``sqrt(0.56**2 + 0.10**2) = 0.569``, less than 2% worse, so such a scan's score needs no
editor first. A single window gives no spread to judge: it is never ready.

``window_sd`` is the sample standard deviation of the window predictions (``n - 1`` in the
denominator), written to ``predictions`` by ``corpus score --save``. The rule exists twice,
as Python over rows (:func:`ready_predictions`) and as SQL (:func:`readiness_sql`), and
tests check that both say the same.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from catalog.rules import OCR

READY_SE = 0.10  # largest standard error of the mean window prediction for a ready scan
MIN_WINDOWS = 2  # one window has no spread to judge
READY_VARIANT = OCR  # the raw OCR text is what "as is" means

# The newest finished run (the one whose predictions the desk shows).
NEWEST_RUN_SQL = ("SELECT run_id FROM runs WHERE status = 'finished' AND finished_at IS NOT "
                  "NULL ORDER BY finished_at DESC, run_id DESC LIMIT 1")

# The rule over a row with n_windows and window_sd (null when either is null: not ready).
READY_CONDITION = (f"(n_windows >= {MIN_WINDOWS} AND "
                   f"window_sd / sqrt(n_windows) <= {READY_SE!r})")


def window_stats(preds: Sequence[float]) -> tuple[int, float | None]:
    """``(n_windows, window_sd)`` of one text's window predictions (sd None for one window)."""
    n = len(preds)
    return n, (statistics.stdev(preds) if n >= 2 else None)


def standard_error(n_windows: int | None, window_sd: float | None) -> float | None:
    """Standard error of the mean window prediction, or None when it cannot be judged."""
    if not n_windows or n_windows < MIN_WINDOWS or window_sd is None:
        return None
    return window_sd / math.sqrt(n_windows)


def is_ready(n_windows: int | None, window_sd: float | None) -> bool:
    """The rule for one prediction: at least two windows and a standard error <= READY_SE."""
    se = standard_error(n_windows, window_sd)
    return se is not None and se <= READY_SE


def newest_finished_run(runs: Iterable[Mapping[str, Any]]) -> str | None:
    """The run id :data:`NEWEST_RUN_SQL` picks, over ``runs`` rows."""
    done = [r for r in runs if r.get("status") == "finished" and r.get("finished_at")]
    if not done:
        return None
    return max(done, key=lambda r: (r["finished_at"], r["run_id"]))["run_id"]


def ready_predictions(runs: Iterable[Mapping[str, Any]],
                      predictions: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict]:
    """The ready books, ``{(book_id, target): prediction row with std_error}``.

    Only the newest finished run's ``ocr`` predictions with ``n_windows`` count; of several
    for one book and target (scored twice) the newest ``created_at`` is judged.
    """
    run_id = newest_finished_run(runs)
    if run_id is None:
        return {}
    latest: dict[tuple[str, str], dict] = {}
    for p in predictions:
        if (p.get("run_id") != run_id or p.get("variant") != READY_VARIANT
                or p.get("n_windows") is None):
            continue
        key = (p["book_id"], p.get("target"))
        old = latest.get(key)
        if old is None or (p.get("created_at") is not None
                           and (old.get("created_at") is None
                                or p["created_at"] > old["created_at"])):
            latest[key] = dict(p)
    return {k: {**p, "std_error": standard_error(p["n_windows"], p.get("window_sd"))}
            for k, p in latest.items() if is_ready(p["n_windows"], p.get("window_sd"))}


def readiness_sql(*, runs: str = "runs", predictions: str = "predictions") -> str:
    """A SELECT over the two tables (or views) giving, per book and target, the newest
    finished run's ``ocr`` prediction judged by the rule: ``book_id, run_id, target,
    prediction, n_windows, window_sd, std_error, ready`` (ready is never null)."""
    return f"""
SELECT book_id, run_id, target, prediction, n_windows, window_sd,
       CASE WHEN n_windows >= {MIN_WINDOWS} THEN window_sd / sqrt(n_windows) END AS std_error,
       COALESCE({READY_CONDITION}, false) AS ready
FROM (
    SELECT p.*, row_number() OVER (PARTITION BY book_id, target
                                   ORDER BY created_at DESC NULLS LAST) AS _rn
    FROM {predictions} p
    WHERE variant = '{READY_VARIANT}' AND n_windows IS NOT NULL
      AND run_id = ({NEWEST_RUN_SQL.replace("FROM runs", f"FROM {runs}")})
) WHERE _rn = 1
"""
