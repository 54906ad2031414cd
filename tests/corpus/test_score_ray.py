"""`corpus score --executor ray` on a Ray cluster of two nodes on 127.0.0.1: the rows of a
local run (the same texts reach the same model), bad inputs still rows with reasons."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from corpus.cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from train.model import ModelConfig, build_model, save_model

    model = build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=4), seed=0)
    return save_model(model, tmp_path_factory.mktemp("score_ray") / "model")


def _rows(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_score_on_ray_equals_local(small_pairs, model_folder, ray_cluster, small_share,
                                   tmp_path):
    books = sorted({t["book_id"] for t in small_pairs.read("texts").to_pylist()
                    if t["variant"] == "ocr"})
    bad = tmp_path / "broken.docx"
    bad.write_bytes(b"PK\x03\x04 not really a docx")
    inputs = [f"{books[0]}:ocr", f"{books[1]}:edited", str(bad), "9780000000000:ocr",
              *(str(p) for p in sorted((small_share / "Editorial").rglob("*.txt"))[:2])]
    common = ["--root", small_pairs.root, "score", *inputs, "--model", str(model_folder),
              "--seq-len", "128", "--batch", "2", "--format", "json"]
    local = CliRunner().invoke(cli, common, obj={})
    ray = CliRunner().invoke(cli, [*common, "--executor", "ray", "--ray-address",
                                   ray_cluster.address], obj={})
    assert local.exit_code == ray.exit_code == 1  # two inputs could not be read
    a, b = _rows(local), _rows(ray)
    assert [r["name"] for r in b] == [r["name"] for r in a] == inputs  # input order
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if k not in ("prediction", "window_sd")} == \
            {k: v for k, v in y.items() if k not in ("prediction", "window_sd")}
        if x["prediction"] is not None:
            assert y["prediction"] == pytest.approx(x["prediction"], abs=1e-5)
    assert sum(r["error"] is not None for r in b) == 2
    # the summary line: both nodes did work
    assert "[ray, 2 worker(s), 2 node(s)]" in ray.stderr, ray.stderr


def test_an_ensemble_scores_on_ray_as_here(small_pairs, model_folder, ray_cluster, tmp_path):
    from train.model import ModelConfig, build_model, save_model

    other = save_model(build_model(ModelConfig(backbone="all-minilm-l6-v2", head="dense",
                                               lora_r=0), seed=1), tmp_path / "other")
    books = sorted(f"{t['book_id']}:{t['variant']}"
                   for t in small_pairs.read("texts", columns=["book_id", "variant"])
                   .to_pylist())[:3]
    common = ["--root", small_pairs.root, "score", *books, "--model", str(model_folder),
              "--model", str(other), "--seq-len", "128", "--batch", "2", "--format", "json"]
    local = _rows(CliRunner().invoke(cli, common, obj={}))
    ray = _rows(CliRunner().invoke(cli, [*common, "--executor", "ray", "--ray-address",
                                         ray_cluster.address], obj={}))
    assert [r["name"] for r in ray] == [r["name"] for r in local] == books
    for x, y in zip(local, ray, strict=True):
        assert x["error"] is None and y["error"] is None
        assert y["members"] == pytest.approx(x["members"], abs=1e-5)
        assert y["prediction"] == pytest.approx(x["prediction"], abs=1e-5)
        assert x["prediction"] == pytest.approx(sum(x["members"].values()) / 2, abs=1e-12)
