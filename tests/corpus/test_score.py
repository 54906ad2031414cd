"""`corpus score`: files, a scan and catalog books give the same values as the catalog path."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from catalog import Lakehouse
from corpus.cli import cli
from corpus.score import iter_items
from ingest.driver import run_ingest
from ingest.evolve import add_hostile_entries
from ingest.ocr import OcrConfig, run_ocr


@pytest.fixture(scope="module")
def scored_setup(small_share, tmp_path_factory):
    """The bundled share ingested and OCR'd, and a (untrained, seeded) saved model: score
    equality does not need a good model, only the same text reaching the same model."""
    from train.model import ModelConfig, build_model, save_model

    tmp = tmp_path_factory.mktemp("score")
    lh = Lakehouse(str(tmp / "lakehouse"))
    run_ingest(lh, small_share, workers=2)
    run_ocr(lh, config=OcrConfig(workers=2))
    model = build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=4), seed=0)
    folder = save_model(model, tmp / "model")
    return lh, folder


def _score(lh: Lakehouse, folder, *args: str) -> tuple[int, list[dict]]:
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", *args, "--model", str(folder),
                                   "--seq-len", "128", "--format", "json"])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.exit_code, rows


@pytest.mark.slow
def test_files_and_a_scan_score_like_their_catalog_books(scored_setup, small_share, tmp_path):
    lh, folder = scored_setup
    books = {b["book_id"]: b for b in lh.read("books").to_pylist()}
    scans = lh.read("scans").to_pylist()
    single = {b["sources"][0].rsplit(".", 1)[-1]: b for b in books.values()
              if len(b["sources"]) == 1}
    txt, epub = single["txt"], single["epub"]
    scan = next(s for s in scans if s["source"].endswith(".pdf") and s["book_id"])
    pdf = tmp_path / "scan.pdf"  # a copy outside the share: scored from the file alone
    shutil.copy(small_share / scan["source"], pdf)
    code, rows = _score(
        lh, folder, str(small_share / txt["sources"][0]), str(small_share / epub["sources"][0]),
        str(pdf), txt["book_id"], epub["book_id"], f"{scan['book_id']}:ocr")
    assert code == 0, rows
    assert [r["source"] for r in rows] == ["txt", "epub", "scan", "catalog:edited",
                                           "catalog:edited", "catalog:ocr"]
    p = [r["prediction"] for r in rows]
    assert p[0] == pytest.approx(p[3], abs=1e-5)
    assert p[1] == pytest.approx(p[4], abs=1e-5)
    assert p[2] == pytest.approx(p[5], abs=1e-5)
    assert len(set(round(x, 4) for x in p[:3])) == 3  # different texts, different scores


def test_bad_inputs_are_rows_with_reasons_and_the_rest_is_scored(scored_setup, tmp_path):
    lh, folder = scored_setup
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat. It was a sunny day.\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    code, rows = _score(lh, folder, str(good), str(empty), "9999999999999",
                        "9781466172319:nope")
    assert code == 1
    by = {r["name"].rsplit("/", 1)[-1]: r for r in rows}
    assert by["good.txt"]["prediction"] is not None and by["good.txt"]["error"] is None
    assert "empty" in by["empty.txt"]["error"]
    assert "neither a file nor a book" in by["9999999999999"]["error"]
    assert "no 'nope' text" in by["9781466172319:nope"]["error"]


def test_a_folder_is_expanded_and_streamed(scored_setup, tmp_path):
    lh, folder = scored_setup
    for i in range(5):
        (tmp_path / "books" / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "books" / f"sub{i % 2}" / f"b{i}.txt").write_text(
            "Short sentence. " * (i + 1))
    (tmp_path / "books" / "notes.xyz").write_text("ignored")
    code, rows = _score(lh, folder, str(tmp_path / "books"), "--batch", "2")
    assert code == 0
    assert len(rows) == 5 and all(r["source"] == "txt" for r in rows)


def test_no_model_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(cli, ["--root", str(tmp_path / "lh"), "score", "x.txt"])
    assert res.exit_code == 2 and "no trained model" in res.output


def test_predict_windows_mean_is_predict(scored_setup):
    from train.backbones import load_tokenizer
    from train.model import load_model, predict, predict_windows

    lh, folder = scored_setup
    texts = [t["text"] for t in lh.read("texts", columns=["text"]).to_pylist()[:3]]
    texts.append("A short one.")
    model = load_model(folder)
    tok = load_tokenizer(model.cfg.backbone)
    windows = predict_windows(texts, model=model, tokenizer=tok, seq_len=128, batch_size=5)
    means = predict(texts, model=model, tokenizer=tok, seq_len=128, batch_size=5)
    assert [len(w) >= 1 for w in windows] == [True] * len(texts)
    assert max(len(w) for w in windows) >= 2 and len(windows[-1]) == 1
    assert means == pytest.approx([sum(w) / len(w) for w in windows], abs=1e-12)


def _finished_run(lh: Lakehouse, folder, run_id: str) -> None:
    """A finished run whose checkpoint is the fixture's model, trained on a dataset whose
    target is bt_easiness (as `corpus train` would have recorded it)."""
    from datetime import UTC, datetime

    from catalog import Lineage

    test = Lineage(operation="test")
    v = lh.append("shards", [{"dataset": "d", "shard_uri": "x", "split": "train",
                              "target": "bt_easiness"}], lineage=test)
    now = datetime.now(UTC)
    lh.append("runs", [{"run_id": run_id, "dataset": "d", "shards_version": v,
                        "config": json.dumps({"seq_len": 128}), "checkpoint_uri": str(folder),
                        "status": "finished", "started_at": now, "finished_at": now}],
              lineage=test)


def test_score_save_writes_predictions_with_windows_and_lineage(scored_setup, tmp_path):
    lh, folder = scored_setup
    _finished_run(lh, folder, "r-save")
    ocr = sorted({t["book_id"] for t in lh.read("texts", columns=["book_id", "variant"])
                  .to_pylist() if t["variant"] == "ocr"})
    assert ocr
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat. It was a sunny day.\n")
    refs = [f"{b}:ocr" for b in ocr]
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", *refs, str(good), "--run",
                                   "r-save", "--save", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(out) == len(refs) + 1 and all(r["n_windows"] >= 1 for r in out)
    saved = {(p["book_id"], p["variant"]): p for p in lh.read("predictions").to_pylist()
             if p["run_id"] == "r-save"}
    assert set(saved) == {(b, "ocr") for b in ocr}  # the file is scored, not saved
    for r in out[:-1]:
        p = saved[(r["name"].split(":")[0], "ocr")]
        assert (p["target"], p["split"]) == ("bt_easiness", "scored")
        assert p["prediction"] == pytest.approx(r["prediction"])
        assert p["n_windows"] == r["n_windows"]
        assert (p["window_sd"] is None) == (p["n_windows"] == 1)
    assert any(p["n_windows"] >= 2 and p["window_sd"] > 0 for p in saved.values())
    last = lh.history("predictions")[0]
    assert last.operation == "score" and last.config == {"run_id": "r-save"}
    assert last.inputs == {"runs": lh.version("runs"), "texts": lh.version("texts")}
    # scored again: the rows are replaced, not duplicated
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", refs[0], "--run", "r-save",
                                   "--save", "--format", "json"])
    assert res.exit_code == 0, res.output
    again = [p for p in lh.read("predictions").to_pylist() if p["run_id"] == "r-save"]
    assert len(again) == len(refs)
    # end to end: `corpus scans --ready` lists the scans whose saved rows pass the rule
    from catalog.readiness import ready_predictions

    ready_books = {b for b, _ in ready_predictions(lh.read("runs").to_pylist(),
                                                   lh.read("predictions").to_pylist())}
    res = CliRunner().invoke(cli, ["--root", lh.root, "scans", "--ready", "--format", "json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert sorted(s["scan_id"] for s in lh.read("scans").to_pylist()
                  if s["book_id"] in ready_books) == sorted(r["scan_id"] for r in listed)
    assert all(r["run_id"] == "r-save" and r["n_windows"] >= 2 for r in listed)
    # --save needs a run: with --model it is refused before any work
    res = CliRunner().invoke(cli, ["--root", lh.root, "score", refs[0], "--model", str(folder),
                                   "--save"])
    assert res.exit_code == 2 and "--save" in res.output


@pytest.mark.timeout(60)
def test_score_reports_pipes_and_unreadable_files_as_error_rows(tmp_path):
    hostile = add_hostile_entries(tmp_path)
    fifo = next(p for p, why in hostile.items() if why == "named pipe")
    items = list(iter_items([str(tmp_path / fifo), str(tmp_path / "Editorial")],
                            lakehouse=None))
    pipes = [i for i in items if i.name == str(tmp_path / fifo)]
    assert len(pipes) == 2  # named, and found in the folder: an error row each time
    assert all("not a regular file" in i.error and i.text is None for i in pipes), pipes
