"""Ensembles as a user runs them: `corpus eval RUN RUN` and `corpus score --run A --run B`
(or `--model A --model B`) average untrained, seeded models that cut texts into windows of
different lengths; runs that cannot be averaged are refused with one `error:` line."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from corpus.cli import cli
from tests.helpers import ensemble_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs ``r1`` and ``r2`` of dataset ``clear`` and the runs that cannot join them
    (:func:`tests.helpers.ensemble_runs`)."""
    return ensemble_runs(tmp_path_factory.mktemp("ensemble"))


def _json_rows(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _refused(res) -> str:
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


def test_eval_of_two_runs_reports_each_run_and_their_mean(runs, tmp_path):
    from train.evaluate import ensemble_id

    lh, _ = runs
    eid = ensemble_id(["r1", "r2"])
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "r2", "--run", "r1",
                                   "--out", str(tmp_path / "rep")], terminal_width=200)
    assert res.exit_code == 0, res.output
    # the table names the ensemble and shows a row per run next to the best formula
    assert f"ensemble {eid} of r2, r1" in res.output
    assert all(x in res.output for x in ("ensemble", "member r1", "member r2",
                                         "(best formula)"))
    out = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert out["run_id"] == eid and [m["run_id"] for m in out["members"]] == ["r2", "r1"]
    assert [m["seq_len"] for m in out["members"]] == [32, 64]
    # every member's rows under its run id, the ensemble's under its id, in one commit
    preds = [p for p in lh.read("predictions").to_pylist() if p["split"] == "validation"]
    by = {run: {p["book_id"]: p for p in preds if p["run_id"] == run}
          for run in ("r1", "r2", eid)}
    assert set(by[eid]) == set(by["r1"]) == set(by["r2"]) and len(by[eid]) >= 10
    for book, p in by[eid].items():
        assert p["prediction"] == pytest.approx(
            (by["r1"][book]["prediction"] + by["r2"][book]["prediction"]) / 2, abs=1e-12)
        assert p["truth"] == by["r1"][book]["truth"] and p["n_windows"] is None
    # the windows differ (64 and 32 tokens): each member cut the texts its own way
    assert sum(p["n_windows"] for p in by["r2"].values()) > sum(
        p["n_windows"] for p in by["r1"].values())
    edited = out["variants"]["edited"]

    def rmse(run):
        return math.sqrt(sum((p["prediction"] - p["truth"]) ** 2 for p in by[run].values())
                         / len(by[run]))

    assert edited["model"]["rmse"] == pytest.approx(rmse(eid), abs=1e-12)
    assert edited["members"]["r1"]["rmse"] == pytest.approx(rmse("r1"), abs=1e-12)
    assert edited["members"]["r2"]["rmse"] == pytest.approx(rmse("r2"), abs=1e-12)
    assert edited["best_formula"] in edited
    commit = lh.history("predictions", limit=1)[0]
    assert commit.operation == "eval" and commit.config["run_id"] == eid
    assert commit.config["members"] == ["r2", "r1"]
    md = (tmp_path / "rep" / "report.md").read_text()
    for label in ("ensemble", "member r1", "member r2", f"{edited['best_formula']} "):
        assert f"| edited | {label}" in md
    # the members' cards are left alone (each keeps what `corpus eval RUN` wrote, here none)
    assert not lh.store.exists("runs/r1/final/README.md")


def test_eval_refuses_runs_that_do_not_share_their_held_out_books(runs):
    lh, _ = runs

    def refused(*run_ids):
        return _refused(CliRunner().invoke(cli, ["--root", lh.root, "eval", *run_ids]))

    assert "runs r1 and r-other cannot be evaluated together: they were trained on " \
           "different shards datasets (clear@" in refused("r1", "r-other")
    msg = refused("r1", "r2", "r-split")
    assert "runs r1 and r-split cannot be evaluated together: they hold out different " \
           "books" in msg and "--val-frac and --seed" in msg
    assert "run r1 is given twice" in refused("r1", "--run", "r1")
    assert "no run 'nope'" in refused("r1", "nope")


def test_eval_refuses_runs_judged_by_other_truth(runs, tmp_path):
    """The same held-out books, but shards built after a held-out book was re-scored."""
    from datetime import UTC, datetime

    from catalog import Lineage
    from tests.helpers import copy_lakehouse, saved_run, small_config
    from train.shards import books_by_split, build_shards

    lh, folders = runs
    lh = copy_lakehouse(lh, tmp_path / "lakehouse")  # the module's lakehouse stays as it is
    r1 = next(r for r in lh.read("runs").to_pylist() if r["run_id"] == "r1")
    held = sorted(books_by_split(lh.read("shards", version=r1["shards_version"]),
                                 dataset="clear")["validation"])
    lh.append("scores", [{"book_id": held[0], "metric": "bt_easiness", "value": 9.0,
                          "scored_at": datetime.now(UTC), "source_file": "rescored.csv",
                          "source_row": 1}],
              lineage=Lineage(operation="test-rescore"))
    build_shards(lh, config=small_config(val_frac=0.3))  # the same split, the new score
    saved_run(lh, "r-rescored", folders["r1"])
    res = CliRunner().invoke(cli, ["--root", lh.root, "eval", "r1", "r-rescored"])
    msg = _refused(res)
    assert "runs r1 and r-rescored cannot be evaluated together: their shards were built " \
           "from scores@" in msg
    assert f"give 1 held-out book(s) a different bt_easiness (e.g. {held[0]})" in msg


def test_score_with_two_runs_is_the_mean_of_each_alone(runs, tmp_path):
    from train.evaluate import ensemble_id

    lh, folders = runs
    eid = ensemble_id(["r1", "r2"])
    book = sorted(lh.read("texts", columns=["book_id"]).column("book_id").to_pylist())[0]
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat. It was a sunny day. " * 20)
    args = ["--root", lh.root, "score", str(good), book, "9999999999999"]

    def score(*more):
        res = CliRunner().invoke(cli, [*args, *more, "--format", "json"])
        assert res.exit_code == 1, res.output  # the unknown book is an error row
        return _json_rows(res)

    both, alone = score("--run", "r1", "--run", "r2"), {r: score("--run", r) for r in folders}
    for i in range(2):
        mine = {r: alone[r][i]["prediction"] for r in folders}
        assert both[i]["members"] == pytest.approx(mine, abs=1e-6)
        assert both[i]["prediction"] == pytest.approx((mine["r1"] + mine["r2"]) / 2, abs=1e-6)
        assert (both[i]["run"], both[i]["metric"]) == (eid, "bt_easiness")
        assert both[i]["n_windows"] is None
    assert alone["r2"][0]["n_windows"] > alone["r1"][0]["n_windows"]  # 32 vs 64 tokens
    assert both[2]["error"] and both[2]["members"] is None
    # --members: a column per member in csv; --save: the ensemble's rows under its id
    res = CliRunner().invoke(cli, [*args[:-1], "--run", "r1", "--run", "r2", "--members",
                                   "--save", "--format", "csv"])
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(table[0])[5:8] == ["prediction", "prediction:r1", "prediction:r2"]
    assert float(table[1]["prediction:r2"]) == pytest.approx(alone["r2"][1]["prediction"],
                                                             abs=1e-6)
    saved = [p for p in lh.read("predictions").to_pylist() if p["split"] == "scored"]
    assert [(p["run_id"], p["book_id"]) for p in saved] == [(eid, book)]
    assert saved[0]["prediction"] == pytest.approx(both[1]["prediction"], abs=1e-6)
    commit = lh.history("predictions", limit=1)[0]
    assert commit.config == {"run_id": eid, "members": ["r1", "r2"]}
    assert f"1 prediction(s) saved under ensemble {eid}" in res.stderr
    # model folders average the same way (here at one window length for both)
    res = CliRunner().invoke(cli, [*args[:-2], "--model", str(folders["r1"]), "--model",
                                   str(folders["r2"]), "--seq-len", "64", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = _json_rows(res)[0]
    assert row["members"][str(folders["r1"])] == pytest.approx(alone["r1"][0]["prediction"],
                                                               abs=1e-6)
    assert row["prediction"] == pytest.approx(sum(row["members"].values()) / 2, abs=1e-12)
    assert (row["metric"], row["run"]) == (None, None)  # the folders do not say
    assert "none of the models says what it predicts" in res.stderr


def test_score_refuses_ensembles_it_cannot_average(runs, tmp_path):
    lh, folders = runs
    good = tmp_path / "good.txt"
    good.write_text("The cat sat on the mat.\n")

    def refused(*args):
        return _refused(CliRunner().invoke(cli, ["--root", lh.root, "score", str(good),
                                                 *args]))

    assert "r1 predicts bt_easiness but r-lex predicts lexile" in refused(
        "--run", "r1", "--run", "r-lex")
    assert "--grade calibrates one run's predictions" in refused(
        "--run", "r1", "--run", "r2", "--grade")
    assert "--run r1 is given twice" in refused("--run", "r1", "--run", "r1")
    assert "either --model or --run" in refused("--run", "r1", "--model", str(folders["r2"]))
    marked = tmp_path / "marked"
    marked.mkdir()
    for f in folders["r2"].iterdir():
        (marked / f.name).write_bytes(f.read_bytes())
    (marked / "meta.json").write_text(json.dumps({"target": "lexile"}))
    msg = refused("--model", str(folders["r1"]), "--model", str(marked))
    assert f"{folders['r1']} does not say what it predicts" in msg
    assert f"{marked} predicts lexile" in msg
