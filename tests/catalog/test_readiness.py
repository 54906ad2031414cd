"""The "can be scored without editing" rule, in Python and in SQL, on synthetic rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from catalog import TABLES
from catalog.readiness import (
    READY_SE,
    is_ready,
    readiness_sql,
    ready_predictions,
    standard_error,
    window_stats,
)

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
RUNS = [
    {"run_id": "old", "status": "finished", "started_at": NOW - timedelta(days=2),
     "finished_at": NOW - timedelta(days=1)},
    {"run_id": "new", "status": "finished", "started_at": NOW - timedelta(hours=2),
     "finished_at": NOW - timedelta(hours=1)},
    # newer but not finished: its predictions are never judged
    {"run_id": "running", "status": "running", "started_at": NOW, "finished_at": None},
]


def _p(run, book, n, sd, *, variant="ocr", pred=0.5, at=NOW):
    return {"run_id": run, "book_id": book, "variant": variant, "target": "bt_easiness",
            "prediction": pred, "n_windows": n, "window_sd": sd, "split": "scored",
            "created_at": at}


PREDICTIONS = [
    _p("new", "ready", 9, 0.2),             # se 0.2/3 = 0.067: ready
    _p("new", "edge", 4, 0.2),              # se 0.2/2 = 0.100: ready (<=)
    _p("new", "spread", 4, 0.5),            # se 0.25: too spread
    _p("new", "one", 1, None),              # one window: no spread to judge
    _p("new", "noisy-edited", 9, 0.9, variant="edited"),  # not the raw OCR text
    _p("new", "unjudged", None, None),      # an eval row without window counts
    _p("old", "old-only", 9, 0.1),          # only the older run scored it
    _p("running", "running-only", 9, 0.1),  # only the unfinished, newer run scored it
    _p("new", "rescored", 9, 0.9, at=NOW - timedelta(minutes=5)),  # spread, then
    _p("new", "rescored", 9, 0.1),                                 # rescored: stable
]
READY = {"ready", "edge", "rescored"}


def test_window_stats_and_standard_error():
    assert window_stats([1.0]) == (1, None)
    n, sd = window_stats([1.0, 2.0, 3.0])
    assert n == 3 and sd == pytest.approx(1.0)  # sample sd (n - 1)
    assert standard_error(3, 1.0) == pytest.approx(1 / math.sqrt(3))
    assert standard_error(1, None) is None and standard_error(None, None) is None
    assert is_ready(4, 2 * READY_SE) and not is_ready(4, 2 * READY_SE + 1e-9)
    assert not is_ready(1, 0.0)


def test_ready_rows_in_python_and_sql_agree():
    got = ready_predictions(RUNS, PREDICTIONS)
    assert {b for b, _ in got} == READY
    assert got[("ready", "bt_easiness")]["std_error"] == pytest.approx(0.2 / 3)
    assert got[("rescored", "bt_easiness")]["window_sd"] == 0.1

    con = duckdb.connect(":memory:")
    con.register("runs", pa.Table.from_pylist(RUNS, schema=TABLES["runs"].schema))
    con.register("predictions",
                 pa.Table.from_pylist(PREDICTIONS, schema=TABLES["predictions"].schema))
    rows = con.execute(f"SELECT book_id, ready, std_error FROM ({readiness_sql()})").fetchall()
    by = {b: (r, se) for b, r, se in rows}
    assert {b for b, (r, _) in by.items() if r} == READY
    # judged: the newest finished run's ocr rows with window counts, once per book
    assert set(by) == {"ready", "edge", "spread", "one", "rescored"}
    assert by["one"] == (False, None)
    assert by["spread"][1] == pytest.approx(0.25)


def test_no_finished_run_means_nothing_is_ready():
    assert ready_predictions([RUNS[2]], PREDICTIONS) == {}
    assert ready_predictions([], PREDICTIONS) == {}
