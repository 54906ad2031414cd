"""`corpus probe` as a user runs it (in-process): one row per layer of MiniLM, the same numbers
in JSON, and the mistakes (another backbone's tokenizer, no held-out split, a bad --layers)
as one `error:` line with exit 2. The probe itself is tested in tests/train/test_probe.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from catalog import Lakehouse
from corpus.cli import cli
from tests.helpers import import_sample, small_config
from train.shards import build_shards

FAST = ["--max-windows", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory) -> Lakehouse:
    """The sample imported; dataset ``clear`` (with a validation split) and ``all_train``
    (without one) built."""
    lh = Lakehouse(str(tmp_path_factory.mktemp("probe") / "lakehouse"))
    import_sample(lh)
    build_shards(lh, config=small_config())
    build_shards(lh, config=small_config("all_train", val_frac=0.0))
    return lh


def _probe(lh: Lakehouse, *args: str):
    return CliRunner().invoke(cli, ["--root", lh.root, "probe", *args], obj={})


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture(scope="module")
def probed(lakehouse):
    """``corpus probe --shards clear@1`` as a table and as JSON."""
    table = _probe(lakehouse, "--shards", "clear@1", *FAST)
    js = _probe(lakehouse, "--shards", "clear@1", *FAST, "--format", "json")
    return table, js


def test_the_table_has_one_row_per_minilm_layer_and_marks_the_best(probed):
    table, _ = probed
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()[:1].isdigit()]
    layers = [int(r.split("│")[1].split()[0]) for r in rows]
    assert layers == list(range(7)), table.output  # the embeddings and 6 blocks
    assert sum("<- best" in r for r in rows) == 1
    assert "clear@1" in table.output
    assert "books: 57 train / 3 held-out" in table.output


def test_json_has_the_numbers_of_the_table(probed):
    table, js = probed
    assert js.exit_code == 0, js.output
    r = json.loads(js.output)
    assert r["shards"] == "clear@1" and r["shards_version"] == 1
    assert [s["layer"] for s in r["scores"]] == list(range(7))
    rows = {int(line.split("│")[1].split()[0]): [c.strip() for c in line.split("│")[2:7]]
            for line in table.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()[:1].isdigit()}
    for s in r["scores"]:
        assert rows[s["layer"]] == [f"{s['rmse']:.3f}", f"{s['mae']:.3f}", f"{s['bias']:+.3f}",
                                    f"{s['alpha']:g}", f"{s['cv_rmse']:.3f}"]
    best = min(r["scores"], key=lambda s: s["cv_rmse"])
    assert r["best_layer"] == best["layer"]
    assert (r["n_train_books"], r["n_held_out_books"]) == (57, 3)


def test_layers_option_probes_only_those(lakehouse):
    res = _probe(lakehouse, "--shards", "clear", "--layers", "0,6", *FAST, "--format", "json")
    assert res.exit_code == 0, res.output
    assert [s["layer"] for s in json.loads(res.output)["scores"]] == [0, 6]


def test_a_backbone_of_another_tokenizer_is_one_error_line(lakehouse):
    line = _one_error_line(_probe(lakehouse, "--shards", "clear", "--backbone",
                                  "smollm2-135m", *FAST))
    assert "tokenised with 'all-minilm-l6-v2'" in line and "smollm2-135m" in line


def test_shards_without_a_validation_split_are_refused(lakehouse):
    line = _one_error_line(_probe(lakehouse, "--shards", "all_train", *FAST))
    assert "no validation split" in line and "--val-frac" in line


@pytest.mark.parametrize("args, says", [
    (["--layers", "0,x"], "layer numbers separated by commas"),
    (["--layers", "9"], "layers 0 (embeddings) to 6"),
    (["--shards", "nope"], "No shards for dataset 'nope'"),
])
def test_bad_options_are_one_error_line(lakehouse, args, says):
    base = {"--shards": "clear"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    assert says in _one_error_line(_probe(lakehouse, *flat, *FAST))
