"""The shared data rules of catalog/rules.py: variant names, current scores, current texts."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from catalog import SchemaError, spec
from catalog.rules import (
    EDITED,
    NoisyVariant,
    current_scores,
    current_values,
    match_variants,
    metric_direction,
    metric_label,
    metric_name,
    noisy_variant,
    parse_noisy,
    parse_text_ref,
    variant_family,
)


def _day(d: int) -> datetime:
    return datetime(2026, 1, d, tzinfo=UTC)


def _rows(rows: list[dict]) -> pa.Table:
    schema = spec("scores").schema
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)


def test_noisy_names_round_trip_and_group_by_recipe():
    name = noisy_variant("mined", 3, 7)
    assert name == "noisy/mined-v3/7"
    assert parse_noisy(name) == NoisyVariant("mined", 3, 7) and str(parse_noisy(name)) == name
    assert parse_noisy("ocr") is None and parse_noisy("noisy/mined/7") is None
    assert variant_family(name) == "noisy/mined-v3" and variant_family("ocr") == "ocr"
    assert match_variants(["ocr", name, EDITED, name], ["noisy/*", "edited"]) == [EDITED, name]
    assert parse_text_ref("b1") == ("b1", EDITED)
    assert parse_text_ref("b1:noisy/mined-v3/7") == ("b1", name)


def test_latest_score_wins_with_a_deterministic_tie_break():
    got = current_scores(_rows([
        {"book_id": "b", "metric": "m", "value": 1.0, "scored_at": _day(2),
         "source_file": "a.csv", "source_row": 9},
        {"book_id": "b", "metric": "m", "value": 2.0, "scored_at": _day(2),
         "source_file": "b.csv", "source_row": 1},   # same day, greater file: wins
        {"book_id": "b", "metric": "m", "value": 3.0, "scored_at": _day(1),
         "source_file": "z.csv", "source_row": 5},   # older
        {"book_id": "c", "metric": "m", "value": 5.0, "scored_at": _day(1),
         "source_file": "a.csv", "source_row": 1},
        {"book_id": "c", "metric": "m", "value": None, "scored_at": _day(3),
         "source_file": "a.csv", "source_row": 2},   # a later empty score: no value now
    ])).to_pylist()
    assert [(r["book_id"], r["value"]) for r in got] == [("b", 2.0), ("c", None)]
    assert current_values(_rows(got), "m") == {"b": 2.0}


def test_current_scores_is_the_last_of_a_full_sort():
    """Against a plain sort: the last row per key of (scored_at, source_file, source_row)."""
    rng = random.Random(4)
    rows = [{"book_id": f"b{rng.randint(0, 9)}", "metric": rng.choice("xy"),
             "value": float(i), "scored_at": _day(rng.randint(1, 3)),
             "source_file": rng.choice("pq"), "source_row": i} for i in range(200)]
    want: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: (r["scored_at"], r["source_file"], r["source_row"])):
        want[(r["book_id"], r["metric"])] = r
    got = current_scores(_rows(rows)).to_pylist()
    assert [(r["book_id"], r["metric"], r["value"]) for r in got] == \
        [(k[0], k[1], want[k]["value"]) for k in sorted(want)]


def test_current_scores_names_missing_columns():
    with pytest.raises(SchemaError, match="missing"):
        current_scores(pa.table({"book_id": ["b"]}))


def test_metric_names_say_which_way_is_easier():
    assert metric_label("bt_easiness") == "BT easiness, higher = easier"
    assert (metric_name("lexile"), metric_direction("lexile")) == ("Lexile", "higher = harder")
    assert metric_label("words_per_page") == "words per page"  # unknown: its name, no direction
    assert metric_direction("words_per_page") is None and metric_label(None) == "reading level"
