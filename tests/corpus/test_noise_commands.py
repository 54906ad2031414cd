"""The noise stage's commands as a user runs them: `corpus align` and `corpus mine` (a real
subprocess), `corpus noise` and `corpus noise --evaluate` (in-process). The stage's own logic
is tested in tests/noise/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from rapidfuzz.distance import Levenshtein

from catalog import Lakehouse
from corpus.cli import cli
from noise.mine import MineConfig, run_mine
from tests.helpers import copy_lakehouse

CORPUS = [sys.executable, "-m", "corpus.cli"]


def run(root, *args, ok=True):
    env = {**os.environ, "CORPUS_ROOT": str(root)}
    p = subprocess.run([*CORPUS, *args], env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_align_two_files(tmp_path):
    ref = "The <quick> brown fox & the lazy dog.\n\nA second paragraph, modern and fine."
    hyp = "Tbe <quick> brown fox & thc lazy\ndog,\n\nA second paragraph, modem and fine."
    (tmp_path / "edited.txt").write_text(ref, encoding="utf-8")
    # the raw file in a legacy encoding, with CRLF line ends: read as text, ends normalised
    (tmp_path / "ocr.txt").write_bytes(hyp.replace("\n", "\r\n").encode("cp1252"))
    html = tmp_path / "diff.html"
    p = run(tmp_path / "lh", "align", str(tmp_path / "edited.txt"), str(tmp_path / "ocr.txt"),
            "--format", "json", "--html", str(html))
    out = json.loads(p.stdout)
    assert out["distance"] == Levenshtein.distance(ref, hyp)
    assert out["cer"] == pytest.approx(Levenshtein.distance(ref, hyp) / len(ref))
    assert out["wer"] == pytest.approx(Levenshtein.distance(ref.split(), hyp.split())
                                       / len(ref.split()))
    assert sum(out["ops"].values()) == out["distance"]
    assert {"reference": "rn", "hypothesis": "m", "count": 1} in out["top_edits"]
    page = html.read_text(encoding="utf-8")
    assert "&lt;quick&gt;" in page and "<quick>" not in page and "&amp;" in page
    table = run(tmp_path / "lh", "align", str(tmp_path / "edited.txt"),
                str(tmp_path / "ocr.txt")).stdout
    assert "CER" in table and "WER" in table and "replace" in table
    # layout and case not counted: line breaks vs spaces and "Tbe"/"The" differ no more
    flat = json.loads(run(tmp_path / "lh", "align", str(tmp_path / "edited.txt"),
                          str(tmp_path / "ocr.txt"), "--format", "json", "--normalize",
                          "whitespace", "--normalize", "case").stdout)
    r2, h2 = " ".join(ref.split()).casefold(), " ".join(hyp.split()).casefold()
    assert flat["normalize"] == ["whitespace", "case"]
    assert flat["distance"] == Levenshtein.distance(r2, h2) < out["distance"]


def test_align_explains_bad_arguments(tmp_path):
    p = run(tmp_path / "lh", "align", "no-such-file.txt", "x.txt", ok=False)
    assert p.returncode == 2 and "error:" in p.stderr and "BOOK_ID:VARIANT" in p.stderr
    p = run(tmp_path / "lh", "align", "9780000000000:edited", "9780000000000:ocr", ok=False)
    assert p.returncode == 2 and "No texts yet" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_align_book_variants_and_mine(small_pairs):
    root = small_pairs.root
    book = next(t["book_id"] for t in small_pairs.read("texts").to_pylist()
                if t["variant"] == "edited" and t["book_id"].startswith("9781038"))
    texts = {t["variant"]: t["text"] for t in small_pairs.read("texts").to_pylist()
             if t["book_id"] == book}
    out = json.loads(run(root, "align", f"{book}:edited", f"{book}:ocr", "--format",
                         "json").stdout)
    assert out["distance"] == Levenshtein.distance(texts["edited"], texts["ocr"])
    p = run(root, "align", f"{book}:edited", f"{book}:noisy", ok=False)
    assert p.returncode == 2 and "has no 'noisy' text (variants: edited, ocr" in p.stderr

    p = run(root, "mine")
    assert "4 book(s) mined against ocr" in p.stdout and "artifacts@" in p.stdout
    for kind in ("running_header", "front_matter", "hyphenation", "heading"):
        assert kind in p.stdout
    js = json.loads(run(root, "mine", "--format", "json").stdout)
    assert js["books"] == 4 and js["kinds"]["front_matter"] == 4 and js["top"]
    assert set(js["inputs"]) == {"texts", "books"}
    p = run(root, "mine", "--variant", "noisy/none/0", ok=False)
    assert p.returncode == 2 and "No book has both" in p.stderr


# ---- corpus noise ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mined(small_pairs, tmp_path_factory) -> Lakehouse:
    """A copy of the OCR'd sample share (so other tests' lakehouse stays untouched), mined."""
    lh = copy_lakehouse(small_pairs, tmp_path_factory.mktemp("noise_mined") / "lakehouse")
    run_mine(lh, config=MineConfig())
    return lh


def test_cli_noise_and_errors(mined, tmp_path):
    book = sorted(t["book_id"] for t in mined.read("texts").to_pylist()
                  if t["variant"] == "edited")[0]
    res = CliRunner().invoke(cli, ["--root", mined.root, "noise", "--seed", "9", "--books",
                                   book, "--workers", "1", "--cer-scale", "2"], obj={})
    assert res.exit_code == 0, res.output
    assert f"noisy/mined-v{mined.version('artifacts')}/9" in res.output
    res = CliRunner().invoke(cli, ["--root", mined.root, "noise", "--books", "nope"], obj={})
    assert res.exit_code == 2 and "No edited text" in res.output
    empty = tmp_path / "empty"
    res = CliRunner().invoke(cli, ["--root", str(empty), "noise"], obj={})
    assert res.exit_code == 2 and "corpus mine" in res.output


def test_evaluate_command_on_the_bundled_sample(small_pairs):
    """Four scanned books: three mined, one held out; every recipe scored (json)."""
    res = CliRunner().invoke(cli, ["--root", small_pairs.root, "noise", "--evaluate",
                                   "--format", "json", "--workers", "1"], obj={})
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # stderr has the summary line of each stage's work
    assert len(out["heldout_books"]) == 1 and len(out["mining_books"]) == 3
    rows = {s["recipe"]: s for s in out["scores"]}
    assert set(rows) == {"mined", "uniform", "nlpaug"}
    assert rows["mined"]["books"] == 1 and 0 <= rows["mined"]["edit_kind_jsd"] <= 1
    assert set(out["inputs"]) == {"texts", "books"}
