"""Noise evaluation: metrics, the held-out split, and mined noise against real OCR (the
`corpus noise --evaluate` command: tests/corpus/test_noise_commands.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from noise.evaluate import char_class, holdout_books, jensen_shannon, text_stats, wasserstein


def test_jensen_shannon_bounds_and_symmetry():
    p = {"a": 3, "b": 1}
    assert jensen_shannon(p, p) == 0.0
    assert math.isclose(jensen_shannon({"a": 1}, {"b": 1}), 1.0)
    q = {"a": 1, "b": 1, "c": 2}
    assert 0 < jensen_shannon(p, q) < 1
    assert math.isclose(jensen_shannon(p, q), jensen_shannon(q, p))


def test_wasserstein_of_shifted_samples():
    a = [0.01, 0.02, 0.03]
    assert math.isclose(wasserstein(a, [x + 0.05 for x in a]), 0.05, rel_tol=1e-9)
    assert wasserstein(a, a) == 0.0
    # unequal sizes: the distance between the empirical distributions
    assert math.isclose(wasserstein([0.0], [0.0, 1.0]), 0.5)


def test_split_is_stable_and_disjoint():
    books = [f"97800000{i:05d}" for i in range(50)]
    mine, held = holdout_books(books, holdout=0.3, seed=0)
    assert len(held) == 15 and not set(mine) & set(held) and set(mine) | set(held) == set(books)
    assert holdout_books(reversed(books), holdout=0.3, seed=0) == (mine, held)
    assert holdout_books(books, holdout=0.3, seed=1) != (mine, held)


def test_text_stats_counts_kinds_and_confusions():
    ref = "The cat sat on the mat. " * 20
    hyp = ref.replace("cat", "cot").replace(" on ", " on\n", 3)
    s = text_stats(ref, hyp)
    assert s.edit_kinds["replace letter>letter"] == 20
    assert s.edit_kinds["replace space>newline"] == 3
    assert s.confusions == {"a>o": 20}
    assert math.isclose(s.cer, 23 / len(ref))
    assert [char_class(c) for c in ("", "\n", " ", "7", "é", "—")] == \
        ["none", "newline", "space", "digit", "letter", "punct"]
    assert np.isfinite(s.cer)


@pytest.fixture(scope="module")
def scanned_pairs(dev_share, tmp_path_factory):
    """The development share ingested and every scan of an edited book OCR'd: 50 real
    edited/OCR pairs, 121 pages (about 1.5 min on 2 workers). Acceptance tests only."""
    from catalog import Lakehouse
    from ingest.driver import run_ingest
    from ingest.ocr import OcrConfig, run_ocr

    lh = Lakehouse(str(tmp_path_factory.mktemp("noise_eval") / "lakehouse"))
    run_ingest(lh, dev_share, workers=2)
    edited = {t["book_id"] for t in lh.read("texts", columns=["book_id", "variant"]).to_pylist()
              if t["variant"] == "edited"}
    scans = [s["scan_id"] for s in lh.read("scans").to_pylist() if s["book_id"] in edited]
    run_ocr(lh, config=OcrConfig(workers=2), scan_ids=scans)
    return lh


@pytest.mark.slow
@pytest.mark.acceptance
def test_mined_noise_is_closer_to_real_ocr_than_the_baselines(scanned_pairs, tmp_path_factory):
    """Held-out books: the mined recipe beats uniform noise and nlpaug's OCR augmenter (a
    dev dependency; NLPAUG_PYTHON may name another interpreter with it) on all three
    distances."""
    import json
    import os
    import sys

    from noise.evaluate import NoiseEvalConfig, format_report, run_evaluate

    python = os.environ.get("NLPAUG_PYTHON") or sys.executable
    r = run_evaluate(scanned_pairs, config=NoiseEvalConfig(workers=2, nlpaug_python=python))
    report = format_report(r)
    print("\n" + report)
    (tmp_path_factory.getbasetemp() / "noise_eval.json").write_text(
        json.dumps(r.to_dict(), indent=1))
    assert len(r.heldout_books) == 15 and len(r.mining_books) == 35
    assert not set(r.heldout_books) & set(r.mining_books)
    mined = r.score("mined")
    rivals = [r.score("uniform"), r.score("nlpaug")]
    assert mined.books == 15
    for other in rivals:
        assert other.books == 15
        assert mined.cer_distance < other.cer_distance, report
        assert mined.edit_kind_jsd < other.edit_kind_jsd, report
        assert mined.confusion_jsd < other.confusion_jsd, report
    # and close in absolute terms: CER distributions within 2 CER points, edit kinds alike
    assert mined.cer_distance < 0.02 and mined.edit_kind_jsd < 0.1, report
