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


def test_rows_say_which_metric_and_run(scored_setup, tmp_path):
    import csv
    import io

    lh, folder = scored_setup
    _finished_run(lh, folder, "r-meta")
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat. It was a sunny day.\n")
    base = ["--root", lh.root, "score", str(good), "9999999999999"]
    res = CliRunner().invoke(cli, [*base, "--run", "r-meta", "--format", "json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 1 and len(rows) == 2  # the unknown book is an error row
    assert [(r["metric"], r["run"]) for r in rows] == [("bt_easiness", "r-meta")] * 2
    assert list(rows[0]) == ["name", "source", "metric", "run", "n_chars", "prediction",
                             "n_windows", "window_sd", "error"]
    res = CliRunner().invoke(cli, [*base, "--run", "r-meta", "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["metric"], r["run"]) for r in table] == [("bt_easiness", "r-meta")] * 2
    # a model folder that does not say what it predicts: metric and run are null
    code, rows = _score(lh, folder, str(good))
    assert code == 0 and (rows[0]["metric"], rows[0]["run"]) == (None, None)
    # one whose checkpoint metadata records its target: that metric, still no run
    marked = tmp_path / "marked"
    shutil.copytree(folder, marked)
    (marked / "meta.json").write_text(json.dumps({"step": 3, "target": "lexile"}))
    code, rows = _score(lh, marked, str(good))
    assert code == 0 and (rows[0]["metric"], rows[0]["run"]) == ("lexile", None)


# ---- --grade: BT easiness -> Lexile (isotonic, the run's training books) -> grade band ------

def test_grade_bands_follow_the_ccss_table():
    from corpus.score import grade_band

    cases = {0: "K-1", 419: "K-1", 420: "2-3", 779: "2-3", 781: "4-5", 967: "4-5",
             968: "6-8", 1117: "6-8", 1118: "9-10", 1259: "9-10", 1260: "11-CCR",
             1385: "11-CCR", 1386: "above CCR", 2000: "above CCR"}
    assert {x: grade_band(x) for x in cases} == cases


def test_isotonic_fit_is_monotone_least_squares_and_flat_outside():
    from corpus.score import GradeCalibration, fit_grade_calibration, isotonic_fit

    # decreasing fit: the violating pair (3 then 3.5) is pooled to 3.25
    kx, ky = isotonic_fit([1, 2, 3, 4], [4, 3, 3.5, 1], increasing=False)
    assert kx == [1, 2, 3, 4] and ky == pytest.approx([4, 3.25, 3.25, 1])
    # equal x values are one point of weight 2; a flat run keeps only its two ends
    kx, ky = isotonic_fit([0, 0, 1, 2, 3], [2, 4, 1, 1, 1], increasing=True)
    assert kx == [0, 3] and ky == pytest.approx([1.8, 1.8])
    easy = [-3 + 0.5 * i for i in range(12)]
    lex = [1400 - 80 * i + (150 if i % 3 == 0 else 0) for i in range(12)]
    cal = fit_grade_calibration(easy, lex, fit_on="test")
    assert list(cal.lexile) == sorted(cal.lexile, reverse=True)
    assert cal.lexile[2] == cal.lexile[3] == 1275  # 1240 then 1310: pooled
    assert cal.lexile_of(-10) == 1550 and cal.lexile_of(10) == 520  # flat beyond the data
    assert cal.lexile_of(-1.25) == 1180  # halfway from -1.5 (1275) to -1.0 (1080)
    assert GradeCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_a_calibration_needs_enough_books_that_bt_orders():
    from catalog import ConfigError
    from corpus.score import fit_grade_calibration

    with pytest.raises(ConfigError, match="at least 10 training books"):
        fit_grade_calibration([0.1, 0.2], [900, 800])
    with pytest.raises(ConfigError, match="does not order"):  # easier text, higher Lexile
        fit_grade_calibration([i / 10 for i in range(12)], [500 + 50 * i for i in range(12)])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The bundled CLEAR passages (a bt_easiness and a lexile score each) with datasets
    ``bt`` (target bt_easiness) and ``lex`` (target lexile), and a second lakehouse with the
    passages' bt_easiness only (dataset ``bt``); an untrained seeded model is the checkpoint
    of a finished run per dataset: ``r-bt``, ``r-lex`` and ``r-nolex``."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from catalog import Lineage
    from ingest.passages import run_import
    from ingest.sample import SAMPLE_CONFIG, sample_passages
    from tests.helpers import small_config
    from train.model import ModelConfig, build_model, save_model
    from train.shards import build_shards

    tmp = tmp_path_factory.mktemp("grade")
    folder = save_model(build_model(ModelConfig(backbone="all-minilm-l6-v2", lora_r=2),
                                    seed=0), tmp / "model")

    def run(lh, run_id, dataset):
        now = datetime.now(UTC)
        lh.append("runs", [{"run_id": run_id, "dataset": dataset,
                            "shards_version": lh.version("shards"), "metrics": "{}",
                            "config": json.dumps({"seq_len": 64}), "status": "finished",
                            "checkpoint_uri": str(folder), "started_at": now,
                            "finished_at": now}], lineage=Lineage(operation="test-train"))

    lh = Lakehouse(str(tmp / "lakehouse"))
    run_import(lh, sample_passages(), config=SAMPLE_CONFIG)
    build_shards(lh, config=small_config("bt", val_frac=0.2, variants=("edited",)))
    run(lh, "r-bt", "bt")
    build_shards(lh, config=small_config("lex", val_frac=0.2, target="lexile"))
    run(lh, "r-lex", "lex")
    nolex = Lakehouse(str(tmp / "nolex"))
    run_import(nolex, sample_passages(),
               config=replace(SAMPLE_CONFIG, scores={"bt_easiness": "BT_easiness"}))
    build_shards(nolex, config=small_config("bt", val_frac=0.2))
    run(nolex, "r-nolex", "bt")
    return lh, nolex, folder


def test_grade_gives_a_band_through_a_calibration_kept_with_the_run(graded, tmp_path):
    from catalog.rules import current_values
    from corpus.score import GRADE_BANDS, GradeCalibration, grade_band
    from train.shards import books_by_split

    lh, _, _ = graded
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat. It was a sunny day. We ran to the park.\n")
    args = ["--root", lh.root, "score", str(good), "clear-400", "--run", "r-bt", "--grade",
            "--format", "json"]
    runs_before = lh.version("runs")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert list(rows[0]) == ["name", "source", "metric", "run", "n_chars", "prediction",
                             "lexile", "grade", "n_windows", "window_sd", "error"]
    # fit once, on the run's training books, and kept in its runs row (one commit)
    assert lh.version("runs") == runs_before + 1
    commit = lh.history("runs", limit=1)[0]
    assert commit.operation == "calibrate" and commit.config["run_id"] == "r-bt"
    row = next(r for r in lh.read("runs").to_pylist() if r["run_id"] == "r-bt")
    cal = GradeCalibration.from_dict(json.loads(row["metrics"])["grade_calibration"])
    manifest = lh.read("shards", version=row["shards_version"])
    train = books_by_split(manifest, dataset="bt")["train"]
    scores = lh.read("scores")
    both = train & set(current_values(scores, "bt_easiness")) & set(
        current_values(scores, "lexile"))
    assert cal.n_books == len(both) >= 40
    labels = {"K-1", "above CCR", *(b[0] for b in GRADE_BANDS)}
    for r in rows:
        assert (r["metric"], r["run"]) == ("bt_easiness", "r-bt")
        assert r["lexile"] == cal.lexile_of(r["prediction"])
        assert r["grade"] == grade_band(r["lexile"]) and r["grade"] in labels
    # the next call reads the kept calibration: same rows, no new commit
    res = CliRunner().invoke(cli, args)
    assert [json.loads(line) for line in res.stdout.splitlines()] == rows
    assert lh.version("runs") == runs_before + 1
    res = CliRunner().invoke(cli, [*args[:-2], "--format", "table"])
    assert res.exit_code == 0 and "grade" in res.stdout and rows[0]["grade"] in res.stdout


def test_grade_is_refused_without_a_calibration(graded, tmp_path):
    lh, nolex, folder = graded
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat.\n")

    def refused(root, *args):
        res = CliRunner().invoke(cli, ["--root", root, "score", str(good), "--grade", *args])
        assert res.exit_code == 2 and res.output.startswith("error:"), res.output
        assert "Traceback" not in res.output
        return " ".join(res.output.split())

    msg = refused(nolex.root, "--run", "r-nolex")  # no lexile scores at all
    assert "at least 10 training books with both a bt_easiness and a lexile score" in msg
    assert "found 0" in msg
    assert "run r-lex predicts lexile" in refused(lh.root, "--run", "r-lex")
    assert "needs a training run" in refused(lh.root, "--model", str(folder))
    assert nolex.history("runs", limit=1)[0].operation == "test-train"  # nothing was kept
